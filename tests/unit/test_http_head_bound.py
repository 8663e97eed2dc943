"""uvicorn's httptools protocol with cnnkit's bound on the request head, fed bytes by hand (no socket, no server): a
head over the bound is a 431 and a closed connection, a head within it reaches the parser, and a body after a
normal head is not counted as head."""

import asyncio

import pytest

pytest.importorskip("httptools", reason="the serve extra's HTTP parser")
from uvicorn.config import Config
from uvicorn.server import ServerState

from cnnkit.serve.http import bounded_h11, bounded_httptools


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


class Shedding:
    """Sheds every body of more than `over` bytes, and records what it was asked."""

    def __init__(self, over: int):
        self.over, self.asked = over, []

    def sheds(self, length: int, path: str) -> bool:
        self.asked.append((length, path))
        return length > self.over


def _shedding_protocol(over: int):
    loop = asyncio.new_event_loop()
    config = Config(app=_app, lifespan="off", log_level="error")
    shedding = Shedding(over)
    proto = bounded_httptools(64 * 1024, shedding)(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = Transport()
    transport.can_write_eof = lambda: True
    transport.write_eof = lambda: None
    proto.connection_made(transport)
    return loop, proto, transport, shedding


def _post(length: int, *extra: bytes) -> bytes:
    return b"\r\n".join([b"POST /v1/predict?top_k=1 HTTP/1.1", b"Host: x", b"Content-Length: %d" % length, *extra])


def test_a_shed_body_is_answered_503_from_its_head_and_taken_unread_until_it_ends():
    from cnnkit.serve.http import LINGER_BYTES

    loop, proto, transport, shedding = _shedding_protocol(over=1000)
    proto.data_received(_post(5000) + b"\r\n\r\n" + b"x" * 2000)
    assert transport.written.startswith(b"HTTP/1.1 503") and b"in flight" in transport.written
    assert shedding.asked == [(5000, "/v1/predict")]
    assert not transport.closed  # the client may still be sending: it reads its 503 once it has sent the body
    proto.data_received(b"x" * 3000)
    assert transport.closed  # at the body's end
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.written.count(b"HTTP/1.1") == 1  # the app never ran

    loop, proto, transport, _ = _shedding_protocol(over=1000)
    proto.data_received(_post(10 * LINGER_BYTES) + b"\r\n\r\n")
    proto.data_received(b"x" * LINGER_BYTES)
    assert not transport.closed
    proto.data_received(b"x" * 1024)
    assert transport.closed  # past the cap: a large body is not read to its end

    loop, proto, transport, _ = _shedding_protocol(over=1000)
    proto.data_received(_post(5000, b"Expect: 100-continue") + b"\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 503") and transport.closed  # no body was sent: closed at once


def test_a_body_that_fits_reaches_the_app():
    loop, proto, transport, shedding = _shedding_protocol(over=1000)
    proto.data_received(_post(1000) + b"\r\n\r\n" + b"x" * 1000)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.written.startswith(b"HTTP/1.1 200") and shedding.asked == [(1000, "/v1/predict")]
    loop.close()


def _timed_protocol(
    head_timeout_s: float, limit_concurrency: int | None = None, parser: str = "httptools", refused=None
):
    loop = asyncio.new_event_loop()
    config = Config(app=_app, lifespan="off", log_level="error", limit_concurrency=limit_concurrency)
    state = ServerState()
    cls = (
        bounded_h11(64 * 1024, head_timeout_s, refused)
        if parser == "h11"
        else bounded_httptools(64 * 1024, None, head_timeout_s, refused)
    )
    proto = cls(config=config, server_state=state, app_state={}, _loop=loop)
    transport = Transport()
    proto.connection_made(transport)
    return loop, proto, transport, state


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_head_not_complete_within_its_deadline_is_a_408_and_the_connection_closes(parser):
    refused: list[int] = []
    loop, proto, transport, _ = _timed_protocol(0.05, parser=parser, refused=refused.append)
    proto.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a slow head: never finished
    loop.run_until_complete(asyncio.sleep(0.1))
    assert transport.written.startswith(b"HTTP/1.1 408") and b"within 0.05 s" in transport.written
    assert transport.closed and refused == [408]  # told, for /metrics
    loop.close()

    loop, proto, transport, _ = _timed_protocol(0.05, parser=parser)  # a connection that sends nothing: the same
    loop.run_until_complete(asyncio.sleep(0.1))
    assert transport.written.startswith(b"HTTP/1.1 408") and transport.closed
    loop.close()


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_complete_head_is_not_timed_while_the_app_answers_or_the_connection_idles(parser):
    loop, proto, transport, _ = _timed_protocol(0.05, parser=parser)
    proto.data_received(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_until_complete(asyncio.sleep(0.1))
    assert transport.written.startswith(b"HTTP/1.1 200") and b"408" not in transport.written
    assert not transport.closed  # kept alive: uvicorn's keep-alive timeout, not the head's, closes it
    loop.close()


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_head_over_the_bound_is_a_431_on_either_parser_and_told(parser):
    """h11's own limit answers a plain-text 400; cnnkit's bound answers first, the JSON 431 httptools gives."""
    refused: list[int] = []
    loop = asyncio.new_event_loop()
    config = Config(app=_app, lifespan="off", log_level="error", h11_max_incomplete_event_size=1024 + 4 * 8192)
    cls = (
        bounded_h11(1024, None, refused.append)
        if parser == "h11"
        else bounded_httptools(1024, None, None, refused.append)
    )
    proto = cls(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = Transport()
    proto.connection_made(transport)
    proto.data_received(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(20):  # a head trickled in, 4 KB at a time
        if not transport.closed:
            proto.data_received(b"a" * 4096)
    assert (
        transport.written.startswith(b"HTTP/1.1 431")
        and b'{"error":"request line and headers exceed 1024' in transport.written
    )
    assert transport.closed and refused == [431]
    loop.close()


def test_h11_a_body_past_the_head_bound_is_not_head_and_the_next_head_is_counted_afresh():
    loop = asyncio.new_event_loop()
    config = Config(app=_app, lifespan="off", log_level="error", h11_max_incomplete_event_size=1024 + 4 * 8192)
    proto = bounded_h11(1024)(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = Transport()
    proto.connection_made(transport)
    for _ in range(3):  # three requests on one connection, each head 700 bytes (over 1024 together) + a 50 KB body
        transport.written = b""
        head = b"POST /x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 620 + b"\r\nContent-Length: 50000\r\n\r\n"
        proto.data_received(head + b"x" * 50_000)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert transport.written.startswith(b"HTTP/1.1 200") and not transport.closed, transport.written[:80]
    loop.close()


@pytest.mark.parametrize("path", ["/healthz", "/v2/health/ready"])
def test_a_health_probe_is_answered_when_the_connection_limit_is_full(path):
    loop, proto, transport, state = _timed_protocol(10.0, limit_concurrency=1)
    state.connections.update({object(), object()})  # held by others: past the limit
    proto.data_received(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert transport.written.startswith(b"HTTP/1.1 200")
    assert proto.limit_concurrency == 1
    other = _timed_protocol(10.0, limit_concurrency=1)
    other[3].connections.update({object(), object()})
    other[1].data_received(b"GET /v1/model HTTP/1.1\r\nHost: x\r\n\r\n")
    other[0].run_until_complete(asyncio.sleep(0.01))
    assert other[2].written.startswith(b"HTTP/1.1 503")  # anything else: the limit holds
    loop.close()
    other[0].close()
