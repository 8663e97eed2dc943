"""uvicorn's fast HTTP parser (httptools) with a bound on the request head: httptools buffers a request line and
headers of any size, so a client could hold megabytes per connection. While a head is incomplete, data is fed to
the parser in slices and counted; past the limit the connection gets a 431 and is closed.

(uvicorn's h11 parser bounds the head itself, but served fewer requests per second in the same run:
benchmarks/results/serve_load.json and serve_load_1client.json, mode "h11".)"""

from __future__ import annotations

import json
from typing import Any

SLICE = 8 * 1024


def bounded_httptools(max_head_bytes: int) -> type[Any]:
    """An httptools protocol class for uvicorn (`Config(http=...)`) that refuses request heads over
    `max_head_bytes` with a 431."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpTools(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            self._in_head, self._head_bytes = True, 0
            super().connection_made(transport)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head, self._head_bytes = True, 0  # what comes next is the next request's head
            super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            pos = 0
            while pos < len(data) and self._in_head and not self.transport.is_closing():
                piece = data[pos : pos + SLICE]
                pos += len(piece)
                self._head_bytes += len(piece)
                if self._head_bytes > max_head_bytes + SLICE:
                    self._refuse()
                    return
                super().data_received(piece)
            if pos < len(data) and not self.transport.is_closing():
                super().data_received(data[pos:])

        def _refuse(self) -> None:
            body = json.dumps({"error": f"request line and headers exceed {max_head_bytes} bytes"}).encode()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            self.transport.close()

    return BoundedHttpTools
