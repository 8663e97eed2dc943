"""What a server allows and how it batches: `ServeConfig` (cnnkit's own server), `TritonEngineConfig` (the model in
a Triton server), the per-request `Limits`, each validated when made; and the serving policy (`open_model`: how a
served model's classifier is set up), so an app gets the server `cnnkit serve` runs. Imports no web framework."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.spec import DEVICES

HTTP_PARSERS = ("httptools", "h11")
MIN_REQUEST_PIXELS = 4096 * 4096  # all image files of one request together, unless one image may hold more


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one request may hold."""

    max_body_bytes: int
    max_images: int
    max_image_pixels: int  # per decoded image file, before it is resized
    max_request_pixels: int  # all image files of one request together
    top_k: int  # the default
    decode_budget_s: float  # a decode still running this long after the request began is stopped


def _check_ranges(owner: str, obj: Any, bounds: dict[str, tuple[float, float]]) -> None:
    """Each named field a finite number within its bounds, or CnnkitError naming the field."""
    for name, (low, high) in bounds.items():
        value = getattr(obj, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not low <= value <= high:
            raise CnnkitError(f"{owner}.{name} must be a number in {low:g}..{high:g}, got {value!r}")


def _check_model_name(name: str | None) -> None:
    if name is not None:
        from cnnkit.contract import valid_model_name

        valid_model_name(name)


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    max_batch: int = 64
    max_delay_ms: float = 0.0  # see Batcher: what queues while the model runs is batched without any wait
    max_body_bytes: int = 8 * 1024 * 1024
    max_images: int = 256  # per request
    max_image_pixels: int = 2048 * 2048  # per decoded image file, before it is resized
    max_request_pixels: int = MIN_REQUEST_PIXELS  # all image files of one request (raised to one image's, if less)
    max_inflight_bytes: int = 64 * 1024 * 1024  # request bodies held in memory at once; beyond: 503
    decode_threads: int = 2
    request_timeout_s: float = 10.0  # reading and decoding one request; beyond: 503
    limit_concurrency: int = 512  # open connections + tasks, uvicorn's limit (503 beyond)
    timeout_keep_alive_s: float = 5.0
    drain_s: float = 1.0  # after SIGTERM: answer, but close connections and fail readyz, before shutting down
    http: str = "httptools"  # uvicorn's HTTP parser: httptools (bounded by cnnkit) or h11
    max_header_bytes: int = 64 * 1024  # request line + headers; beyond it, 431
    head_timeout_s: float = 10.0  # request line + headers must arrive within this (either parser); beyond it, 408
    top_k: int = 3
    model_name: str | None = None  # in the KServe V2 paths; default: the model's serving name
    grpc_port: int | None = None  # KServe V2 over gRPC on this port too (0: one the kernel picks); None: no gRPC
    grpc_host: str = "127.0.0.1"
    health_port: int | None = None  # /healthz and /readyz also on this port, answered by a process of their own
    health_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        _check_ranges(
            "ServeConfig",
            self,
            {
                "max_batch": (1, 4096),
                "max_delay_ms": (0, 1000),
                "max_body_bytes": (1, 2**40),
                "max_images": (1, 4096),
                "max_image_pixels": (1, 100_000_000),
                "max_request_pixels": (1, 2**40),
                "max_inflight_bytes": (1, 2**46),
                "decode_threads": (1, 256),
                "request_timeout_s": (0.1, 3600),
                "limit_concurrency": (1, 1_000_000),
                "timeout_keep_alive_s": (0, 3600),
                "drain_s": (0, 3600),
                "max_header_bytes": (1024, 2**24),
                "head_timeout_s": (0.1, 3600),
                "top_k": (1, 100_000),
            },
        )
        for port in ("grpc_port", "health_port"):
            if getattr(self, port) is not None:
                _check_ranges("ServeConfig", self, {port: (0, 65535)})
        if self.http not in HTTP_PARSERS:
            raise CnnkitError(f"ServeConfig.http must be one of {', '.join(HTTP_PARSERS)}, got {self.http!r}")
        _check_model_name(self.model_name)
        # a request may always hold one image of the largest size allowed
        object.__setattr__(self, "max_request_pixels", max(self.max_request_pixels, self.max_image_pixels))

    @property
    def limits(self) -> Limits:
        return Limits(
            max_body_bytes=self.max_body_bytes,
            max_images=self.max_images,
            max_image_pixels=self.max_image_pixels,
            max_request_pixels=self.max_request_pixels,
            top_k=self.top_k,
            decode_budget_s=self.request_timeout_s,
        )


@dataclass(frozen=True, kw_only=True)
class TritonEngineConfig:
    model: str
    model_name: str | None = None  # default: the model's serving name
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    device: str = "auto"
    max_batch: int = 64
    max_delay_ms: float = 0.0
    log_verbose: int = 0
    open_statistics: bool = False  # serve Triton's statistics API without PyTriton's access token (local use)

    def __post_init__(self) -> None:
        bounds: dict[str, tuple[float, float]] = {
            "http_port": (0, 65535),
            "grpc_port": (0, 65535),
            "metrics_port": (0, 65535),
            "max_batch": (1, 4096),
            "max_delay_ms": (0, 1000),
            "log_verbose": (0, 4),
        }
        _check_ranges("TritonEngineConfig", self, bounds)
        if self.device not in DEVICES:
            raise CnnkitError(f"TritonEngineConfig.device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        ports = [self.http_port, self.grpc_port, self.metrics_port]
        if len({p for p in ports if p}) < len([p for p in ports if p]):
            raise CnnkitError(f"TritonEngineConfig: the HTTP, gRPC and metrics ports must differ, got {ports}")
        _check_model_name(self.model_name)


def inference_threads(threads: int | None = None) -> int:
    """The threads a served model computes with: `threads`, or one per core but one (the HTTP side's)."""
    return int(threads) if threads else max(1, (os.cpu_count() or 1) - 1)


def classifier_options(cfg: ServeConfig, threads: int | None = None) -> dict[str, Any]:
    """The `Classifier` keyword arguments of a served model: its threads (`inference_threads`), a chunk size that
    holds a whole request (`max_images`) as well as a whole batch, threads that sleep between model calls (the
    event loop and the decoders need the cores then), and the engine choices measured with batches in flight (the
    batcher keeps `Classifier.in_flight` of them running)."""
    return {
        "intra_op_threads": inference_threads(threads),
        "max_batch": max(cfg.max_batch, cfg.max_images),
        "serving": True,
    }


def open_model(
    model: str | os.PathLike[str] | bytes,
    cfg: ServeConfig = ServeConfig(),
    *,
    device: str = "auto",
    engine: Any = "auto",
    threads: int | None = None,
    fallback: Any = "warn",
) -> Any:
    """The runtime `Classifier` for serving `model` as `cnnkit serve` does (see `classifier_options`); pass it to
    `create_app` or `run`."""
    from cnnkit.runtime import Classifier

    return Classifier(model, device=device, engine=engine, fallback=fallback, **classifier_options(cfg, threads))
