"""Health and readiness on a port of their own (`--health-port`), answered by a process of its own: what a kubelet
or a load balancer probes keeps answering within milliseconds while the server's event loop and decode threads are
saturated by uploads (a thread of the server's own would wait for its interpreter lock behind them).

The server's event loop sends its state (ready, draining) down a pipe every BEAT_S; the health process answers the
main port's `/healthz`, `/readyz` and `/v2/health/{live,ready}` from the last state it heard, and says the server is
not live once no beat has come for STALL_S (its event loop stalled, or the process stopped). The pipe's end is the
health process's end: it exits when the server does, however the server ends.

    python -m cnnkit.serve.health SOCKET_FD PIPE_FD PROVIDERS_JSON   (started by HealthProcess; stdlib only)
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cnnkit.serve.shutdown import ServingState

BEAT_S = 0.1  # how often the event loop says it is alive
STALL_S = 2.0  # no beat for this long: not live (a probe's usual timeout is 1 s, its period 10 s)


def _answers(state: ServingState, providers: list[str], stalled: float | None) -> dict[str, tuple[int, dict[str, Any]]]:
    """The main port's answers, from the same state (`ServingState.readyz`, `v2_ready`); a stalled server is
    neither live nor ready."""
    if stalled is not None:
        down = {"status": "stalled", "seconds_since_beat": round(stalled, 2)}
        return {p: (503, down) for p in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")}
    return {
        "/healthz": (200, {"status": "ok"}),
        "/readyz": state.readyz(providers),
        "/v2/health/live": (200, {"live": True}),
        "/v2/health/ready": state.v2_ready(),
    }


class HealthProcess:
    """The health process on an already bound socket; `beating()` (a task on the server's event loop) feeds it."""

    def __init__(self, sock: socket.socket, state: ServingState, providers: list[str]):
        self.state = state
        self.port = int(sock.getsockname()[1])
        read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cnnkit.serve.health", str(sock.fileno()), str(read), json.dumps(providers)],
            pass_fds=(sock.fileno(), read),
            stdin=subprocess.DEVNULL,
        )
        os.close(read)
        sock.close()  # the health process has its own copy
        self.beat()

    def beat(self) -> None:
        message = json.dumps({"ready": self.state.ready, "draining": self.state.draining}) + "\n"
        try:
            os.write(self._write, message.encode())
        except (BlockingIOError, BrokenPipeError, OSError):
            pass  # a full pipe (the health process is behind) or a gone one: the next beat tries again

    async def beating(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(BEAT_S)

    def stop(self) -> None:
        try:
            os.close(self._write)  # end of the pipe: the health process exits
        except OSError:
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _serve(sock_fd: int, pipe_fd: int, providers: list[str]) -> None:
    """The health process: answer probes on the inherited socket until the pipe ends."""
    state = ServingState()
    last = [time.monotonic()]

    def listen_to_the_server() -> None:
        with os.fdopen(pipe_fd, "rb", buffering=0) as pipe:
            buffered = b""
            while chunk := pipe.read(4096):
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                if lines:
                    news = json.loads(lines[-1])
                    state.ready, state.draining = bool(news["ready"]), bool(news["draining"])
                    last[0] = time.monotonic()
        server.shutdown()  # the server is gone

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 2  # a connection that sends nothing for this long is dropped

        def do_GET(self) -> None:
            since = time.monotonic() - last[0]
            answers = _answers(state, providers, since if since > STALL_S else None)
            status, body = answers.get(self.path, (404, {"error": f"unknown path {self.path[:80]!r}"}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # probes are not logged
            pass

    sock = socket.socket(fileno=sock_fd)
    server = ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = True
    threading.Thread(target=listen_to_the_server, name="cnnkit-health-pipe", daemon=True).start()
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
