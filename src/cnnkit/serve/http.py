"""uvicorn's fast HTTP parser (httptools) with two bounds applied before the app is reached.

- The request head: httptools buffers a request line and headers of any size, so a client could hold megabytes
  per connection. While a head is incomplete, data is fed to the parser in slices and counted; past the limit the
  connection gets a 431 and is closed.
- The bytes in flight: a request whose declared body does not fit them gets its 503 from its head. A flood of
  large uploads then costs the event loop one head each, not their bodies (benchmarks/results/serve_attacks.json).

(uvicorn's h11 parser bounds the head itself, but served fewer requests per second in the same run:
benchmarks/results/serve_load.json and serve_load_1client.json, mode "h11".)"""

from __future__ import annotations

import json
from typing import Any, Protocol

SLICE = 8 * 1024
LINGER_S = 5.0  # a shed request's connection closes by then, whatever is left of its body
LINGER_BYTES = 64 * 1024  # of a shed request's body, taken unread; past it, the connection is closed
BUSY = json.dumps({"error": "server busy: too many request bytes in flight; retry"}).encode()


class Shedding(Protocol):
    def sheds(self, length: int, path: str) -> bool: ...


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
        path = bytes(self.url).split(b"?", 1)[0].decode("latin-1")
        if not self.shedding.sheds(int(length), path):
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


def bounded_httptools(max_head_bytes: int, shedding: Shedding | None = None) -> type[Any]:
    """An httptools protocol class for uvicorn (`Config(http=...)`) that refuses request heads over
    `max_head_bytes` with a 431, and (given `shedding`) sheds a declared body that does not fit with a 503."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpTools(ShedFromTheHead, HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            self._in_head, self._head_bytes = True, 0
            super().connection_made(transport)

        def on_headers_complete(self) -> None:
            self._in_head = False
            if not self.sheds():
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
            pos = 0
            while pos < len(data) and self._in_head and not self.transport.is_closing():
                piece = data[pos : pos + SLICE]
                pos += len(piece)
                self._head_bytes += len(piece)
                if self._head_bytes > max_head_bytes + SLICE:
                    body = json.dumps({"error": f"request line and headers exceed {max_head_bytes} bytes"})
                    answer(self.transport, b"431 Request Header Fields Too Large", body.encode())
                    return
                super().data_received(piece)
            if pos < len(data) and not self.transport.is_closing():
                super().data_received(data[pos:])

    BoundedHttpTools.shedding = shedding
    return BoundedHttpTools
