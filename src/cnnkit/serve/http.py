"""uvicorn's fast HTTP parser (httptools) with two bounds applied before the app is reached.

- The request head: httptools buffers a request line and headers of any size, so a client could hold megabytes
  per connection. While a head is incomplete, data is fed to the parser in slices and counted; past the limit the
  connection gets a 431 and is closed.
- Its time: a head not complete within the deadline gets a 408 (slowloris holds a connection that long only);
  health probes are answered even when slow heads fill the connection limit. uvicorn's h11 parser gets the same
  deadline (`bounded_h11`).
- The bytes in flight: a request whose declared body does not fit them gets its 503 from its head. A flood of
  large uploads then costs the event loop one head each, not their bodies (benchmarks/results/serve_attacks.json).

(uvicorn's h11 parser bounds the head itself, but served fewer requests per second in the same run:
benchmarks/results/serve_load.json and serve_load_1client.json, mode "h11".)"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

SLICE = 8 * 1024
LINGER_S = 5.0  # a shed request's connection closes by then, whatever is left of its body
LINGER_BYTES = 64 * 1024  # of a shed request's body, taken unread; past it, the connection is closed
PROBES = frozenset({b"/healthz", b"/readyz", b"/v2/health/live", b"/v2/health/ready"})


def error(message: str) -> bytes:
    """The one JSON error shape, as the app writes it (compact)."""
    return json.dumps({"error": message}, separators=(",", ":")).encode()


BUSY = error("server busy: too many request bytes in flight; retry")


class Shedding(Protocol):
    def sheds(self, length: int, path: str) -> bool: ...


#: told each status (431, 408) the protocol answers itself, before a request reaches the app (for `/metrics`)
Refused = Callable[[int], None]


def path_of(url: bytes) -> bytes:
    """A request target's path, its query dropped."""
    return bytes(url).split(b"?", 1)[0]


def answer(transport: Any, status: bytes, body: bytes, close: bool = True) -> None:
    """A JSON answer written straight to the connection, which it closes (`close`) or leaves to the caller."""
    transport.write(
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    if close:
        transport.close()


class ShedFromTheHead:
    """The 503 for a request whose declared body does not fit the bytes in flight (`shedding` says), given when its
    head is complete. The protocol keeps feeding the parser; a shed request's body is counted and dropped."""

    shedding: Shedding | None = None
    headers: list[tuple[bytes, bytes]]
    url: bytes
    transport: Any
    loop: Any
    expect_100_continue: bool
    _shed_left: int | None = None  # a shed request: its body bytes still to come
    _shed_taken = 0

    def sheds(self) -> bool:
        if self.shedding is None:
            return False
        length = next((v for k, v in self.headers if k == b"content-length"), b"")
        if not (length.isdigit() and len(length) <= 20):
            return False  # no body, chunked or malformed: the app reads and bounds it
        if not self.shedding.sheds(int(length), path_of(self.url).decode("latin-1")):
            return False
        self._linger(int(length))
        return True

    def _linger(self, length: int) -> None:
        """The 503, then up to LINGER_BYTES of the body taken unread: a client that reads its answer only once it
        has sent its body gets the 503, not a connection reset. A larger body is cut off (the kernel resets the
        connection). A client that asked `Expect: 100-continue` has sent no body: closed at once."""
        self._shed_left, self._shed_taken = length, 0
        answer(self.transport, b"503 Service Unavailable", BUSY, close=self.expect_100_continue)
        if not self.transport.is_closing():
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

    def drop(self, data: bytes) -> None:
        """A shed request's body bytes, counted and dropped; the connection closes at its end or at the cap."""
        assert self._shed_left is not None
        self._shed_left -= len(data)
        self._shed_taken += len(data)
        if self._shed_left <= 0 or self._shed_taken > LINGER_BYTES:
            self.transport.close()


class HeadBounds:
    """A request head (request line and headers) must be complete within `head_timeout_s` of the connection's
    start or of its first byte, and within `max_head_bytes`; past either, a 408 or a 431 and the connection closes.
    A connection that trickles its head (slowloris), or sends nothing, holds its place for that long only."""

    head_timeout_s: float | None = None
    max_head_bytes: int  # set by the protocol factory, from ServeConfig.max_header_bytes
    on_refused: Refused | None = None
    transport: Any
    loop: Any
    _head_timer: Any = None
    _head_bytes = 0

    def refuse(self, status: bytes, message: str) -> None:
        """The protocol's own answer (431, 408), counted; the connection closes."""
        answer(self.transport, status, error(message))
        if self.on_refused is not None:
            self.on_refused(int(status[:3]))

    def arm(self) -> None:
        self.disarm()
        if self.head_timeout_s is not None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._expired)

    def disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.refuse(b"408 Request Timeout", f"request line and headers not received within {self.head_timeout_s} s")

    def feed_head(self, data: bytes, feed: Callable[[bytes], None], in_head: Callable[[], bool]) -> None:
        """`data` fed to the parser (`feed`) in slices while it is in a head (`in_head`), each counted; past the
        bound, a 431 and nothing more is fed. Once the head is complete, the rest goes in at once."""
        pos = 0
        while pos < len(data) and in_head() and not self.transport.is_closing():
            piece = data[pos : pos + SLICE]
            pos += len(piece)
            self._head_bytes += len(piece)
            if self._head_bytes > self.max_head_bytes + SLICE:
                message = f"request line and headers exceed {self.max_head_bytes} bytes"
                self.refuse(b"431 Request Header Fields Too Large", message)
                return
            feed(piece)
        if pos < len(data) and not self.transport.is_closing():
            feed(data[pos:])


class ProbesPastTheLimit:
    """A health probe is answered whatever holds uvicorn's connection limit (slow heads, say): a kubelet would
    restart a server that is alive."""

    url: bytes
    limit_concurrency: int | None

    @contextlib.contextmanager
    def probes_past_the_limit(self) -> Iterator[None]:
        if path_of(self.url) not in PROBES:
            yield
            return
        limit, self.limit_concurrency = self.limit_concurrency, None
        try:
            yield
        finally:
            self.limit_concurrency = limit


def bounded_httptools(
    max_head_bytes: int,
    shedding: Shedding | None = None,
    head_timeout_s: float | None = None,
    on_refused: Refused | None = None,
) -> type[Any]:
    """An httptools protocol class for uvicorn (`Config(http=...)`) that refuses request heads over
    `max_head_bytes` with a 431 and heads slower than `head_timeout_s` with a 408 (each told to `on_refused`),
    (given `shedding`) sheds a declared body that does not fit with a 503, and answers health probes even at the
    connection limit."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpTools(ShedFromTheHead, HeadBounds, ProbesPastTheLimit, HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            self._in_head, self._head_bytes = True, 0
            super().connection_made(transport)
            self.arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.arm()  # the next request's head has begun: it has its own time

        def on_headers_complete(self) -> None:
            self._in_head = False
            self.disarm()
            if not self.sheds():
                with self.probes_past_the_limit():
                    super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if self._shed_left is None:
                super().on_body(body)
            else:
                self.drop(body)

        def on_message_complete(self) -> None:
            if self._shed_left is None:
                self._in_head, self._head_bytes = True, 0  # what comes next is the next request's head
                super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            if self._shed_left is not None:
                self.drop(data)
                return
            self.feed_head(data, super().data_received, lambda: self._in_head)

    BoundedHttpTools.shedding = shedding
    BoundedHttpTools.head_timeout_s = head_timeout_s
    BoundedHttpTools.max_head_bytes = max_head_bytes
    BoundedHttpTools.on_refused = on_refused
    return BoundedHttpTools


def bounded_h11(
    max_head_bytes: int, head_timeout_s: float | None = None, on_refused: Refused | None = None
) -> type[Any]:
    """uvicorn's h11 protocol with the same bounds on the request head: over `max_head_bytes` a 431, slower than
    `head_timeout_s` (from the connection's start or the head's first byte) a 408, each told to `on_refused`.
    (h11's own `h11_max_incomplete_event_size` answers a plain-text 400: set it above this bound, as a backstop.)
    Shedding from the head and probes past the connection limit are httptools' only."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11(HeadBounds, H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._head_timer is None and self.conn.their_state is h11.IDLE:
                self.arm()  # the first byte of a head after a keep-alive pause: its own time
            self.feed_head(data, super().data_received, lambda: self.conn.their_state is h11.IDLE)
            if self.conn.their_state is not h11.IDLE:
                self.disarm()  # the head is complete (or the connection failed): not bounded any more
                self._head_bytes = 0

    BoundedH11.head_timeout_s = head_timeout_s
    BoundedH11.max_head_bytes = max_head_bytes
    BoundedH11.on_refused = on_refused
    return BoundedH11
