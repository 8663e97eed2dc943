"""`ServeConfig`: what `cnnkit serve` allows and how it batches (every field bounded by a default, most a CLI flag)."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.serve.reading import Limits


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    max_batch: int = 64
    max_delay_ms: float = 0.0  # see Batcher: what queues while the model runs is batched without any wait
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
    http: str = "httptools"  # uvicorn's HTTP parser: httptools (bounded by cnnkit) or h11
    max_header_bytes: int = 64 * 1024  # request line + headers; beyond it, 431
    top_k: int = 3
    model_name: str | None = None  # in the KServe V2 paths; default: the model's serving name

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
