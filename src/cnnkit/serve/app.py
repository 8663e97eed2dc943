"""`cnnkit serve`: an HTTP service on cnnkit.runtime (Starlette + uvicorn). Never imports torch."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cnnkit.errors import CnnkitError, ModelFileError
from cnnkit.runtime import Classifier, predictions, softmax
from cnnkit.runtime import images as imgs
from cnnkit.serve import v2
from cnnkit.serve.batching import Batcher, BatchFailed

log = logging.getLogger("uvicorn.error").getChild("cnnkit")  # printed where uvicorn prints


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 64
    max_delay_ms: float = 2.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_images: int = 256  # per request
    max_image_pixels: int = 2048 * 2048  # per decoded image file, before it is resized
    max_request_pixels: int = 4096 * 4096  # all image files of one request together
    max_inflight_bytes: int = 64 * 1024 * 1024  # request bodies held in memory at once; beyond: 503
    decode_threads: int = 2
    request_timeout_s: float = 10.0  # reading and decoding one request; beyond: 503
    limit_concurrency: int = 512  # open connections + tasks, uvicorn's limit (503 beyond)
    timeout_keep_alive_s: float = 5.0
    drain_s: float = 1.0  # after SIGTERM: answer, but close connections and fail readyz, before shutting down
    top_k: int = 3
    model_name: str | None = None  # in the KServe V2 paths; default: the model's serving name


class ClientError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cnnkit_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "cnnkit_request_latency_seconds",
            "Predict request latency",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.batch_size = Histogram(
            "cnnkit_batch_size", "Images per model call", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
        )
        self.inference = Histogram(
            "cnnkit_inference_seconds",
            "Model call duration",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
        )
        self.queue_depth = Gauge("cnnkit_queue_depth_images", "Images waiting for the model", registry=r)
        self.images = Counter("cnnkit_images_total", "Images classified", registry=r)


class InFlight:
    """Request-body bytes held in memory by all requests together; beyond `limit`, new bodies get a 503."""

    def __init__(self, limit: int):
        self.limit = limit
        self.bytes = 0


async def read_body(request: Request, limit: int, inflight: InFlight | None = None) -> bytes:
    """The request body, at most `limit` bytes whatever the framing (Content-Length or chunked): the limit is
    enforced while it streams in, so an oversized upload is refused without being stored."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"body of {int(declared)} bytes exceeds the {limit}-byte limit")
    chunks, size = [], 0
    try:
        async for chunk in _stream(request):
            size += len(chunk)
            if size > limit:
                raise ClientError(413, f"body exceeds the {limit}-byte limit")
            if inflight is not None:
                if inflight.bytes + len(chunk) > inflight.limit:
                    raise ClientError(503, "server busy: too many request bytes in flight; retry")
                inflight.bytes += len(chunk)
            chunks.append(chunk)
    finally:
        if inflight is not None:
            inflight.bytes -= sum(len(c) for c in chunks)
    return b"".join(chunks)


async def _stream(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks; a client that goes away mid-body is one log line and a 499 (nobody reads the answer)."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s disconnected before sending its whole request body", client)
        raise ClientError(499, "client disconnected") from None


def _json_image(item: Any, clf: Classifier, invert: bool | None, index: int, budget: list[int]) -> np.ndarray:
    """A JSON image: base64 of an image file (a string, or {"b64": ...}), or nested pixel lists."""
    if isinstance(item, dict):
        item = item.get("b64", item.get("pixels"))
    if isinstance(item, str):
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError(400, f"images[{index}]: not valid base64") from None
        return _decode(data, clf, invert, f"images[{index}]", budget)
    if isinstance(item, list):
        try:
            arr = np.asarray(item, dtype=np.float64) if _has_float(item) else np.asarray(item)
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise ClientError(400, f"images[{index}]: pixel rows are ragged or not numbers") from None
        batch = clf.as_batch(arr)
        if len(batch) != 1:
            raise ClientError(400, f"images[{index}]: holds {len(batch)} images; send each as its own item")
        pixels: np.ndarray = batch[0]
        return pixels
    raise ClientError(400, f"images[{index}]: expected a base64 string or a list of pixel rows")


def _decode(data: bytes, clf: Classifier, invert: bool | None, name: str, budget: list[int]) -> np.ndarray:
    """Decode one image file within the per-image cap and what is left of the request's pixel budget (budget[0],
    updated)."""
    decoded = imgs.decode(data, clf.info.image_size, invert, name=name, max_pixels=min(budget))
    budget[0] -= decoded.original_size[0] * decoded.original_size[1]
    return decoded.pixels


def _has_float(rows: Any) -> bool:
    flat = rows
    while isinstance(flat, list) and flat and isinstance(flat[0], list):
        flat = flat[0]
    return isinstance(flat, list) and any(isinstance(v, float) for v in flat)


def _replay(body: bytes) -> Any:
    """An ASGI receive that hands over an already-read body (to parse multipart from bytes held in memory)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def parse_request(
    request: Request, clf: Classifier, cfg: ServeConfig, inflight: InFlight | None = None, pool: Any = None
) -> tuple[np.ndarray, int]:
    """Request -> (uint8 batch [N,C,H,W], top_k). Raises ClientError with the HTTP status to answer.

    The body is read first (bounded); decoding, the CPU-heavy part, runs in `pool` (a bounded thread pool), so
    the event loop keeps answering other requests, /healthz included, meanwhile.
    """
    loop = asyncio.get_running_loop()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    q = request.query_params
    top_k: Any = q.get("top_k", str(cfg.top_k))
    invert_text = q.get("invert", "auto").lower()
    if invert_text not in INVERT:
        raise ClientError(400, f"invert must be one of {', '.join(INVERT)}, got {invert_text[:20]!r}")
    invert = INVERT[invert_text]
    if ctype not in ("multipart/form-data", "application/json", "application/octet-stream") and not ctype.startswith(
        "image/"
    ):
        raise ClientError(
            415,
            f"unsupported content type {ctype[:60] or '(none)'!r}; send an image (image/png, "
            "image/jpeg), multipart/form-data, or application/json",
        )
    body = await read_body(request, cfg.max_body_bytes, inflight)
    budget = [cfg.max_request_pixels, cfg.max_image_pixels]  # [left for this request, per image]

    def decode_all(items: list[tuple[str, bytes]]) -> list[np.ndarray]:
        return [_decode(data, clf, invert, name, budget) for name, data in items]

    if ctype == "multipart/form-data":
        replay = Request(request.scope, receive=_replay(body))
        try:
            form = await replay.form(max_files=cfg.max_images, max_fields=16, max_part_size=cfg.max_body_bytes)
        except HTTPException as exc:  # the multipart parser's complaint (no boundary, too many files, ...)
            status = exc.status_code if 400 <= exc.status_code < 500 else 400
            raise ClientError(status, f"multipart body: {exc.detail}") from None
        try:
            files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                raise ClientError(400, "multipart body has no file parts")
            items = [(f.filename or k, await f.read()) for k, f in files]
        finally:
            await form.close()
        pixels = await loop.run_in_executor(pool, decode_all, items)
    elif ctype == "application/json":

        def parse_json() -> tuple[list[np.ndarray], Any]:
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError) as exc:
                raise ClientError(400, f"invalid JSON: {str(exc)[:120]}") from None
            if not isinstance(doc, dict) or not ("images" in doc or "image" in doc):
                raise ClientError(400, 'JSON body must be an object with "images": [...] or "image": ...')
            items = doc["images"] if "images" in doc else [doc["image"]]
            if not isinstance(items, list) or not items:
                raise ClientError(400, '"images" must be a non-empty list')
            if len(items) > cfg.max_images:
                raise ClientError(413, f"{len(items)} images in one request; the limit is {cfg.max_images}")
            return [_json_image(it, clf, invert, i, budget) for i, it in enumerate(items)], doc.get("top_k", top_k)

        pixels, top_k = await loop.run_in_executor(pool, parse_json)
    else:
        pixels = await loop.run_in_executor(pool, decode_all, [("body", body)])
    if len(pixels) > cfg.max_images:
        raise ClientError(413, f"{len(pixels)} images in one request; the limit is {cfg.max_images}")
    k = _top_k(top_k, clf.info.num_classes)
    return clf.as_batch(np.stack([p.reshape(clf.input_spec.image_shape) for p in pixels])), k


INVERT = {"auto": None, "true": True, "1": True, "false": False, "0": False}


def _top_k(value: Any, num_classes: int) -> int:
    """top_k as given (query string or JSON): an integer 1..num_classes, nothing coerced."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 6:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= num_classes:
        shown = json.dumps(value)[:30] if not isinstance(value, str) else repr(value[:30])
        raise ClientError(400, f"top_k must be an integer 1..{num_classes}, got {shown}")
    return value


def create_app(clf: Classifier, cfg: ServeConfig = ServeConfig()) -> Starlette:
    metrics = Metrics()
    state = {"ready": False, "draining": False}

    def on_batch(n: int, seconds: float) -> None:
        metrics.batch_size.observe(n)
        metrics.inference.observe(seconds)
        metrics.images.inc(n)

    batcher = Batcher(clf.logits, cfg.max_batch, cfg.max_delay_ms, on_batch)
    inflight = InFlight(cfg.max_inflight_bytes)
    decode_pool = ThreadPoolExecutor(max_workers=cfg.decode_threads, thread_name_prefix="cnnkit-decode")

    def done(endpoint: str, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
        metrics.requests.labels(endpoint, str(status)).inc()
        return JSONResponse(body, status_code=status, headers=headers)

    async def run_model(endpoint: str, images: np.ndarray) -> np.ndarray | JSONResponse:
        """The batch's logits, or the 500 to answer (the model failed, or gave NaN/inf)."""
        metrics.queue_depth.set(batcher.queued_images + len(images))
        try:
            logits = await batcher.submit(images)
        except BatchFailed as exc:
            return done(endpoint, 500, {"error": str(exc)})
        finally:
            metrics.queue_depth.set(batcher.queued_images)
        if not np.isfinite(logits).all():
            return done(endpoint, 500, {"error": "the model produced non-finite logits"})
        return logits

    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            batch, k = await asyncio.wait_for(
                parse_request(request, clf, cfg, inflight, decode_pool), timeout=cfg.request_timeout_s
            )
        except ClientError as exc:
            return done("predict", exc.status, {"error": str(exc)})
        except CnnkitError as exc:  # InputError from decoding/validation
            return done("predict", 400, {"error": str(exc)})
        except asyncio.TimeoutError:
            return done("predict", 503, {"error": f"request not read and decoded within {cfg.request_timeout_s} s"})
        logits = await run_model("predict", batch)
        if isinstance(logits, Response):
            return logits
        probs = softmax(np.array(logits, dtype=np.float32))
        preds = [
            {**p.to_dict(), "probabilities": row.tolist()}
            for p, row in zip(predictions(probs, clf.info.classes, k), probs)
        ]
        metrics.latency.observe(time.perf_counter() - t0)
        return done("predict", 200, {"model_version": clf.info.version, "predictions": preds})

    async def healthz(request: Request) -> Response:
        return done("healthz", 200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        if state["ready"] and not state["draining"]:
            return done("readyz", 200, {"status": "ready", "providers": clf.providers})
        return done("readyz", 503, {"status": "draining" if state["draining"] else "starting"})

    async def model_info(request: Request) -> Response:
        return done(
            "model",
            200,
            {
                "version": clf.info.version,
                "source": os.path.basename(clf.source),  # not the server's folders
                "providers": clf.providers,
                "max_batch": cfg.max_batch,
                "max_delay_ms": cfg.max_delay_ms,
                "metadata": clf.info.raw,
            },
        )

    name = cfg.model_name or clf.info.serving_name

    def v2_model_problem(request: Request) -> str | None:
        asked, version = request.path_params["name"], request.path_params.get("version")
        if asked != name:
            return f"unknown model {asked!r}; this server serves {name!r}"
        if version is not None and version != clf.info.version:
            return f"unknown version {version!r} of {name!r}; this server has {clf.info.version!r}"
        return None

    async def v2_live(request: Request) -> Response:
        return done("v2_health", 200, {"live": True})

    async def v2_ready(request: Request) -> Response:
        return done("v2_health", 200 if state["ready"] else 503, {"ready": state["ready"]})

    async def v2_server(request: Request) -> Response:
        return done("v2_metadata", 200, v2.server_metadata())

    async def v2_model(request: Request) -> Response:
        problem = v2_model_problem(request)
        if problem:
            return done("v2_metadata", 400, {"error": problem})
        return done("v2_metadata", 200, v2.model_metadata(clf, name))

    async def v2_model_ready(request: Request) -> Response:
        problem = v2_model_problem(request)
        if problem:
            return done("v2_health", 400, {"error": problem})
        return done("v2_health", 200 if state["ready"] else 503, {"name": name, "ready": state["ready"]})

    async def v2_infer(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            problem = v2_model_problem(request)
            if problem:
                raise v2.ProtocolError(problem)
            body = await read_body(request, cfg.max_body_bytes, inflight)
            req = v2.parse_infer(body, request.headers.get(v2.HEADER_LENGTH), clf, cfg.max_images)
        except (v2.ProtocolError, ClientError) as exc:
            return done("v2_infer", exc.status, {"error": str(exc)})
        logits = await run_model("v2_infer", req.images)
        if isinstance(logits, Response):
            return logits
        content, headers = v2.response(req, logits, clf, name)
        metrics.latency.observe(time.perf_counter() - t0)
        metrics.requests.labels("v2_infer", "200").inc()
        return Response(content, headers=headers)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.requests.labels("metrics", "200").inc()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own 4xx (unknown route, wrong method, ...) in the one JSON error shape, counted."""
        assert isinstance(exc, HTTPException)
        return done("other", exc.status_code, {"error": str(exc.detail)}, dict(exc.headers or {}))

    async def server_error(request: Request, exc: Exception) -> Response:
        return done("other", 500, {"error": f"internal error ({type(exc).__name__})"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher.start()
        for n in {1, cfg.max_batch}:  # warm up ORT's allocations for the shapes we will see most
            await batcher.submit(np.zeros((n, *clf.input_spec.image_shape), np.uint8))
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()
            decode_pool.shutdown(wait=False, cancel_futures=True)

    routes = [
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/v1/model", model_info),
        Route("/metrics", metrics_endpoint),
        Route("/v2/health/live", v2_live),
        Route("/v2/health/ready", v2_ready),
        Route("/v2", v2_server),
        Route("/v2/models/{name}", v2_model),
        Route("/v2/models/{name}/versions/{version}", v2_model),
        Route("/v2/models/{name}/ready", v2_model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", v2_model_ready),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
    ]
    handlers = {HTTPException: http_error, Exception: server_error}
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=handlers,
        middleware=[Middleware(CloseWhileDraining, state=state)],
    )
    app.state.metrics = metrics
    app.state.serving = state
    return app


class CloseWhileDraining:
    """ASGI middleware: while the server drains before a shutdown, every response says `Connection: close`, so
    keep-alive clients open a new connection for their next request instead of reusing one that is about to go."""

    def __init__(self, app: Any, state: dict[str, bool]):
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and self.state["draining"]:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


LAST_ANSWERS_S = 0.5  # after the listener closes: time for each open connection's last request


def _draining_server(config: Any, state: dict[str, bool], drain_s: float) -> Any:
    """A uvicorn Server whose first SIGTERM/SIGINT shuts down without dropping a request a client has sent:

    1. for `drain_s` seconds: /readyz answers 503 (load balancers stop sending), requests are still answered, each
       with `Connection: close`, so keep-alive clients reconnect for their next request;
    2. the listening socket closes (a client reconnecting is refused: it has sent nothing), and the connections
       still open get LAST_ANSWERS_S to finish the request each may have in flight;
    3. uvicorn's graceful shutdown. A second signal skips to 3.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if drain_s <= 0 or state["draining"]:
                super().handle_exit(sig, frame)
                return
            state["draining"] = True
            loop = asyncio.get_running_loop()  # the handler runs on the event loop's (main) thread

            def stop_accepting() -> None:
                for server in self.servers:
                    server.close()

            loop.call_later(drain_s, stop_accepting)
            loop.call_later(drain_s + LAST_ANSWERS_S, lambda: uvicorn.Server.handle_exit(self, sig, frame))

    return Server(config)


def run(
    clf: Classifier,
    host: str = "127.0.0.1",
    port: int = 8000,
    cfg: ServeConfig = ServeConfig(),
    log_level: str = "info",
) -> None:
    """Serve `clf` until SIGINT/SIGTERM (uvicorn stops accepting and drains in-flight requests), then return."""
    import uvicorn

    if not np.isfinite(clf.logits(np.zeros((1, *clf.input_spec.image_shape), np.uint8))).all():
        raise ModelFileError(f"{clf.source}: the model's logits for a blank image are not finite; not serving it")
    app = create_app(clf, cfg)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
        limit_concurrency=cfg.limit_concurrency,  # beyond it uvicorn answers 503 at once
        timeout_keep_alive=int(max(1, cfg.timeout_keep_alive_s)),
        h11_max_incomplete_event_size=64 * 1024,  # request line + headers
    )
    # uvicorn handles SIGINT/SIGTERM (stop accepting, drain, shut down), then re-raises the signal with the
    # handlers it found. Finding no-op handlers makes a graceful stop end as a normal exit 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _draining_server(config, app.state.serving, cfg.drain_s).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
