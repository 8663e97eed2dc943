"""Shared fixtures: one small trained checkpoint per session, hermetic data dirs, a CUDA marker."""

from __future__ import annotations

import pytest

from helpers import start_server


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing entirely
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none visible to torch")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNKIT_DATA_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")  # no test goes online for data; one sets a fake downloader instead


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A checkpoint trained for one epoch on the bundled sample: real digits, clearly above chance (about 93%).

    One real end-to-end accuracy check rests on it (test_runtime); everything else only needs a real model.
    """
    from cnnkit.data.datasets import load_sample
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.run import train

    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(epochs=1, batch_size=128, shift=0, rotate=0, device="cpu")  # ONE_EPOCH in test_train_options
    return train(load_sample(), cfg, out, progress=False)


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """ONNX and TorchScript exports of the session checkpoint."""
    from cnnkit.export.exporter import ExportOptions, export

    out = tmp_path_factory.mktemp("export")
    return export(trained.checkpoint, out, ExportOptions(formats=("onnx", "torchscript"), verify=False))


@pytest.fixture(scope="session")
def server(exported):
    """`cnnkit serve` on the session's ONNX export, in its own process, with small limits to test against."""
    proc, url = start_server(
        exported.artefacts["onnx"],
        "--max-batch",
        "16",
        "--max-delay-ms",
        "5",
        "--max-images",
        "8",
        "--max-body-mb",
        "1",
    )
    yield url
    proc.terminate()
    proc.wait(timeout=30)
