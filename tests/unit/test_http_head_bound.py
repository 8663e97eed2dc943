"""uvicorn's httptools protocol with cnnkit's bound on the request head, fed bytes by hand (no socket, no server): a
head over the bound is a 431 and a closed connection, a head within it reaches the parser, and a body after a
normal head is not counted as head."""

import asyncio

import pytest

pytest.importorskip("httptools", reason="the serve extra's HTTP parser")
from uvicorn.config import Config
from uvicorn.server import ServerState

from cnnkit.serve.http import bounded_httptools


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


def _protocol(limit: int):
    loop = asyncio.new_event_loop()
    config = Config(app=_app, lifespan="off", log_level="error")
    proto = bounded_httptools(limit)(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = Transport()
    proto.connection_made(transport)
    return loop, proto, transport


def test_a_head_over_the_bound_is_a_431_and_the_connection_closes():
    loop, proto, transport = _protocol(16 * 1024)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    proto.data_received(head)
    assert transport.written.startswith(b"HTTP/1.1 431") and b"exceed 16384 bytes" in transport.written
    assert transport.closed
    loop.close()


def test_a_head_within_the_bound_is_answered_and_its_body_is_not_head():
    loop, proto, transport = _protocol(1024)
    body = b"x" * 50_000  # far past the head bound, but it is a body
    proto.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n" + body)
    loop.run_until_complete(asyncio.sleep(0.01))  # the app's task answers
    assert transport.written.startswith(b"HTTP/1.1 200") and not transport.closed
    loop.close()
