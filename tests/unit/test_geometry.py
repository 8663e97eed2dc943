"""The input geometry: its one bounds rule, the defaults chosen from the data, the decode rule applied by it, and the
checkpoints and exports written before it was recorded (one channel, one scalar mean and std), which still load."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnkit import contract
from cnnkit.contract import ModelInfo
from cnnkit.errors import CheckpointError, DataError, ModelFileError
from cnnkit.geometry import DEFAULT_SIDE, Geometry, default_size, parse_size
from cnnkit.runtime import images
from cnnkit.spec import CheckpointMeta, ModelConfig

RGB = Geometry(channels=3, height=8, width=8, resize="shorter-crop", invert="never")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 2}, "2 channels"),
        ({"channels": 3}, "auto applies to one channel only"),
        ({"height": 2000}, "not within 1..1024"),
        ({"resize": "fill"}, "resize rule 'fill'"),
    ],
)
def test_one_bounds_rule_for_the_geometry(kwargs, message):
    with pytest.raises(DataError, match=message):
        Geometry(**kwargs)


def test_sizes_parse_and_default_from_the_data():
    assert parse_size("32") == (32, 32) and parse_size("24x48") == (24, 48)
    with pytest.raises(DataError, match="expected a side"):
        parse_size("big")
    assert default_size({(28, 28)})[0] == (28, 28)
    assert default_size({(30, 30)})[0] == (DEFAULT_SIDE, DEFAULT_SIDE)  # not divisible by 4
    assert default_size({(256, 256)})[0] == (DEFAULT_SIDE, DEFAULT_SIDE)  # larger than a default takes
    assert default_size({(28, 28), (40, 30)})[0] == (DEFAULT_SIDE, DEFAULT_SIDE)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_fits_by_the_rule_and_converts_channels_both_ways():
    wide = np.zeros((8, 16, 3), np.uint8)
    wide[:, :4] = 255  # a white band at the left edge
    cropped = images.decode(_png(wide), RGB).pixels
    stretched = images.decode(_png(wide), Geometry(channels=3, height=8, width=8, invert="never")).pixels
    assert cropped.shape == stretched.shape == (3, 8, 8)
    assert cropped[:, :, 0].mean() < 60 < stretched[:, :, 0].mean()  # the crop dropped the band, the stretch kept it
    gray = images.decode(_png(np.full((8, 8), 77, np.uint8)), RGB).pixels
    assert (gray == 77).all()  # a grayscale file for an RGB model: repeated in three channels
    red = images.decode(_png(np.tile(np.uint8([200, 0, 0]), (8, 8, 1)))).pixels
    assert red.shape == (1, 28, 28)  # an RGB file for MNIST's one-channel model: its luminance


def test_an_rgb_model_never_inverts_unless_asked_and_a_one_channel_auto_model_does():
    light = _png(np.full((8, 8, 3), 240, np.uint8))
    assert not images.decode(light, RGB).inverted
    assert images.decode(light, RGB, invert=True).inverted
    assert images.decode(light).inverted  # MNIST's convention: dark-on-light is inverted
    assert not images.decode(light, Geometry(invert="never")).inverted


def test_an_export_written_before_the_geometry_was_recorded_still_loads():
    meta = CheckpointMeta(config=ModelConfig(), mean=0.13, std=0.31, classes=tuple("0123456789"), dataset={})
    doc = contract.build_metadata(meta, "model.safetensors", "ab" * 32, {})
    del doc["input"]["pixels"]
    doc["normalization"] = {"mean": 0.1307, "std": 0.3081, "scale": "x / 255"}  # scalars, as before
    info = ModelInfo.from_json(json.dumps(doc), "old.onnx")
    assert info.geometry == Geometry() and info.mean == (0.1307,) and info.std == (0.3081,)
    doc["input"]["pixels"] = {"resize": "shorter-crop", "invert": "auto"}
    doc["input"]["shape"] = ["batch", 3, 28, 28]
    with pytest.raises(Exception, match="auto applies to one channel only"):
        ModelInfo.from_json(json.dumps(doc), "m.onnx")


def test_a_checkpoint_written_before_the_geometry_was_recorded_still_loads_and_a_mismatch_does_not():
    old = CheckpointMeta(config=ModelConfig(), mean=0.13, std=0.31, classes=tuple("0123456789"), dataset={})
    d = old.to_dict()
    del d["geometry"]
    d["mean"], d["std"] = 0.13, 0.31
    meta = CheckpointMeta.from_dict(d, "c")
    assert meta.geometry == Geometry() and meta.mean == (0.13,)
    d["geometry"] = {**Geometry().to_dict(), "height": 32, "width": 32}
    with pytest.raises(CheckpointError, match="does not match the model config"):
        CheckpointMeta.from_dict(d, "c")
    d["geometry"] = Geometry().to_dict()
    d["mean"] = [0.1, 0.2, 0.3]
    with pytest.raises(CheckpointError, match="not usable for 1 channel"):
        CheckpointMeta.from_dict(d, "c")


def test_the_quantizer_a_file_names_is_read_and_one_cnnkit_never_writes_is_refused():
    meta = CheckpointMeta(config=ModelConfig(), mean=0.13, std=0.31, classes=tuple("0123456789"), dataset={})
    doc = contract.build_metadata(meta, "model.safetensors", "ab" * 32, {}, {"precision": "int8", "folded": True})
    assert ModelInfo.from_json(json.dumps(doc), "m.onnx").variant == "int8-folded"  # cnnkit's recipe: no name
    doc["variant"]["quantizer"] = "nncf"
    assert ModelInfo.from_json(json.dumps(doc), "m.onnx").variant == "int8-nncf-folded"
    doc["variant"]["quantizer"] = "../../evil"
    with pytest.raises(ModelFileError, match="is not one cnnkit writes"):
        ModelInfo.from_json(json.dumps(doc), "m.onnx")
