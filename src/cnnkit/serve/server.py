"""Running a served model: its sockets bound first (a port in use is one line), uvicorn with cnnkit's limits and
HTTP parser, until SIGINT/SIGTERM (drain, stop accepting, finish in-flight requests)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.errors import ModelFileError
from cnnkit.runtime import Classifier
from cnnkit.serve import listen
from cnnkit.serve.app import create_app
from cnnkit.serve.config import ServeConfig
from cnnkit.serve.health import HealthProcess
from cnnkit.serve.http import SLICE, Refused, Shedding, bounded_h11, bounded_httptools
from cnnkit.serve.reading import log
from cnnkit.serve.shutdown import serve_until_signalled


def _protocol(cfg: ServeConfig, shedding: Shedding, refused: Refused) -> type[Any]:
    """uvicorn's HTTP protocol class for `cfg.http`, with cnnkit's bounds on the request head."""
    if cfg.http == "h11":
        return bounded_h11(cfg.max_header_bytes, cfg.head_timeout_s, refused)
    return bounded_httptools(cfg.max_header_bytes, shedding, cfg.head_timeout_s, refused)


def run(
    clf: Classifier,
    host: str = "127.0.0.1",
    port: int = 8000,
    cfg: ServeConfig = ServeConfig(),
    log_level: str = "info",
) -> None:
    """Serve `clf` until SIGINT/SIGTERM (drain, stop accepting, finish in-flight requests), then return."""
    import uvicorn

    if not np.isfinite(clf.logits(np.zeros((1, *clf.input_spec.image_shape), np.uint8))).all():
        raise ModelFileError(f"{clf.source}: the model's logits for a blank image are not finite; not serving it")
    sock = listen.bind(host, port)  # a port in use is one line, before anything starts
    if cfg.grpc_port is not None:
        listen.check_free(cfg.grpc_host, cfg.grpc_port, "gRPC")
    health_sock = listen.bind(cfg.health_host, cfg.health_port, "health") if cfg.health_port is not None else None
    app = create_app(clf, cfg)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,  # nothing reads the client's address: no X-Forwarded-* rewriting on every request
        timeout_graceful_shutdown=30,
        limit_concurrency=cfg.limit_concurrency,  # beyond it uvicorn answers 503 at once
        timeout_keep_alive=int(max(1, cfg.timeout_keep_alive_s)),
        http=_protocol(cfg, app.state.inflight, app.state.metrics.refused),
        h11_max_incomplete_event_size=cfg.max_header_bytes + 4 * SLICE,  # h11's own 400: a backstop past cnnkit's 431
    )
    shown = f"[{host}]" if ":" in host else host
    # uvicorn says where it listens only for the sockets it binds itself: the same line for the one bound here
    log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, sock.getsockname()[1])
    health = None
    if health_sock is not None:
        health = HealthProcess(health_sock, app.state.serving, clf.providers)
        app.state.serving.heartbeat = health.beating
        log.info("cnnkit serve: health and readiness on http://%s:%d", cfg.health_host, health.port)
    try:
        serve_until_signalled(config, app.state.serving, cfg.drain_s, [sock])
    finally:
        if health is not None:
            health.stop()
