"""Health and readiness on a port of their own (`--health-port`), answered by a thread of their own: what a kubelet
or a load balancer probes keeps answering within milliseconds while the main port's event loop is saturated by
uploads (a fresh connection to the main port waits behind them). The same answers as the main port's `/healthz`,
`/readyz` and `/v2/health/{live,ready}`, from the same `ServingState`."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cnnkit.serve.shutdown import ServingState


def _answers(state: ServingState, providers: list[str]) -> dict[str, tuple[int, dict[str, Any]]]:
    """The main port's answers, from the same state (`ServingState.readyz`, `v2_ready`)."""
    return {
        "/healthz": (200, {"status": "ok"}),
        "/readyz": state.readyz(providers),
        "/v2/health/live": (200, {"live": True}),
        "/v2/health/ready": state.v2_ready(),
    }


class HealthServer:
    """A threaded HTTP server on an already bound socket, answering health and readiness only."""

    def __init__(self, sock: socket.socket, state: ServingState, providers: list[str]):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 2  # a connection that sends nothing for this long is dropped

            def do_GET(self) -> None:
                status, body = _answers(state, providers).get(
                    self.path, (404, {"error": f"unknown path {self.path[:80]!r}"})
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # probes are not logged
                pass

        self.server = ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = sock
        self.server.daemon_threads = True
        self.server.timeout = 2  # a probe that sends nothing is dropped
        self._thread = threading.Thread(target=self.server.serve_forever, name="cnnkit-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.socket.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
