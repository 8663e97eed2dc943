"""The HTTP service (`serve` extra) and the Triton engine (`triton` extra), both on the torch-free runtime.

`ServeConfig`, `create_app` and `run` load the Starlette app on first use, so the Triton engine does not need
the `serve` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeConfig", "create_app", "run"]


def __getattr__(name: str) -> Any:
    if name == "ServeConfig":
        from cnnkit.serve import config

        return config.ServeConfig
    if name == "run":
        from cnnkit.serve import server

        return server.run
    if name in __all__:
        from cnnkit.serve import app

        return getattr(app, name)
    raise AttributeError(name)
