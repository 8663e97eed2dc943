"""Running the app under uvicorn and stopping it without losing a request: the drain before the shutdown, and
`Connection: close` while it lasts."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

LAST_ANSWERS_S = 0.5  # after the listener closes: time for each open connection's last request
ACCEPT_QUEUE_S = 0.2  # after the kernel stops queueing connections: time to accept the ones it queued


class ServingState:
    """Whether the server is ready (model loaded and warmed up) and whether it is draining before a shutdown."""

    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.heartbeat: Callable[[], Coroutine[Any, Any, None]] | None = None  # run on the event loop while it serves

    @property
    def accepting(self) -> bool:
        return self.ready and not self.draining

    def readyz(self, providers: list[str]) -> tuple[int, dict[str, Any]]:
        """`/readyz`: 200 while accepting (with what runs the model), else 503 saying whether starting or draining."""
        if self.accepting:
            return 200, {"status": "ready", "providers": providers}
        return 503, {"status": "draining" if self.draining else "starting"}

    def v2_ready(self) -> tuple[int, dict[str, Any]]:
        """KServe V2 `/v2/health/ready`: the model is loaded and warmed up."""
        return (200 if self.ready else 503), {"ready": self.ready}


class CloseWhileDraining:
    """ASGI middleware: while the server drains before a shutdown, every response says `Connection: close`, so
    keep-alive clients open a new connection for their next request instead of reusing one that is about to go."""

    def __init__(self, app: Any, state: ServingState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and self.state.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def draining_server(config: Any, state: ServingState, drain_s: float, sockets: list[Any] | None = None) -> Any:
    """A uvicorn Server whose first SIGTERM/SIGINT shuts down without dropping a request a client has sent:

    1. for `drain_s` seconds: /readyz answers 503 (load balancers stop sending), requests are still answered, each
       with `Connection: close`, so keep-alive clients reconnect for their next request;
    2. the kernel stops queueing new connections on `sockets` (their backlog set to 0: a client still connecting
       gets no handshake, so it sends nothing, and is refused once the socket closes), and for ACCEPT_QUEUE_S the
       event loop accepts those it had queued, which would otherwise be reset, requests and all, by the close;
    3. the listening socket closes, and the connections still open get LAST_ANSWERS_S to finish the request each
       may have in flight;
    4. uvicorn's graceful shutdown. A second signal skips to 4.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if drain_s <= 0 or state.draining:
                super().handle_exit(sig, frame)
                return
            state.draining = True
            loop = asyncio.get_running_loop()  # the handler runs on the event loop's (main) thread

            def stop_queueing() -> None:
                for sock in sockets or []:
                    try:
                        sock.listen(0)
                    except OSError:
                        pass  # already closed: nothing is queued on it
                loop.call_later(ACCEPT_QUEUE_S if sockets else 0, stop_accepting)

            def stop_accepting() -> None:
                for server in self.servers:
                    server.close()
                loop.call_later(LAST_ANSWERS_S, lambda: uvicorn.Server.handle_exit(self, sig, frame))

            loop.call_later(drain_s, stop_queueing)

    return Server(config)


def serve_until_signalled(config: Any, state: ServingState, drain_s: float, sockets: list[Any] | None = None) -> None:
    """Run uvicorn until SIGINT/SIGTERM, drain, shut down, and return (a graceful stop is a normal exit 0)."""
    # uvicorn handles SIGINT/SIGTERM (stop accepting, drain, shut down), then re-raises the signal with the
    # handlers it found. Finding no-op handlers makes a graceful stop end as a normal exit 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        draining_server(config, state, drain_s, sockets).run(sockets=sockets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
