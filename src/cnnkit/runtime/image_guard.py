"""Bounds on the work an image file may ask of its decoder, beyond its pixel count: checked from the file's
structure before a pixel is decoded, and a deadline that stops a decode still running when its time is up.
Torch-free; no Pillow.

A file's pixel count bounds its memory, not its CPU: a progressive JPEG may repeat a scan thousands of times
(each a few bytes, each a pass over every block), and a JPEG or PNG may carry a million empty segments, each
parsed in Python. Real files have a handful of each.
"""

from __future__ import annotations

import io
import re
import time

from cnnkit.errors import InputError

# Pillow plugins an image may be decoded by: what users have (EPS, PSD, ICNS and the rest stay out; EPS would run
# Ghostscript where it is installed)
FORMATS = ("PNG", "JPEG", "PPM", "BMP", "TIFF", "WEBP", "GIF")
MAX_JPEG_SCANS = 100  # libjpeg's progressive modes write about 10; a scan costs a pass over the whole image
MAX_JPEG_SEGMENTS = 1000  # markers before the frame data (APPn, DQT, DHT, ...): real files carry tens
MAX_PNG_CHUNKS = 4096  # chunks other than image data (IDAT, fdAT), which Pillow parses one by one in Python
DECODE_BLOCK = 16 * 1024  # bytes handed to the decoder at a time: how often the deadline is looked at

_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker after entropy-coded data (not stuffing/RSTn)
_JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # markers with no length field
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DecodeOverrun(InputError):
    """The decode was stopped: its time budget ran out."""


def check_structure(data: bytes, name: str) -> None:
    """Refuse (InputError) a JPEG or PNG whose structure asks for more decode work than any real image does."""
    if data[:2] == b"\xff\xd8":
        _check_jpeg(data, name)
    elif data[:8] == _PNG_SIGNATURE:
        _check_png(data, name)


def _check_jpeg(data: bytes, name: str) -> None:
    pos, segments, scans, n = 2, 0, 0, len(data)
    while pos + 1 < n:
        found = _JPEG_MARKER.search(data, pos)  # also skips fill bytes (0xFF 0xFF ...) before a marker
        if found is None:
            return
        marker, pos = data[found.start() + 1], found.start() + 2
        if marker == 0xD9:  # end of image
            return
        if marker in _JPEG_STANDALONE:
            continue
        if pos + 2 > n:
            return
        pos += (data[pos] << 8) | data[pos + 1]
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise InputError(f"{name}: JPEG with more than {MAX_JPEG_SCANS} scans; refused (decode cost)")
        else:
            segments += 1
            if segments > MAX_JPEG_SEGMENTS:
                raise InputError(f"{name}: JPEG with more than {MAX_JPEG_SEGMENTS} segments; refused (decode cost)")


def _check_png(data: bytes, name: str) -> None:
    pos, chunks, n = 8, 0, len(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IEND":
            return
        if kind not in (b"IDAT", b"fdAT"):
            chunks += 1
            if chunks > MAX_PNG_CHUNKS:
                raise InputError(f"{name}: PNG with more than {MAX_PNG_CHUNKS} metadata chunks; refused (decode cost)")
        pos += 12 + length


class DeadlineReader(io.BytesIO):
    """The file's bytes for the decoder; a read after `deadline` (time.monotonic) raises DecodeOverrun, so a
    decode still running when its budget is spent stops at its next block instead of running on."""

    def __init__(self, data: bytes, deadline: float | None, name: str):
        super().__init__(data)
        self.deadline = deadline
        self.label = name

    def read(self, size: int | None = -1, /) -> bytes:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DecodeOverrun(f"{self.label}: decoding stopped: it ran past the request's time budget")
        return super().read(size)
