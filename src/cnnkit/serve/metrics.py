"""The server's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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

    def on_batch(self, n: int, seconds: float) -> None:
        """The batcher ran a model call of `n` images."""
        self.batch_size.observe(n)
        self.inference.observe(seconds)
        self.images.inc(n)

    def refused(self, status: int) -> None:
        """The HTTP protocol answered a connection itself (431: head too large, 408: head too slow) before any
        request reached the app, so no endpoint is known: counted as endpoint "head"."""
        self.requests.labels("head", str(status)).inc()

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))
