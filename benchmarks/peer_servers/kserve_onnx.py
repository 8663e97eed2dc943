"""A KServe ModelServer wrapping an exported cnnkit ONNX file in ONNX Runtime: the peer a KServe user would write.

    python benchmarks/peer_servers/kserve_onnx.py MODEL.onnx --name NAME --http-port PORT

Runs in benchmarks/.venv-kserve (kserve, onnxruntime; made by benchmarks/peers_serving.sh). Answers the V2
protocol at /v2/models/NAME/infer with KServe's own request parsing and response encoding, one ONNX Runtime session
(all cores), no batching of its own (KServe's default), latency logging off.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxModel(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.uint8, copy=False)
        logits = self.session.run([self.output_name], {self.input_name: x})[0]
        out = InferOutput(name=self.output_name, shape=list(logits.shape), datatype="FP32")
        out.set_data_from_numpy(logits, binary_data=True)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--name", required=True)
    ap.add_argument("--http-port", type=int, required=True)
    a = ap.parse_args()
    server = ModelServer(http_port=a.http_port, grpc_port=a.http_port + 1, enable_latency_logging=False)
    server.start([OnnxModel(a.name, a.model)])
