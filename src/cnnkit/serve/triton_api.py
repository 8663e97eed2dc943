"""What Triton's client tools ask of a V2 server beyond the protocol's core: the model configuration (`GET
/v2/models/<name>/config`, the JSON form of the config.pbtxt `export --format triton` writes, from the same code),
the repository index (`POST /v2/repository/index`) and inference statistics (`GET /v2/models[/<name>]/stats`), so
perf_analyzer and tritonclient's `get_model_config` / `get_inference_statistics` work unchanged against `cnnkit
serve`."""

from __future__ import annotations

import threading
import time
from typing import Any

from cnnkit.runtime import Classifier
from cnnkit.triton_config import TritonOptions, model_config


def config(clf: Classifier, name: str, max_batch: int, max_delay_ms: float) -> dict[str, Any]:
    """The configuration this server runs the model with, as Triton's JSON."""
    opts = TritonOptions(
        max_batch_size=max_batch,
        preferred_batch_sizes=(),
        max_queue_delay_us=int(max_delay_ms * 1000),
        instance_kind="gpu" if clf.device == "cuda" else "cpu",
    )
    return {**model_config(name, "onnxruntime_onnx", clf.info, opts, clf.info.output_name), "backend": "onnxruntime"}


def repository_index(name: str, version: str, ready: bool) -> list[dict[str, str]]:
    return [{"name": name, "version": version, "state": "READY" if ready else "UNAVAILABLE", "reason": ""}]


def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": count, "ns": int(seconds * 1e9)}


class Statistics:
    """Counts and cumulative times in Triton's shape: requests (success, fail), model calls by batch size."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success = [0, 0.0]
        self.fail = [0, 0.0]
        self.inferences = 0  # images
        self.executions = 0  # model calls
        self.compute = 0.0
        self.batches: dict[int, list[float]] = {}  # batch size -> [calls, seconds]
        self.last_ms = 0

    def request(self, ok: bool, seconds: float) -> None:
        with self._lock:
            box = self.success if ok else self.fail
            box[0] += 1
            box[1] += seconds
            if ok:
                self.last_ms = int(time.time() * 1000)

    def model_call(self, images: int, seconds: float) -> None:
        with self._lock:
            self.inferences += images
            self.executions += 1
            self.compute += seconds
            calls = self.batches.setdefault(images, [0, 0.0])
            calls[0] += 1
            calls[1] += seconds

    def to_json(self, name: str, version: str) -> dict[str, Any]:
        with self._lock:
            queue = max(0.0, self.success[1] - self.compute)  # request time not spent in the model
            zero = _duration(0, 0.0)
            return {
                "model_stats": [
                    {
                        "name": name,
                        "version": version,
                        "last_inference": self.last_ms,
                        "inference_count": self.inferences,
                        "execution_count": self.executions,
                        "inference_stats": {
                            "success": _duration(int(self.success[0]), self.success[1]),
                            "fail": _duration(int(self.fail[0]), self.fail[1]),
                            "queue": _duration(int(self.success[0]), queue),
                            "compute_input": _duration(self.executions, 0.0),
                            "compute_infer": _duration(self.executions, self.compute),
                            "compute_output": _duration(self.executions, 0.0),
                            "cache_hit": zero,
                            "cache_miss": zero,
                        },
                        "batch_stats": [
                            {
                                "batch_size": size,
                                "compute_input": _duration(int(c), 0.0),
                                "compute_infer": _duration(int(c), s),
                                "compute_output": _duration(int(c), 0.0),
                            }
                            for size, (c, s) in sorted(self.batches.items())
                        ],
                    }
                ]
            }
