"""`cnnkit serve`: an HTTP service on cnnkit.runtime (Starlette + uvicorn), cnnkit's API and the KServe V2 protocol
on one dynamic batcher. Never imports torch.

The pieces: `reading` (request bodies and their bounds), `v2` (the protocol), `batching`, `metrics`, `shutdown`
(the drain); here, the routes and their handlers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cnnkit.errors import CnnkitError, RequestError
from cnnkit.runtime import Classifier, predictions, softmax
from cnnkit.serve import triton_api, v2
from cnnkit.serve.batching import Batcher, BatchFailed
from cnnkit.serve.config import ServeConfig
from cnnkit.serve.metrics import Metrics
from cnnkit.serve.reading import DecodeLanes, InFlight, Ticket, log, parse_request, read_body, without_frames
from cnnkit.serve.shutdown import CloseWhileDraining, ServingState


class Service:
    """One model served: the batcher, the decode lanes, the in-flight bytes, the metrics, and the handlers."""

    def __init__(self, clf: Classifier, cfg: ServeConfig):
        self.clf, self.cfg = clf, cfg
        self.metrics = Metrics()
        self.state = ServingState()
        self.stats = triton_api.Statistics()
        self.batcher = Batcher(clf.logits, cfg.max_batch, cfg.max_delay_ms, self._on_batch, in_flight=clf.in_flight)
        self.inflight = InFlight(cfg.max_inflight_bytes, cfg.max_body_bytes, self._on_shed)
        self.lanes = DecodeLanes(cfg.decode_threads, SMALL_BODY_BYTES, initializer=_yield_to_the_event_loop)
        self.name = cfg.model_name or clf.info.serving_name

    def _on_shed(self, path: str) -> None:
        """A request answered 503 from its headers (its body did not fit the bytes in flight), counted as its
        endpoint's."""
        endpoint = "predict" if path == "/v1/predict" else "v2_infer" if path.endswith("/infer") else "other"
        self.metrics.requests.labels(endpoint, "503").inc()

    def _on_batch(self, images: int, seconds: float) -> None:
        if not self.state.ready:  # the start-up warm-up is not an inference anyone asked for
            return
        self.metrics.on_batch(images, seconds)
        self.stats.model_call(images, seconds)

    def answer(
        self, endpoint: str, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Response:
        """A JSON answer, counted by endpoint and status."""
        self.metrics.requests.labels(endpoint, str(status)).inc()
        return JSONResponse(body, status_code=status, headers=headers)

    async def logits_or_problem(self, images: np.ndarray) -> np.ndarray | str:
        """The batch's logits through the batcher, or what went wrong (the model failed, or gave NaN/inf)."""
        self.metrics.queue_depth.set(self.batcher.queued_images + len(images))
        try:
            logits = await self.batcher.submit(images)
        except BatchFailed as exc:
            return str(exc)
        finally:
            self.metrics.queue_depth.set(self.batcher.queued_images)
        if not np.isfinite(logits).all():
            return "the model produced non-finite logits"
        return logits

    async def run_model(self, endpoint: str, images: np.ndarray) -> np.ndarray | Response:
        """The batch's logits, or the 500 to answer."""
        logits = await self.logits_or_problem(images)
        if isinstance(logits, str):
            self.stats.request(False, 0.0)  # a failure in Triton's statistics too
            return self.answer(endpoint, 500, {"error": logits})
        return logits

    # ------------------------------------------------------------------------------------ cnnkit's API

    def refuse(self, endpoint: str, exc: BaseException) -> Response:
        """The answer to a request that could not be read: its status (400 for input errors, 503 past the time
        budget) and one line; the exception's frames are dropped so nothing the request held outlives it."""
        if isinstance(exc, asyncio.TimeoutError):
            status, message = 503, f"request not read and decoded within {self.cfg.request_timeout_s} s"
        else:
            status, message = (exc.status if isinstance(exc, RequestError) else 400), str(exc)
        without_frames(exc)
        self.stats.request(False, 0.0)
        # refused before its body was read to the end (too large, too many bytes in flight, too slow): close the
        # connection, so the rest of the upload is dropped by the kernel instead of read and thrown away
        headers = {"connection": "close"} if status in (413, 503) else None
        return self.answer(endpoint, status, {"error": message}, headers)

    async def predict(self, request: Request) -> Response:
        t0 = time.perf_counter()
        cfg = self.cfg
        with self.inflight.ticket() as ticket:
            try:
                read = parse_request(request, self.clf, cfg.limits, ticket, self.lanes)
                batch, k = await asyncio.wait_for(read, timeout=cfg.request_timeout_s)
            except (CnnkitError, asyncio.TimeoutError) as exc:  # RequestError, InputError from decoding
                return self.refuse("predict", exc)
        logits = await self.run_model("predict", batch)
        if isinstance(logits, Response):
            return logits
        probs = softmax(np.array(logits, dtype=np.float32))
        preds = [
            {**p.to_dict(), "probabilities": row.tolist()}
            for p, row in zip(predictions(probs, self.clf.info.classes, k), probs)
        ]
        self.metrics.latency.observe(time.perf_counter() - t0)
        self.stats.request(True, time.perf_counter() - t0)
        return self.answer("predict", 200, {"model_version": self.clf.info.version, "predictions": preds})

    async def healthz(self, request: Request) -> Response:
        return self.answer("healthz", 200, {"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        return self.answer("readyz", *self.state.readyz(self.clf.providers))

    async def model_info(self, request: Request) -> Response:
        clf = self.clf
        body = {
            "version": clf.info.version,
            "source": os.path.basename(clf.source),  # not the server's folders
            "providers": clf.providers,
            "engines": clf.runs_on(),  # from which batch size which engine, streams and precision run
            "max_batch": self.cfg.max_batch,
            "max_delay_ms": self.cfg.max_delay_ms,
            "metadata": clf.info.raw,
        }
        return self.answer("model", 200, body)

    async def metrics_endpoint(self, request: Request) -> Response:
        self.metrics.requests.labels("metrics", "200").inc()
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------------------------- KServe V2

    def v2_model_problem(self, request: Request) -> str | None:
        return self.model_problem(request.path_params["name"], request.path_params.get("version"))

    def model_problem(self, asked: str, version: str | None) -> str | None:
        """Why a V2 call names a model this server does not serve (HTTP and gRPC alike), or None."""
        if asked != self.name:
            return f"unknown model {asked!r}; this server serves {self.name!r}"
        if version is not None and version != self.clf.info.version:
            return f"unknown version {version!r} of {self.name!r}; this server has {self.clf.info.version!r}"
        return None

    async def v2_live(self, request: Request) -> Response:
        return self.answer("v2_health", 200, {"live": True})

    async def v2_ready(self, request: Request) -> Response:
        return self.answer("v2_health", *self.state.v2_ready())

    async def v2_server(self, request: Request) -> Response:
        return self.answer("v2_metadata", 200, v2.server_metadata())

    async def v2_model(self, request: Request) -> Response:
        problem = self.v2_model_problem(request)
        if problem:
            return self.answer("v2_metadata", 400, {"error": problem})
        return self.answer("v2_metadata", 200, v2.model_metadata(self.clf, self.name))

    async def v2_model_ready(self, request: Request) -> Response:
        problem = self.v2_model_problem(request)
        if problem:
            return self.answer("v2_health", 400, {"error": problem})
        ready = self.state.ready
        return self.answer("v2_health", 200 if ready else 503, {"name": self.name, "ready": ready})

    async def v2_config(self, request: Request) -> Response:
        problem = self.v2_model_problem(request)
        if problem:
            return self.answer("v2_metadata", 400, {"error": problem})
        cfg = self.cfg
        return self.answer("v2_metadata", 200, triton_api.config(self.clf, self.name, cfg.max_batch, cfg.max_delay_ms))

    async def v2_index(self, request: Request) -> Response:
        index = triton_api.repository_index(self.name, self.clf.info.version, self.state.ready)
        self.metrics.requests.labels("v2_metadata", "200").inc()
        return JSONResponse(index)

    async def v2_stats(self, request: Request) -> Response:
        problem = self.v2_model_problem(request) if "name" in request.path_params else None
        if problem:
            return self.answer("v2_metadata", 400, {"error": problem})
        return self.answer("v2_metadata", 200, self.stats.to_json(self.name, self.clf.info.version))

    async def v2_infer(self, request: Request) -> Response:
        t0 = time.perf_counter()
        problem = self.v2_model_problem(request)
        if problem:
            return self.answer("v2_infer", 400, {"error": problem})
        loop = asyncio.get_running_loop()
        with self.inflight.ticket() as ticket:
            try:
                req = await asyncio.wait_for(self._read_v2(request, ticket), timeout=self.cfg.request_timeout_s)
            except (CnnkitError, asyncio.TimeoutError) as exc:
                return self.refuse("v2_infer", exc)
        logits = await self.run_model("v2_infer", req.images)
        if isinstance(logits, Response):
            return logits
        if len(req.images) <= INLINE_IMAGES:  # a few rows encode in microseconds: no hand-off to the pool
            content, headers = v2.response(req, logits, self.clf, self.name)
        else:
            large = self.lanes.large
            content, headers = await loop.run_in_executor(large, v2.response, req, logits, self.clf, self.name)
        self.metrics.latency.observe(time.perf_counter() - t0)
        self.stats.request(True, time.perf_counter() - t0)
        self.metrics.requests.labels("v2_infer", "200").inc()
        return Response(content, headers=headers)

    async def _read_v2(self, request: Request, ticket: Ticket) -> v2.InferRequest:
        """The body within its bounds, then parsed in a decode lane (never on the event loop, unless tiny)."""
        header = request.headers.get(v2.HEADER_LENGTH)
        # all-JSON bodies are parsed holding the GIL: no bigger than a full request's numbers can be (binary is not)
        limit = self.cfg.max_body_bytes if header is not None else v2.json_limit(self.clf, self.cfg)
        body = await read_body(request, limit, ticket)
        if len(body) <= INLINE_BYTES:  # parsed on the event loop in microseconds: no hand-off to the pool
            return v2.parse_infer(body, header, self.clf, self.cfg.max_images)
        loop = asyncio.get_running_loop()
        pool = self.lanes.for_body(len(body))
        return await loop.run_in_executor(pool, v2.parse_infer, body, header, self.clf, self.cfg.max_images)

    # ------------------------------------------------------------------------------ errors, lifespan

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's own 4xx (unknown route, wrong method, ...) in the one JSON error shape, counted."""
        assert isinstance(exc, HTTPException)
        return self.answer("other", exc.status_code, {"error": str(exc.detail)}, dict(exc.headers or {}))

    async def server_error(self, request: Request, exc: Exception) -> Response:
        return self.answer("other", 500, {"error": f"internal error ({type(exc).__name__})"})

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        beat = asyncio.create_task(self.state.heartbeat()) if self.state.heartbeat else None  # --health-port's
        self.batcher.start()
        for n in {1, self.cfg.max_batch}:  # warm up ORT's allocations for the shapes we will see most
            await self.batcher.submit(np.zeros((n, *self.clf.input_spec.image_shape), np.uint8))
        self.state.ready = True
        grpc_server = None
        if self.cfg.grpc_port is not None:
            from cnnkit.serve import grpc_v2  # the grpc extra

            grpc_server, port = await grpc_v2.start(self, self.cfg.grpc_host, self.cfg.grpc_port)
            log.info("cnnkit serve: KServe V2 over gRPC on %s:%d", self.cfg.grpc_host, port)
        try:
            yield
        finally:
            self.state.ready = False
            if grpc_server is not None:
                await grpc_server.stop(grpc_v2.STOP_GRACE_S)  # in-flight calls finish; the batcher still runs
            await self.batcher.stop()
            self.lanes.shutdown()
            if beat is not None:
                beat.cancel()

    def routes(self) -> list[Route]:
        # Starlette tries routes in order: the inference routes come first (each miss costs every request ~3 µs)
        return [
            Route("/v2/models/{name}/infer", self.v2_infer, methods=["POST"]),
            Route("/v1/predict", self.predict, methods=["POST"]),
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/v1/model", self.model_info),
            Route("/metrics", self.metrics_endpoint),
            Route("/v2/health/live", self.v2_live),
            Route("/v2/health/ready", self.v2_ready),
            Route("/v2", self.v2_server),
            Route("/v2/models/stats", self.v2_stats),  # before /v2/models/{name}, which would take "stats" for a name
            Route("/v2/models/{name}", self.v2_model),
            Route("/v2/models/{name}/versions/{version}", self.v2_model),
            Route("/v2/models/{name}/ready", self.v2_model_ready),
            Route("/v2/models/{name}/versions/{version}/ready", self.v2_model_ready),
            Route("/v2/models/{name}/config", self.v2_config),
            Route("/v2/models/{name}/versions/{version}/config", self.v2_config),
            Route("/v2/models/{name}/stats", self.v2_stats),
            Route("/v2/models/{name}/versions/{version}/stats", self.v2_stats),
            Route("/v2/repository/index", self.v2_index, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/infer", self.v2_infer, methods=["POST"]),
        ]


DECODE_NICENESS = 10
# V2 bodies and answers this small are parsed and encoded on the event loop: a thread hand-off would cost more than
# the work (a binary 28x28 image is under 1 KB); larger ones, and every image file, go to a decode lane
INLINE_BYTES = 16 * 1024
INLINE_IMAGES = 8
# bodies this small (a digit's PNG, a thumbnail JPEG) are decoded in a lane of their own: never behind large uploads
SMALL_BODY_BYTES = 64 * 1024


def _yield_to_the_event_loop() -> None:
    """Run this decode thread at a lower CPU priority than the event loop's: when uploads keep every core busy
    decoding, /healthz and the model's answers still get the CPU first (Linux schedules threads by their own nice
    value). Where that is not possible, nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)
    except (AttributeError, OSError):
        pass


def create_app(clf: Classifier, cfg: ServeConfig = ServeConfig()) -> Starlette:
    """The Starlette app serving `clf`: routes, the one JSON error shape, the drain middleware, the lifespan."""
    service = Service(clf, cfg)
    app = Starlette(
        routes=service.routes(),
        lifespan=service.lifespan,
        exception_handlers={HTTPException: service.http_error, Exception: service.server_error},
        middleware=[Middleware(CloseWhileDraining, state=service.state)],
    )
    app.state.metrics = service.metrics
    app.state.serving = service.state
    app.state.inflight = service.inflight
    return app
