"""The sockets `cnnkit serve` listens on, bound before the server starts, so a port in use (or a host that is not
this machine's) is one line naming it instead of a server that starts and dies."""

from __future__ import annotations

import socket

from cnnkit.errors import CnnkitError


def _family(host: str, port: int) -> socket.AddressFamily:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise CnnkitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def bind(host: str, port: int, what: str = "HTTP") -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: one the kernel picks), or CnnkitError saying why not."""
    sock = socket.socket(_family(host, port), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts reuse the port
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CnnkitError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def check_free(host: str, port: int, what: str) -> None:
    """Refuse now a port another process listens on (a server started later would fail there)."""
    if port:
        bind(host, port, what).close()
