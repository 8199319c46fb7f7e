"""Frames between the parent and a worker process: a 4-byte big-endian length, then JSON.

Both sides of process isolation use these helpers (``luabridge.pool`` in the parent,
``luabridge.worker`` in the child).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

__all__ = [
    "MAX_FRAME",
    "Closed",
    "FrameTimeout",
    "decode",
    "encode",
    "recv",
    "recv_bytes",
    "send",
    "send_encoded",
]

_HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024


class Closed(Exception):
    """The other end closed the socket."""


class FrameTimeout(Exception):
    """No frame arrived before the deadline."""


def encode(message: dict[str, Any]) -> bytes:
    """The frame of ``message``; ``ValueError`` or ``TypeError`` if it is not plain JSON."""
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return _HEADER.pack(len(data)) + data


def send_encoded(sock: socket.socket, frame: bytes) -> None:
    sock.sendall(frame)


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    chunks = []
    while n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameTimeout
            sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(n, 1 << 20))
        except TimeoutError as exc:
            raise FrameTimeout from exc
        except OSError as exc:
            raise Closed from exc
        if not chunk:
            raise Closed
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_bytes(sock: socket.socket, deadline: float | None = None) -> bytes:
    """The body of the next frame, not yet decoded."""
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    if size > MAX_FRAME:
        raise Closed
    return _recv_exact(sock, size, deadline)


def decode(body: bytes) -> dict[str, Any]:
    message = json.loads(body)
    if not isinstance(message, dict):
        raise Closed
    return message


def recv(sock: socket.socket, deadline: float | None = None) -> dict[str, Any]:
    return decode(recv_bytes(sock, deadline))
