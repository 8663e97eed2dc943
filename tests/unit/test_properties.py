"""Property tests for the parsers that face untrusted bytes: whatever comes in, the answer is a result or cnnkit's own
one-line error, never another exception."""

import io
import json
import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnkit import contract
from cnnkit.contract import ModelInfo
from cnnkit.data.idx import read_idx
from cnnkit.errors import CheckpointError, DataError, InputError, ModelFileError, RequestError
from cnnkit.runtime import images
from cnnkit.runtime.inputs import InputSpec
from cnnkit.serve import v2
from cnnkit.serve.reading import top_k
from cnnkit.spec import CONFIG_BOUNDS, CheckpointMeta, ModelConfig, class_names_problem

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def idx_bytes():
    header = st.tuples(st.integers(0, 255), st.integers(0, 4)).map(lambda t: bytes([0, 0, 0x08, t[1]]))
    dims = st.lists(st.integers(0, 2**32 - 1), max_size=4).map(lambda d: b"".join(x.to_bytes(4, "big") for x in d))
    return st.one_of(st.binary(max_size=64), st.tuples(header, dims, st.binary(max_size=64)).map(b"".join))


@SETTINGS
@given(idx_bytes())
# a zero dimension beside huge ones: numpy refused the shape itself (ValueError), found by this test
@example(raw=b"\x00\x00\x08\x04" + b"".join(d.to_bytes(4, "big") for d in (0, 256, 2**24, 2**31)))
def test_idx_parser_returns_an_array_or_a_data_error(raw):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x-idx1-ubyte"
        path.write_bytes(raw)
        try:
            arr = read_idx(path)
        except DataError:
            return
        assert arr.dtype == np.uint8


def _image(mode: str, w: int, h: int, fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "F":
        im = Image.fromarray(rng.random((h, w), dtype=np.float32), mode="F")
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    elif mode == "RGBA":
        im = Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), mode="RGBA")
    else:
        im = Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="TIFF" if mode in ("F", "CMYK") else fmt)  # PNG holds neither
    return buf.getvalue()


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=256),
        st.builds(
            _image,
            st.sampled_from(["L", "1", "P", "RGB", "RGBA", "I;16", "F", "CMYK"]),
            st.integers(1, 64),
            st.integers(1, 64),
            st.sampled_from(["PNG", "TIFF"]),
            st.integers(0, 1000),
        ),
    )
)
def test_image_decoder_returns_28x28_uint8_or_an_input_error(data):
    try:
        d = images.decode(data)
    except InputError:
        return
    assert d.pixels.shape == (1, 28, 28) and d.pixels.dtype == np.uint8


def _stub_classifier():
    info = SimpleNamespace(output_name="logits", num_classes=10, classes=tuple("0123456789"), version="x")
    return SimpleNamespace(input_spec=InputSpec(name="images", channels=1, height=28, width=28), info=info)


@SETTINGS
@given(json_values, st.one_of(st.none(), st.text(max_size=6)), st.binary(max_size=32))
def test_v2_request_parser_accepts_or_says_why(doc, header_length, tail):
    body = json.dumps(doc).encode() + tail
    try:
        req = v2.parse_infer(body, header_length, _stub_classifier(), max_images=8)
    except RequestError as exc:
        assert exc.status == 400 and str(exc)
        return
    assert req.images.dtype == np.uint8 and req.images.shape[1:] == (1, 28, 28)


@SETTINGS
@given(json_values)
def test_top_k_is_an_integer_in_range_or_a_400(value):
    try:
        k = top_k(value, 10, 3)
    except RequestError as exc:
        assert exc.status == 400
        return
    assert isinstance(k, int) and 1 <= k <= 10


def _valid_checkpoint_meta() -> dict:
    return CheckpointMeta(**_meta_kwargs()).to_dict()


def _with(doc: dict, path: str, value) -> dict:
    """`doc` (a deep copy) with the value at a dotted `path` replaced."""
    doc = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[last] = value
    return doc


MODEL_META_PATHS = ["format", "classes", "input.shape", "input.name", "normalization.mean", "normalization.std",
                    "output.name", "checkpoint", "variant", "model_version", "dataset"]  # fmt: skip


@SETTINGS
@given(st.sampled_from(MODEL_META_PATHS), json_values)
def test_model_metadata_with_any_field_changed_parses_to_usable_facts_or_says_why(path, value):
    valid = contract.build_metadata(CheckpointMeta(**_meta_kwargs()), "model.safetensors", "ab" * 32, {})
    doc = _with(valid, path, value)
    try:
        info = ModelInfo.from_json(json.dumps(doc), "m")
    except ModelFileError as exc:
        assert str(exc).startswith("m: ")
        return
    assert class_names_problem(list(info.classes)) is None and info.num_classes == len(info.classes)
    assert info.geometry.problem() is None and info.geometry.shape == (info.channels, info.image_size, info.image_size)
    assert all(math.isfinite(m) for m in info.mean) and all(math.isfinite(s) and s > 0 for s in info.std)


def _meta_kwargs() -> dict:
    return {"config": ModelConfig(), "mean": 0.13, "std": 0.31, "classes": tuple("0123456789"), "dataset": {}}


CHECKPOINT_PATHS = ["format", "config", "mean", "std", "classes", "dataset", "world_size",
                    *(f"config.{f}" for f in CONFIG_BOUNDS)]  # fmt: skip


@SETTINGS
@given(st.sampled_from(CHECKPOINT_PATHS), json_values)
def test_checkpoint_metadata_with_any_field_changed_rebuilds_a_sane_model_or_says_why(path, value):
    try:
        meta = CheckpointMeta.from_dict(_with(_valid_checkpoint_meta(), path, value), "c")
    except CheckpointError as exc:
        assert str(exc).startswith("c: ")
        return
    assert len(meta.classes) == meta.config.num_classes and class_names_problem(list(meta.classes)) is None
    assert all(0 <= m <= 1 for m in meta.mean) and all(0 < s <= 1 for s in meta.std)
    assert len(meta.mean) == len(meta.std) == meta.config.in_channels == meta.geometry.channels
    for name, (low, high) in CONFIG_BOUNDS.items():
        assert low <= getattr(meta.config, name) <= high


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA-white-strokes"])
def test_deep_and_transparent_images_decode_like_their_8_bit_twin(mode):
    from cnnkit.data.datasets import load_sample

    digit = load_sample().test_images[7, 0]  # light strokes on black, as MNIST
    if mode == "I;16":
        im = Image.fromarray(digit.astype(np.uint16) * 257)
    elif mode == "F":
        im = Image.fromarray(digit.astype(np.float32) / 255.0, mode="F")
    else:  # white strokes drawn on a fully transparent background
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., :3] = 255
        rgba[..., 3] = digit
        im = Image.fromarray(rgba, mode="RGBA")
    buf = io.BytesIO()
    im.save(buf, format="TIFF" if mode == "F" else "PNG")
    d = images.decode(buf.getvalue())
    assert d.warning is None and not d.inverted
    assert np.abs(d.pixels.astype(int) - digit.astype(int)).max() <= 1
    blank = io.BytesIO()
    Image.new("L", (28, 28), 0).save(blank, format="PNG")
    assert "blank" in images.decode(blank.getvalue()).warning
