"""Weights from elsewhere: fine-tuning from a pretrained file (`train --weights`, torchvision's from the local hub
cache), and a state dict trained outside cnnkit exported, verified and served (`export --weights`)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cnnkit.errors import DataError
from cnnkit.spec import ModelConfig
from cnnkit.train import nets
from cnnkit.train.nets import weights
from helpers import cli as cnnkit
from helpers import photos
from usernets import tiny

ARCH = "usernets.tiny:build"


def test_fine_tuning_starts_from_torchvisions_file_in_the_local_hub_cache(tmp_path, monkeypatch):
    photos(tmp_path / "colours", n=4)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    args = ["train", "--data-dir", "colours", "--arch", "resnet18", "--weights", "torchvision", "--out", "run",
            "--max-steps", "1", "--recipe", "default", "--image-size", "16"]  # fmt: skip
    r = cnnkit(*args, cwd=tmp_path)
    assert r.returncode == 1 and not (tmp_path / "run").exists()
    cached = tmp_path / "hub" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"  # $TORCH_HOME/hub/checkpoints
    assert f"not in the local torch hub cache ({cached})" in r.stderr and "downloads nothing" in r.stderr

    import torchvision.models as tvm

    cached.parent.mkdir(parents=True)
    pretrained = tvm.resnet18().state_dict()  # ImageNet's shapes: a 7x7 RGB stem, 1000 classes
    torch.save(pretrained, cached)
    r = cnnkit(*args, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    started = json.loads(r.stdout)["started_from"]
    # the 16-px stem (3x3, stride 1) and the 3-class head start fresh; every other tensor is the file's
    assert started["fresh"] == ["conv1.weight", "fc.weight", "fc.bias"] and started["loaded"] == len(pretrained) - 3
    tuned = load_file(tmp_path / "run" / "model.safetensors")
    body = "layer3.0.conv1.weight"  # one AdamW step at lr * body_lr_scale moves it by ~2e-4 at most
    fresh = tvm.resnet18().state_dict()[body]
    assert (tuned[body] - pretrained[body]).abs().max() < 1e-3 < (pretrained[body] - fresh).abs().max()
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert meta["train_args"]["weights"] == "torchvision" and meta["train_args"]["weights_fitted"] == started


def test_a_grayscale_network_starts_from_rgb_weights_summed_over_channels():
    rgb = nets.build(ModelConfig(in_channels=3, num_classes=3, image_size=28))
    gray = nets.build(ModelConfig(in_channels=1, num_classes=5, image_size=28))
    fitted = weights.fit(gray, rgb.state_dict(), source="rgb")
    assert fitted.adapted == ["layer1.0.weight"] and fitted.fresh == ["fc2.weight", "fc2.bias"]
    assert torch.allclose(gray.layer1[0].weight, rgb.layer1[0].weight.sum(dim=1, keepdim=True))
    assert torch.equal(gray.fc1.weight, rgb.fc1.weight)
    assert weights.head_split(gray) == len(list(gray.parameters())) - 2  # the head: fc2's weight and bias


def test_weights_that_are_not_the_networks_are_refused_in_one_line(tmp_path):
    photos(tmp_path / "colours", n=4)
    other = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.build(3, 3, (16, 16)).state_dict().items()}, other)
    r = cnnkit("train", "--data-dir", "colours", "--weights", str(other), "--out", "run", "--max-steps", "1",
               cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1 and "only 0 of the network's 8 tensors match the file" in r.stderr
    assert not (tmp_path / "run").exists()
    code = tmp_path / "code.pt"
    code.write_bytes(pickle.dumps(os.system))  # a pickle that would call code: weights_only refuses to unpickle it
    with pytest.raises(DataError, match="code.pt: not a readable state dict"):
        weights.read(code)
    with pytest.raises(DataError, match="must be a .safetensors"):
        weights.read(tmp_path / "colours" / "red" / "1.png")


def test_a_state_dict_trained_elsewhere_exports_verifies_and_serves_the_same_logits(tmp_path):
    torch.manual_seed(0)
    net = tiny.build(3, 3, (16, 16)).eval()
    torch.save({"model": net.state_dict()}, tmp_path / "mine.pt")  # the usual wrapper of a training script
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    args = ["export", "--arch", ARCH, "--weights", "mine.pt", "--input", "3x16x16", "--classes", "cat,dog,fox",
            "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)), "--format", "onnx"]  # fmt: skip
    r = cnnkit(*args, cwd=tmp_path)
    assert r.returncode == 2 and "--weights needs --out" in r.stderr
    r = cnnkit(args[0], "run", *args[1:], "--out", "model", cwd=tmp_path)
    assert r.returncode == 2 and "a CHECKPOINT or --weights, not both" in r.stderr
    r = cnnkit(*args, "--out", "model", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cnnkit("verify", "model/model.onnx", "--arch", ARCH, cwd=tmp_path)
    assert r.returncode == 0 and "records no test split" in r.stdout + r.stderr, r.stdout + r.stderr

    from cnnkit.runtime import Classifier

    x = np.random.default_rng(0).integers(0, 256, (5, 3, 16, 16), dtype=np.uint8)
    clf = Classifier(tmp_path / "model" / "model.onnx")
    ref = torch.from_numpy(x).float() / 255
    ref = (ref - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net(ref).numpy()
    np.testing.assert_allclose(clf.logits(x), expected, atol=1e-4, rtol=1e-4)
    assert clf.classes == ("cat", "dog", "fox")

    torch.save(tiny.build(5, 3, (16, 16)).state_dict(), tmp_path / "five.pt")  # a head for 5 classes, not 3
    r = cnnkit(*args[:4], "five.pt", *args[5:], "--out", "five", cwd=tmp_path)
    assert r.returncode == 1 and "five.pt: the weights do not fit the network (the network's 5.weight, 5.bias" in (
        r.stderr
    )
    assert not Path(tmp_path / "five").exists()
