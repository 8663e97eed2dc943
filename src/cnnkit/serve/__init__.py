"""The HTTP service on cnnkit.runtime (Starlette + uvicorn, the `serve` extra). Never imports torch."""

from cnnkit.serve.app import ServeConfig, create_app, run

__all__ = ["ServeConfig", "create_app", "run"]
