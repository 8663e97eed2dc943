"""Decode work bounded beyond pixels: scan and segment bombs refused from the file's structure, a decode past its
deadline stopped, formats outside the list never opened. Real files made here with Pillow."""

import io
import re
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnkit.errors import InputError
from cnnkit.runtime import image_guard
from cnnkit.runtime.images import decode


def _jpeg(side=64, progressive=True) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
        buf, "JPEG", progressive=progressive, quality=60
    )
    return buf.getvalue()


def _scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each SOS segment with its entropy-coded data."""
    starts = [m.start() for m in re.finditer(rb"\xff\xda", data)]
    ends = starts[1:] + [data.rindex(b"\xff\xd9")]
    return list(zip(starts, ends))


def test_real_jpegs_baseline_and_progressive_decode():
    for progressive in (False, True):
        d = decode(_jpeg(progressive=progressive), name="photo.jpg")
        assert d.pixels.shape == (1, 28, 28) and d.original_size == (64, 64)


def test_a_progressive_jpeg_repeating_a_scan_is_refused_before_decoding():
    data = _jpeg()
    start, end = min(_scans(data), key=lambda se: se[1] - se[0])
    bomb = data[:end] + data[start:end] * (image_guard.MAX_JPEG_SCANS + 1) + data[end:]
    Image.open(io.BytesIO(bomb)).load()  # Pillow itself decodes it (slowly, for a large image)
    with pytest.raises(InputError, match=r"^bomb.jpg: JPEG with more than 100 scans; refused"):
        decode(bomb, name="bomb.jpg")


def test_a_jpeg_of_empty_segments_is_refused():
    data = _jpeg(progressive=False)
    app = b"\xff\xe5\x00\x02" * (image_guard.MAX_JPEG_SEGMENTS + 1)  # empty APP5 segments
    with pytest.raises(InputError, match="more than 1000 segments"):
        decode(data[:2] + app + data[2:], name="app.jpg")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_a_png_of_a_million_tiny_chunks_is_refused_and_a_real_png_is_not():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    decode(data, name="ok.png")
    text = _png_chunk(b"tEXt", b"k\x00v") * (image_guard.MAX_PNG_CHUNKS + 1)
    with pytest.raises(InputError, match="more than 4096 metadata chunks"):
        decode(data[:33] + text + data[33:], name="chunks.png")


def test_a_decode_past_its_deadline_is_stopped_with_one_line():
    with pytest.raises(image_guard.DecodeOverrun, match=r"^late.jpg: decoding stopped"):
        decode(_jpeg(side=512), name="late.jpg", deadline=time.monotonic() - 1)


def test_formats_outside_the_list_are_not_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n"  # Pillow's EPS plugin runs Ghostscript
    with pytest.raises(InputError, match="not a recognised image"):
        decode(eps, name="x.eps")


def test_an_oversized_image_is_one_line_without_a_doubled_prefix():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(buf, "PNG")
    with pytest.raises(InputError) as info:
        decode(buf.getvalue(), name="big.png", max_pixels=100)
    assert str(info.value).startswith("big.png: 100x100 image") and str(info.value).count("big.png") == 1
