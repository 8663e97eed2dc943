"""`cnnkit serve`: an HTTP service on cnnkit.runtime (Starlette + uvicorn). Never imports torch."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cnnkit.errors import CnnkitError
from cnnkit.runtime import Classifier, predictions, softmax
from cnnkit.runtime import images as imgs
from cnnkit.serve import v2
from cnnkit.serve.batching import Batcher, BatchFailed


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 64
    max_delay_ms: float = 2.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_images: int = 256  # per request
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


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"body of {int(declared)} bytes exceeds the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ClientError(413, f"body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_image(item: Any, clf: Classifier, invert: bool | None, index: int) -> np.ndarray:
    """A JSON image: base64 of an image file (a string, or {"b64": ...}), or nested pixel lists."""
    if isinstance(item, dict):
        item = item.get("b64", item.get("pixels"))
    if isinstance(item, str):
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError(400, f"images[{index}]: not valid base64") from None
        return imgs.decode(data, clf.info.image_size, invert, name=f"images[{index}]").pixels
    if isinstance(item, list):
        try:
            arr = np.asarray(item, dtype=np.float64) if _has_float(item) else np.asarray(item)
        except (ValueError, TypeError):
            raise ClientError(400, f"images[{index}]: pixel rows are ragged or not numbers") from None
        pixels: np.ndarray = clf.as_batch(arr)[0]
        return pixels
    raise ClientError(400, f"images[{index}]: expected a base64 string or a list of pixel rows")


def _has_float(rows: Any) -> bool:
    flat = rows
    while isinstance(flat, list) and flat and isinstance(flat[0], list):
        flat = flat[0]
    return isinstance(flat, list) and any(isinstance(v, float) for v in flat)


async def parse_request(request: Request, clf: Classifier, cfg: ServeConfig) -> tuple[np.ndarray, int]:
    """Request -> (uint8 batch [N,C,H,W], top_k). Raises ClientError with the HTTP status to answer."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    q = request.query_params
    top_k = q.get("top_k", str(cfg.top_k))
    invert = {"true": True, "1": True, "false": False, "0": False}.get(q.get("invert", "auto").lower())
    if ctype == "multipart/form-data":
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise ClientError(413, f"body of {declared} bytes exceeds the {cfg.max_body_bytes}-byte limit")
        async with request.form(max_files=cfg.max_images + 1, max_part_size=cfg.max_body_bytes) as form:
            files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                raise ClientError(400, "multipart body has no file parts")
            if len(files) > cfg.max_images:
                raise ClientError(413, f"{len(files)} images in one request; the limit is {cfg.max_images}")
            pixels = [
                imgs.decode(await f.read(), clf.info.image_size, invert, name=f.filename or k).pixels for k, f in files
            ]
    else:
        body = await read_body(request, cfg.max_body_bytes)
        if ctype == "application/json":
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise ClientError(400, f"invalid JSON: {exc}") from None
            if not isinstance(doc, dict) or not ("images" in doc or "image" in doc):
                raise ClientError(400, 'JSON body must be an object with "images": [...] or "image": ...')
            items = doc["images"] if "images" in doc else [doc["image"]]
            if not isinstance(items, list) or not items:
                raise ClientError(400, '"images" must be a non-empty list')
            if len(items) > cfg.max_images:
                raise ClientError(413, f"{len(items)} images in one request; the limit is {cfg.max_images}")
            top_k = doc.get("top_k", top_k)
            pixels = [_json_image(it, clf, invert, i) for i, it in enumerate(items)]
        elif ctype.startswith("image/") or ctype == "application/octet-stream":
            pixels = [imgs.decode(body, clf.info.image_size, invert, name="body").pixels]
        else:
            raise ClientError(
                415,
                f"unsupported content type {ctype or '(none)'!r}; send an image (image/png, "
                "image/jpeg), multipart/form-data, or application/json",
            )
    try:
        k = int(top_k)
    except (TypeError, ValueError):
        raise ClientError(400, f"top_k must be an integer, got {top_k!r}") from None
    return clf.as_batch(np.stack([p.reshape(clf.input_spec.image_shape) for p in pixels])), max(
        1, min(k, clf.info.num_classes)
    )


def create_app(clf: Classifier, cfg: ServeConfig = ServeConfig()) -> Starlette:
    metrics = Metrics()
    state = {"ready": False}

    def on_batch(n: int, seconds: float) -> None:
        metrics.batch_size.observe(n)
        metrics.inference.observe(seconds)
        metrics.images.inc(n)

    batcher = Batcher(clf.logits, cfg.max_batch, cfg.max_delay_ms, on_batch)

    def done(endpoint: str, status: int, body: dict[str, Any]) -> JSONResponse:
        metrics.requests.labels(endpoint, str(status)).inc()
        return JSONResponse(body, status_code=status)

    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            batch, k = await parse_request(request, clf, cfg)
            metrics.queue_depth.set(batcher.queued_images + len(batch))
            logits = await batcher.submit(batch)
        except ClientError as exc:
            return done("predict", exc.status, {"error": str(exc)})
        except CnnkitError as exc:  # InputError from decoding/validation
            return done("predict", 400, {"error": str(exc)})
        except BatchFailed as exc:
            return done("predict", 500, {"error": str(exc)})
        finally:
            metrics.queue_depth.set(batcher.queued_images)
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
        if state["ready"]:
            return done("readyz", 200, {"status": "ready", "providers": clf.providers})
        return done("readyz", 503, {"status": "starting"})

    async def model_info(request: Request) -> Response:
        return done(
            "model",
            200,
            {
                "version": clf.info.version,
                "source": clf.source,
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
            body = await read_body(request, cfg.max_body_bytes)
            req = v2.parse_infer(body, request.headers.get(v2.HEADER_LENGTH), clf, cfg.max_images)
            metrics.queue_depth.set(batcher.queued_images + len(req.images))
            logits = await batcher.submit(req.images)
        except v2.ProtocolError as exc:
            return done("v2_infer", exc.status, {"error": str(exc)})
        except ClientError as exc:
            return done("v2_infer", exc.status, {"error": str(exc)})
        except BatchFailed as exc:
            return done("v2_infer", 500, {"error": str(exc)})
        finally:
            metrics.queue_depth.set(batcher.queued_images)
        if not np.isfinite(logits).all():
            return done("v2_infer", 500, {"error": "the model produced non-finite logits"})
        content, headers = v2.response(req, logits, clf, name)
        metrics.latency.observe(time.perf_counter() - t0)
        metrics.requests.labels("v2_infer", "200").inc()
        return Response(content, headers=headers)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.requests.labels("metrics", "200").inc()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

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
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    return app


def run(
    clf: Classifier,
    host: str = "127.0.0.1",
    port: int = 8000,
    cfg: ServeConfig = ServeConfig(),
    log_level: str = "info",
) -> None:
    """Serve `clf` until SIGINT/SIGTERM (uvicorn stops accepting and drains in-flight requests), then return."""
    import uvicorn

    app = create_app(clf, cfg)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=30
    )
    # uvicorn handles SIGINT/SIGTERM (stop accepting, drain, shut down), then re-raises the signal with the
    # handlers it found. Finding no-op handlers makes a graceful stop end as a normal exit 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
