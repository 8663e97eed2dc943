"""KServe V2 over gRPC on `cnnkit serve --grpc-port`, driven by tritonclient.grpc (a client nobody here wrote):
health, metadata, config, statistics, the repository index, inference (raw and typed contents, classification),
the limits and errors of HTTP as gRPC status codes, the same answers as HTTP, and SIGTERM with calls in flight."""

import asyncio
import re
import signal

import httpx
import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="the grpc extra is not installed")
import grpc  # noqa: E402  (after the skip: the grpc extra brings it)

from helpers import start_server, v2_binary_header  # noqa: E402

NAME = "cnnkit-mnist-sample"


@pytest.fixture(scope="module")
def served(exported):
    proc, url, address = start_server(exported.artefacts["onnx"], "--max-images", "8", grpc=True)
    yield proc, url, address
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def digits_batch():
    from cnnkit.data.datasets import load_sample

    return np.ascontiguousarray(load_sample().test_images[:4].reshape(4, 1, 28, 28))


@pytest.fixture(scope="module")
def client(served):
    c = grpcclient.InferenceServerClient(served[2])
    yield c
    c.close()


def _input(images: np.ndarray, typed: bool = False):
    tensor = grpcclient.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    if typed:  # the values as InferTensorContents.uint_contents instead of raw bytes
        tensor._raw_content = None
        tensor._input.contents.uint_contents.extend(images.reshape(-1).tolist())
    return tensor


def test_health_metadata_config_index_over_grpc(client, exported):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    assert set(client.get_server_metadata().extensions) == {"binary_tensor_data", "classification"}
    meta = client.get_model_metadata(NAME)
    assert meta.inputs[0].name == "images" and list(meta.inputs[0].shape) == [-1, 1, 28, 28]
    assert list(meta.outputs[0].shape) == [-1, 10]
    config = client.get_model_config(NAME).config
    assert (
        config.max_batch_size == 64 and config.input[0].name == "images" and list(config.input[0].dims) == [1, 28, 28]
    )
    assert [(m.name, m.state) for m in client.get_model_repository_index().models] == [(NAME, "READY")]


def test_inference_matches_http_in_raw_and_typed_contents(client, served, digits_batch):
    _, url, _ = served
    header = v2_binary_header(4)
    r = httpx.post(
        f"{url}/v2/models/{NAME}/infer",
        content=header + digits_batch.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    http_logits = np.reshape(r.json()["outputs"][0]["data"], (4, 10))
    for typed in (False, True):
        answer = client.infer(NAME, [_input(digits_batch, typed)], request_id="req-7")
        np.testing.assert_allclose(answer.as_numpy("logits"), http_logits, atol=1e-5)
        assert answer.get_response().id == "req-7"
    top = client.infer(NAME, [_input(digits_batch)], outputs=[grpcclient.InferRequestedOutput("logits", class_count=2)])
    labels = [[v.decode().split(":")[2] for v in row] for row in top.as_numpy("logits")]
    assert [row[0] for row in labels] == [str(i) for i in http_logits.argmax(1)]


@pytest.mark.parametrize(
    "call,code,match",
    [
        (lambda c, x: c.infer("other-model", [_input(x)]), grpc.StatusCode.NOT_FOUND, "unknown model 'other-model'"),
        (lambda c, x: c.infer(NAME, [_input(x[:, :, :27])]), grpc.StatusCode.INVALID_ARGUMENT, "expected \\[N, 1, 28"),
        (
            lambda c, x: c.infer(NAME, [_input(np.concatenate([x, x, x]))]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "batch dimension",
        ),  # fmt: skip
        (lambda c, x: c.infer(NAME, [_input(x)], request_id="x" * 300), grpc.StatusCode.INVALID_ARGUMENT, "id must"),
        (
            lambda c, x: c.infer(NAME, [_input(x)], outputs=[grpcclient.InferRequestedOutput("probs")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown output",
        ),  # fmt: skip
    ],
)
def test_what_http_refuses_grpc_refuses_with_its_status_code(client, digits_batch, call, code, match):
    with pytest.raises(grpcclient.InferenceServerException) as info:
        call(client, digits_batch)
    assert info.value.status() == str(code) and info.value.message() is not None
    assert re.search(match, info.value.message()), info.value.message()
    assert client.is_server_live()


def test_statistics_exclude_the_warm_up_and_sigterm_lets_calls_in_flight_finish(exported):
    """A fresh server: its statistics count the requests made, not the start-up warm-up; then SIGTERM while 16
    calls are in flight: every one is answered and the server exits 0."""
    import tritonclient.grpc.aio as aioclient

    proc, _, address = start_server(exported.artefacts["onnx"], "--drain-s", "0.5", grpc=True)
    c = grpcclient.InferenceServerClient(address)
    before = c.get_inference_statistics(NAME).model_stats[0]
    assert before.inference_count == 0 and before.execution_count == 0
    c.infer(NAME, [_input(np.zeros((3, 1, 28, 28), np.uint8))])
    after = c.get_inference_statistics(NAME).model_stats[0]
    assert after.inference_count == 3 and after.inference_stats.success.count == 1
    c.close()
    x = np.zeros((8, 1, 28, 28), np.uint8)

    async def main() -> tuple[int, list[str]]:
        ok, errors = 0, []
        async with aioclient.InferenceServerClient(address) as ac:

            async def one() -> None:
                nonlocal ok
                tensor = aioclient.InferInput("images", list(x.shape), "UINT8")
                tensor.set_data_from_numpy(x)
                try:
                    await ac.infer(NAME, [tensor])
                    ok += 1
                except Exception as exc:
                    errors.append(str(exc)[:80])

            calls = [asyncio.create_task(one()) for _ in range(16)]
            await asyncio.sleep(0.01)  # the calls are on the wire
            proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*calls)
        return ok, errors

    ok, errors = asyncio.run(main())
    assert proc.wait(timeout=30) == 0
    assert ok == 16, errors
