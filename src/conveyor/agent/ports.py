"""Internal ports for instances: free on loopback, outside the kernel's ephemeral range."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"
# Below Linux's ephemeral range (32768-60999), so an outgoing connection's local port
# never takes the port an instance is about to listen on.
PORT_RANGE = (20000, 32767)


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could listen on host:port now (as servers do, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError:
            return False
    return True
