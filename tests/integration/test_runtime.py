import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

from cnnkit import contract, runtime
from cnnkit.data.datasets import load_sample
from cnnkit.errors import DeviceError, InputError, ModelFileError
from cnnkit.runtime import Classifier, CudaOptions, ProviderFallbackWarning
from cnnkit.train import checkpoint
from cnnkit.train.checkpoint import deployable


@pytest.fixture(scope="module")
def clf(exported):
    return Classifier(exported.artefacts["onnx"], device="cpu", max_batch=64)


def test_torch_free_import_and_use(exported):
    code = (
        "import sys, numpy as np; from cnnkit.runtime import Classifier; "
        f"c = Classifier({exported.artefacts['onnx']!r}, device='auto'); "
        "p = c.predict(np.zeros((28, 28), np.uint8))[0]; assert p.label in c.classes; "
        # OpenVINO too: the runtime imports it only when the openvino engine is asked for
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'onnx', 'click', 'openvino') "
        "or m.startswith(('cnnkit.train', 'cnnkit.export', 'cnnkit.bench', 'cnnkit.cli'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_metadata_and_providers(clf, trained):
    assert clf.classes == tuple("0123456789")
    assert clf.providers == ["CPUExecutionProvider"] and clf.device == "cpu"
    sha = checkpoint.load(trained.checkpoint).sha256
    assert clf.info.checkpoint_sha256 == sha
    assert clf.info.version == contract.model_version(sha, {"precision": "fp32", "folded": True})


def test_agrees_with_eager_on_real_images(clf, trained):
    ds = load_sample()
    x = ds.test_images[:300]
    ref = deployable(checkpoint.load(trained.checkpoint))(torch.from_numpy(x)).detach().numpy()
    preds = clf.predict(x)  # 300 > max_batch: chunked
    assert [p.index for p in preds] == ref.argmax(1).tolist()
    np.testing.assert_allclose(clf.logits(x), ref, atol=1e-4)
    accuracy = np.mean([p.index for p in preds] == ds.test_labels[:300])
    assert accuracy > 0.8


def test_input_forms(clf):
    img = load_sample().test_images[0, 0]
    base = clf.logits(img)
    assert base.shape == (1, 10)
    np.testing.assert_allclose(clf.logits(img[None]), base)
    np.testing.assert_allclose(clf.logits(img[None, None]), base)
    np.testing.assert_allclose(clf.logits([img, img])[1], base[0])
    np.testing.assert_allclose(clf.logits(img.astype(np.float32) / 255), base, atol=1e-5)
    np.testing.assert_allclose(clf.logits(img.tolist()), base)
    p = clf.predict(img, top_k=3)[0]
    assert len(p.top_k) == 3 and p.top_k[0][0] == p.label and p.probability == pytest.approx(p.top_k[0][1])
    assert clf.probabilities(img).sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((2, 2, 2, 2, 2), np.uint8), "rank 5"),
        (np.zeros((32, 32), np.uint8), r"shape \(1, 32, 32\); expected 1x28x28"),
        (np.zeros((2, 3, 28, 28), np.uint8), "expected 1x28x28"),
        (np.full((28, 28), np.nan, np.float32), "NaN or inf"),
        (np.full((28, 28), 2.0, np.float32), r"in \[0, 1\]"),
        (np.full((28, 28), 300, np.int64), "0..255"),
        (np.zeros((0, 28, 28), np.uint8), "empty batch"),
        ([], "empty batch"),
        (np.zeros((28, 28), np.bool_), "boolean"),
        (np.array(["a"] * 784).reshape(28, 28), "dtype"),
    ],
)
def test_input_validation(clf, bad, match):
    with pytest.raises(InputError, match=match):
        clf.logits(bad)


def test_thread_safety(clf):
    ds = load_sample()
    expected = clf.logits(ds.test_images[:200]).argmax(1)
    errors = []

    def worker(i):
        try:
            for j in range(10):
                s = (i * 10 + j) % 190
                got = clf.logits(ds.test_images[s : s + 10]).argmax(1)
                assert (got == expected[s : s + 10]).all()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors


class _CpuOnlySession:
    """Stands in for a session whose CUDA provider failed to load."""

    def __init__(self, real):
        self._real = real

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_fallback_detection(exported, monkeypatch):
    real_session = runtime.session.ort.InferenceSession

    def fake_session(data, sess_options=None, providers=None):
        return _CpuOnlySession(real_session(data, sess_options=sess_options, providers=["CPUExecutionProvider"]))

    monkeypatch.setattr(runtime.session.ort, "InferenceSession", fake_session)
    with pytest.warns(ProviderFallbackWarning, match="CUDA was requested but ONNX Runtime runs on CPU"):
        c = Classifier(exported.artefacts["onnx"], device="cuda")
    assert c.device == "cpu" and c.fallback_reason
    with pytest.raises(DeviceError, match="runs on CPU"):
        Classifier(exported.artefacts["onnx"], device="cuda", fallback="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns: CPU is an acceptable outcome
        Classifier(exported.artefacts["onnx"], device="auto")


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        Classifier(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not an ONNX model file"):
        Classifier(bad)
    bad.write_bytes(b"\x08\x07")  # protobuf, but no graph an engine can load
    with pytest.raises(ModelFileError, match="cannot load"):
        Classifier(bad)


def test_non_cnnkit_onnx_rejected(tmp_path):
    from cnnkit.doctor import probe_model

    with pytest.raises(ModelFileError, match="not a cnnkit model"):
        Classifier(probe_model())


def test_device_paths_need_cuda(clf):
    with pytest.raises(DeviceError, match="needs the CUDA provider"):
        clf.cuda_graph_runner(1)


@pytest.mark.cuda
def test_cuda_io_binding_and_graph(exported):
    c = Classifier(exported.artefacts["onnx"], device="cuda", fallback="raise")
    assert c.providers[0] == "CUDAExecutionProvider"
    x = torch.from_numpy(load_sample().test_images[:16].copy())
    ref = c.logits(x.numpy())
    out = torch.empty(16, 10, device="cuda")
    c.logits_on_device(x.cuda(), out=out)
    np.testing.assert_allclose(out.cpu().numpy(), ref, atol=1e-4)
    np.testing.assert_allclose(c.logits_on_device(x.cuda()).numpy(), ref, atol=1e-4)
    g = Classifier(exported.artefacts["onnx"], device="cuda", fallback="raise", cuda=CudaOptions(cuda_graph=True))
    runner = g.cuda_graph_runner(16)
    for _ in range(3):
        np.testing.assert_allclose(runner.run(x.numpy()), ref, atol=1e-4)


def test_cuda_provider_options():
    opts = runtime.session.cuda_provider_options(device_id=1, tf32=False, enable_cuda_graph=True, compute_stream=1234)
    assert opts["device_id"] == "1" and opts["use_tf32"] == "0" and opts["enable_cuda_graph"] == "1"
    assert opts["cudnn_conv_algo_search"] == "HEURISTIC"
    assert opts["user_compute_stream"] == "1234" and opts["has_user_compute_stream"] == "1"
    # torch's default stream is handle 0, which ONNX Runtime treats as "none": leave the option out
    assert "user_compute_stream" not in runtime.session.cuda_provider_options(compute_stream=0)


def test_an_engine_failing_at_inference_is_one_line_naming_the_model(exported):
    from cnnkit.errors import InferenceError

    clf = Classifier(exported.artefacts["onnx"], device="cpu", engine="onnxruntime")

    def broken(x):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code\n  at kernel.cc:123")

    clf._runs = [broken]
    with pytest.raises(InferenceError) as info:
        clf.logits(np.zeros((3, 1, 28, 28), np.uint8))
    assert "\n" not in str(info.value) and "the model failed on a batch of 3: [ONNXRuntimeError]" in str(info.value)


def test_a_confusion_plot_shows_labels_that_look_like_mathematics(tmp_path):
    from types import SimpleNamespace

    from cnnkit.bench.report import plot_confusion

    per_class = [SimpleNamespace(label=r"$\foo$"), SimpleNamespace(label="b$")]
    result = SimpleNamespace(confusion=[[1, 0], [0, 1]], per_class=per_class, dataset="d", split="test", accuracy=1.0,
                             variant="fp32")  # fmt: skip
    plot_confusion(result, tmp_path / "c.png")  # matplotlib would try to parse "$\foo$" as mathtext
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
