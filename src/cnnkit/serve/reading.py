"""Reading a /v1 request within its bounds: the body while it streams (size, bytes in flight), the content type,
the query, and the images (files, base64 or pixel lists) decoded in a bounded pool off the event loop.

Every refusal is a RequestError carrying its HTTP status."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from cnnkit.errors import RequestError
from cnnkit.runtime import Classifier
from cnnkit.runtime import images as imgs
from cnnkit.serve.config import Limits
from cnnkit.serve.elements import flat_numbers

log = logging.getLogger("uvicorn.error").getChild("cnnkit")  # printed where uvicorn prints

INVERT = {"auto": None, "true": True, "1": True, "false": False, "0": False}
CONTENT_TYPES = ("multipart/form-data", "application/json", "application/octet-stream")


class InFlight:
    """Request-body bytes held in memory by all requests together, counted from the first byte read until the
    request's body is no longer needed (decoded or parsed); beyond `limit`, a new body gets a 503."""

    def __init__(self, limit: int, max_body: int | None = None, on_shed: Callable[[str], None] | None = None):
        self.limit = limit
        self.bytes = 0
        self.max_body = limit if max_body is None else max_body
        self.on_shed = on_shed

    def sheds(self, length: int, path: str) -> bool:
        """Whether a body of `length` declared bytes is refused now, from its request's headers alone: a 503 before
        a byte of it is read, so a flood of large uploads costs the event loop a head each, not its bodies. A body
        over the largest any endpoint takes is left to the endpoint's 413."""
        if length > self.max_body or self.bytes + length <= self.limit:
            return False
        if self.on_shed is not None:
            self.on_shed(path)
        return True

    @contextlib.contextmanager
    def ticket(self) -> Iterator[Ticket]:
        """One request's share, given back when the block ends."""
        ticket = Ticket(self)
        try:
            yield ticket
        finally:
            self.bytes -= ticket.bytes
            ticket.bytes = 0


class Ticket:
    def __init__(self, inflight: InFlight):
        self.inflight = inflight
        self.bytes = 0

    def take(self, n: int) -> None:
        if self.inflight.bytes + n > self.inflight.limit:
            raise RequestError("server busy: too many request bytes in flight; retry", 503)
        self.inflight.bytes += n
        self.bytes += n


class PixelBudget:
    """The pixels one request's image files may still decode to (each file also capped on its own)."""

    def __init__(self, request: int, per_image: int, deadline: float | None = None):
        self.left = request
        self.per_image = per_image
        self.deadline = deadline  # time.monotonic() when the request's decode budget runs out

    def decode(self, data: bytes, clf: Classifier, invert: bool | None, name: str) -> np.ndarray:
        """One image file, refused from its header when it is over what is left or over the per-image cap, and
        stopped when the request's time is up."""
        decoded = imgs.decode(
            data,
            clf.info.geometry,
            invert,
            name=name,
            max_pixels=min(self.left, self.per_image),
            deadline=self.deadline,
        )
        self.left -= decoded.original_size[0] * decoded.original_size[1]
        return decoded.pixels


async def read_body(request: Request, limit: int, ticket: Ticket | None = None) -> bytes:
    """The request body, at most `limit` bytes whatever the framing (Content-Length or chunked): the limit is
    enforced while it streams in, so an oversized upload is refused without being stored. Its bytes count on
    `ticket` (the server's bytes in flight) until the caller's ticket block ends."""
    declared = request.headers.get("content-length")
    length = int(declared) if declared and declared.isascii() and declared.isdigit() else None
    if length is not None and length > limit:
        raise RequestError(f"body of {length} bytes exceeds the {limit}-byte limit", 413)
    if ticket is not None and length is not None:
        ticket.take(length)  # the whole declared body, before a byte of it is read (the parser holds it to that)
    chunks, size = [], 0
    async for chunk in _stream(request):
        size += len(chunk)
        if size > limit:
            raise RequestError(f"body exceeds the {limit}-byte limit", 413)
        if ticket is not None and length is None:
            ticket.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


async def _stream(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks; a client that goes away mid-body is one log line and a 499 (nobody reads the answer)."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s disconnected before sending its whole request body", client)
        raise RequestError("client disconnected", 499) from None


def without_frames(exc: BaseException) -> BaseException:
    """`exc` with its traceback (and those of the exceptions chained to it) dropped: a refusal keeps no frame
    alive, so nothing a refused request held (its body, a half-built array) waits for the garbage collector."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        cur.__traceback__ = None
        cur = cur.__cause__ or cur.__context__
    exc.__context__ = exc.__cause__ = None
    return exc


def top_k(value: Any, num_classes: int, default: int) -> int:
    """top_k as given (query string or JSON): an integer 1..num_classes, nothing coerced; not given, the default
    or every class, whichever is fewer (a two-class model answers a plain request)."""
    if value is None:
        return max(1, min(default, num_classes))
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 6:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= num_classes:
        shown = json.dumps(value)[:30] if not isinstance(value, str) else repr(value[:30])
        raise RequestError(f"top_k must be an integer 1..{num_classes}, got {shown}")
    return value


def _json_image(item: Any, clf: Classifier, invert: bool | None, index: int, budget: PixelBudget) -> np.ndarray:
    """A JSON image: base64 of an image file (a string, or {"b64": ...}), or nested pixel lists."""
    if isinstance(item, dict):
        item = item.get("b64", item.get("pixels"))
    if isinstance(item, str):
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"images[{index}]: not valid base64") from None
        return budget.decode(data, clf, invert, f"images[{index}]")
    if isinstance(item, list):
        spec = clf.input_spec
        # at most one image's numbers, checked one by one before numpy sees the list
        values = flat_numbers(item, spec.channels * spec.height * spec.width, 4, f"images[{index}]", integers=False)
        try:
            arr = np.asarray(item, dtype=np.float64) if any(isinstance(v, float) for v in values) else np.asarray(item)
        except (ValueError, TypeError, OverflowError):
            raise RequestError(f"images[{index}]: pixel rows are ragged or not numbers") from None
        batch = clf.as_batch(arr)
        if len(batch) != 1:
            raise RequestError(f"images[{index}]: holds {len(batch)} images; send each as its own item")
        pixels: np.ndarray = batch[0]
        return pixels
    raise RequestError(f"images[{index}]: expected a base64 string or a list of pixel rows")


def _replay(body: bytes) -> Any:
    """An ASGI receive that hands over an already-read body (to parse multipart from bytes held in memory)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _multipart_files(request: Request, body: bytes, limits: Limits) -> list[tuple[str, bytes]]:
    """The file parts of a multipart body held in memory, as (name, bytes)."""
    replay = Request(request.scope, receive=_replay(body))
    try:
        form = await replay.form(max_files=limits.max_images, max_fields=16, max_part_size=limits.max_body_bytes)
    except HTTPException as exc:  # the multipart parser's complaint (no boundary, too many files, ...)
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        if "Too many files" in str(exc.detail):  # a count over a limit, as --max-images is everywhere else: 413
            detail = f"more than {limits.max_images} files in one request; the limit is {limits.max_images}"
            raise RequestError(detail, 413) from None
        raise RequestError(f"multipart body: {exc.detail}", status) from None
    try:
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise RequestError("multipart body has no file parts")
        return [(f.filename or k, await f.read()) for k, f in files]
    finally:
        await form.close()


def _json_images(
    body: bytes, clf: Classifier, invert: bool | None, limits: Limits, budget: PixelBudget, k: Any
) -> tuple[list[np.ndarray], Any]:
    """A JSON body's images (decoded) and its top_k (else `k`, the query's), or RequestError."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"invalid JSON: {str(exc)[:120]}") from None
    if not isinstance(doc, dict) or not ("images" in doc or "image" in doc):
        raise RequestError('JSON body must be an object with "images": [...] or "image": ...')
    items = doc["images"] if "images" in doc else [doc["image"]]
    if not isinstance(items, list) or not items:
        raise RequestError('"images" must be a non-empty list')
    if len(items) > limits.max_images:
        raise RequestError(f"{len(items)} images in one request; the limit is {limits.max_images}", 413)
    return [_json_image(it, clf, invert, i, budget) for i, it in enumerate(items)], doc.get("top_k", k)


def _content_type(request: Request) -> str:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in CONTENT_TYPES and not ctype.startswith("image/"):
        raise RequestError(
            f"unsupported content type {ctype[:60] or '(none)'!r}; send an image (image/png, "
            "image/jpeg), multipart/form-data, or application/json",
            415,
        )
    return ctype


class DecodeLanes:
    """The decode pools: bodies of up to `small_bytes` (a digit's PNG, a thumbnail) in a lane of their own, so a
    small upload never waits behind a queue of large ones (benchmarks/results/serve_mixed.json); everything larger
    in `threads` threads. Each lane is a bounded thread pool; a small body's decode is bounded by the same pixel
    budget as any other."""

    def __init__(self, threads: int, small_bytes: int, initializer: Callable[[], None] | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.small_bytes = small_bytes
        self.large = ThreadPoolExecutor(threads, thread_name_prefix="cnnkit-decode", initializer=initializer)
        self.small = ThreadPoolExecutor(1, thread_name_prefix="cnnkit-decode-small", initializer=initializer)

    def for_body(self, size: int) -> Executor:
        return self.small if size <= self.small_bytes else self.large

    def shutdown(self) -> None:
        for pool in (self.small, self.large):
            pool.shutdown(wait=False, cancel_futures=True)


async def parse_request(
    request: Request, clf: Classifier, limits: Limits, ticket: Ticket | None = None, lanes: DecodeLanes | None = None
) -> tuple[np.ndarray, int]:
    """Request -> (uint8 batch [N,C,H,W], top_k). Raises RequestError with the HTTP status to answer.

    The body is read first (bounded); decoding, the CPU-heavy part, runs in a decode lane (a bounded thread pool,
    chosen by the body's size), so the event loop keeps answering other requests, /healthz included, meanwhile.
    """
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + limits.decode_budget_s
    ctype = _content_type(request)
    k: Any = request.query_params.get("top_k")
    invert_text = request.query_params.get("invert", "auto").lower()
    if invert_text not in INVERT:
        raise RequestError(f"invert must be one of {', '.join(INVERT)}, got {invert_text[:20]!r}")
    invert = INVERT[invert_text]
    body = await read_body(request, limits.max_body_bytes, ticket)
    pool = lanes.for_body(len(body)) if lanes is not None else None
    budget = PixelBudget(limits.max_request_pixels, limits.max_image_pixels, deadline)

    def decode_all(items: list[tuple[str, bytes]]) -> list[np.ndarray]:
        return [budget.decode(data, clf, invert, name) for name, data in items]

    if ctype == "multipart/form-data":
        items = await _multipart_files(request, body, limits)
        pixels = await loop.run_in_executor(pool, decode_all, items)
    elif ctype == "application/json":
        pixels, k = await loop.run_in_executor(pool, _json_images, body, clf, invert, limits, budget, k)
    else:
        pixels = await loop.run_in_executor(pool, decode_all, [("body", body)])
    if len(pixels) > limits.max_images:
        raise RequestError(f"{len(pixels)} images in one request; the limit is {limits.max_images}", 413)
    chosen = top_k(k, clf.info.num_classes, limits.top_k)
    return clf.as_batch(np.stack([p.reshape(clf.input_spec.image_shape) for p in pixels])), chosen
