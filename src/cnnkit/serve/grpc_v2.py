"""The KServe V2 (Open Inference Protocol) over gRPC, beside HTTP in `cnnkit serve` (`--grpc-port`; the `grpc`
extra). The wire format is the protocol's own .proto as Triton publishes it, compiled by grpcio: the stubs
tritonclient[grpc] ships (package `inference`, service `GRPCInferenceService`, as in KServe's
grpc_predict_v2.proto), so tritonclient.grpc, perf_analyzer `-i grpc` and KServe's clients work unchanged.

It runs on the HTTP server's event loop and shares everything with it: the batcher, the limits (images per request,
bytes in flight, the message size), the model-name rule, the metrics, Triton's statistics and the shutdown (the
lifespan stops it, letting in-flight calls finish, before the batcher stops)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

from cnnkit.errors import RequestError
from cnnkit.serve import triton_api, v2

if TYPE_CHECKING:
    from cnnkit.runtime import Classifier

Service = Any  # serve.app.Service (not imported: app imports this module when gRPC is asked for)

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
STOP_GRACE_S = 5.0  # in-flight calls finish within this at shutdown


def _param(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def infer_request(msg: Any, clf: Classifier, max_images: int) -> v2.InferRequest:
    """A ModelInferRequest -> the uint8 batch and the outputs asked for (the same checks as over HTTP)."""
    if len(msg.inputs) != 1:
        raise RequestError(f"the request must hold the one input tensor {clf.input_spec.name!r}")
    t = msg.inputs[0]
    shape, count = v2.input_shape({"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}, clf, max_images)
    if msg.raw_input_contents:
        raw = msg.raw_input_contents[0]
        if len(msg.raw_input_contents) != 1 or len(raw) != count:
            raise RequestError(f"raw input contents of {len(raw)} bytes for a UINT8 tensor of {count} elements")
        images = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    else:
        values = t.contents.uint_contents
        if len(values) != count:
            raise RequestError(f"input contents must be {count} uint_contents for shape {shape}, got {len(values)}")
        arr = np.fromiter(values, dtype=np.int64, count=count)
        if arr.size and arr.max() > 255:
            raise RequestError("UINT8 input contents outside 0..255")
        images = arr.astype(np.uint8).reshape(shape)
    asked = [{"name": o.name, "parameters": {k: _param(v) for k, v in o.parameters.items()}} for o in msg.outputs]
    outputs = v2.outputs_asked(asked or None, clf, True)
    return v2.InferRequest(id=v2.request_id(msg.id or None), images=images, outputs=outputs)


def infer_response(req: v2.InferRequest, logits: np.ndarray, clf: Classifier, name: str) -> Any:
    """The ModelInferResponse: every output as raw little-endian contents (what tritonclient reads back)."""
    resp = pb.ModelInferResponse(model_name=name, model_version=clf.info.version, id=req.id or "")
    for out in req.outputs:
        dtype, arr, raw = v2.encoded(out, logits, clf)
        resp.outputs.add(name=out.name, datatype=dtype, shape=list(arr.shape))
        resp.raw_output_contents.append(raw)
    return resp


class V2Servicer(rpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The V2 RPCs on one served model; what the protocol leaves to Triton (streaming, shared memory, repository
    loads, traces) answers UNIMPLEMENTED."""

    def __init__(self, service: Service):
        self.s = service

    async def _abort(self, context: Any, endpoint: str, status: int, message: str) -> None:
        self.s.metrics.requests.labels(endpoint, str(status)).inc()
        await context.abort(CODES.get(status, grpc.StatusCode.UNKNOWN), message)

    async def _check_model(self, context: Any, endpoint: str, name: str, version: str) -> None:
        problem = self.s.model_problem(name, version or None)
        if problem:
            await self._abort(context, endpoint, 404, problem)

    def _ok(self, endpoint: str) -> None:
        self.s.metrics.requests.labels(endpoint, "200").inc()

    async def ServerLive(self, request: Any, context: Any) -> Any:
        self._ok("grpc_health")
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        self._ok("grpc_health")
        return pb.ServerReadyResponse(ready=self.s.state.accepting)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        await self._check_model(context, "grpc_health", request.name, request.version)
        self._ok("grpc_health")
        return pb.ModelReadyResponse(ready=self.s.state.accepting)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        self._ok("grpc_metadata")
        return pb.ServerMetadataResponse(**v2.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        await self._check_model(context, "grpc_metadata", request.name, request.version)
        d = v2.model_metadata(self.s.clf, self.s.name)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        self._ok("grpc_metadata")
        return pb.ModelMetadataResponse(
            name=d["name"],
            versions=d["versions"],
            platform=d["platform"],
            inputs=[tensor(**t) for t in d["inputs"]],
            outputs=[tensor(**t) for t in d["outputs"]],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        await self._check_model(context, "grpc_metadata", request.name, request.version)
        cfg = self.s.cfg
        resp = pb.ModelConfigResponse()
        config = triton_api.config(self.s.clf, self.s.name, cfg.max_batch, cfg.max_delay_ms)
        json_format.ParseDict(config, resp.config, ignore_unknown_fields=True)
        self._ok("grpc_metadata")
        return resp

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        if request.name:
            await self._check_model(context, "grpc_metadata", request.name, request.version)
        resp = pb.ModelStatisticsResponse()
        json_format.ParseDict(self.s.stats.to_json(self.s.name, self.s.clf.info.version), resp)
        self._ok("grpc_metadata")
        return resp

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        index = triton_api.repository_index(self.s.name, self.s.clf.info.version, self.s.state.ready)
        self._ok("grpc_metadata")
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in index])

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        t0 = time.perf_counter()
        s = self.s
        await self._check_model(context, "grpc_infer", request.model_name, request.model_version)
        with s.inflight.ticket() as ticket:
            try:
                ticket.take(request.ByteSize())
                req = infer_request(request, s.clf, s.cfg.max_images)
            except RequestError as exc:
                s.stats.request(False, 0.0)
                await self._abort(context, "grpc_infer", exc.status, str(exc))
        logits = await s.logits_or_problem(req.images)
        if isinstance(logits, str):
            s.stats.request(False, 0.0)
            await self._abort(context, "grpc_infer", 500, logits)
        resp = infer_response(req, logits, s.clf, s.name)
        s.metrics.latency.observe(time.perf_counter() - t0)
        s.stats.request(True, time.perf_counter() - t0)
        self._ok("grpc_infer")
        return resp


async def start(service: Service, host: str, port: int) -> tuple[Any, int]:
    """The gRPC server on `host:port` (0: one the kernel picks), started; returns it and the port it listens on."""
    cfg = service.cfg
    limit = v2.request_bytes(service.clf, cfg, 5)  # a full request's pixels as uint_contents
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=cfg.limit_concurrency,
    )
    rpc.add_GRPCInferenceServiceServicer_to_server(V2Servicer(service), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise RequestError(f"cannot listen for gRPC on {address}", 500)
    await server.start()
    return server, bound
