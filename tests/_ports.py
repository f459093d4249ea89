"""A free TCP port for torchrun's rendezvous, so concurrent test runs (or a leftover process) never collide."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS just reported free on localhost (bound and released; torchrun binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
