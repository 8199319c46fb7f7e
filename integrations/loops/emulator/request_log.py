"""The request log: what reached the emulated API and how it was answered.

Entries never hold an API key. The ``Authorization`` header is dropped and replaced by the
team the key belongs to and a short fingerprint of the key, so tests can tell keys apart
without the log becoming a place secrets leak from.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["RequestLog", "RequestRecord", "key_fingerprint"]


def key_fingerprint(key: str) -> str:
    """A short, stable stand-in for an API key: ``sha256:`` and 12 hex digits of its hash."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(slots=True)
class RequestRecord:
    """One request to ``/api/v1``.

    ``body`` is the parsed JSON when the body was JSON, else its text (``None`` when empty).
    ``status`` is ``None`` when a ``cut`` fault closed the connection before any answer;
    ``fault`` names the fault kind that hit the request, if any.
    """

    seq: int
    at: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    team: str | None
    key: str | None
    body: Any
    status: int | None
    fault: str | None
    duration_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "team": self.team,
            "key": self.key,
            "body": self.body,
            "status": self.status,
            "fault": self.fault,
            "durationMs": self.duration_ms,
        }


class RequestLog:
    """The last ``limit`` requests, oldest first. Not locked: the state serialises access.

    The bound keeps a long-running emulator (``luabridge emulator``) from growing without end.
    """

    def __init__(self, limit: int = 10_000) -> None:
        if limit < 1:
            raise ValueError(f"the request log needs room for at least 1 entry, got {limit}")
        self._entries: deque[RequestRecord] = deque(maxlen=limit)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def append(self, record: RequestRecord) -> None:
        self._entries.append(record)

    def entries(self) -> list[RequestRecord]:
        return list(self._entries)

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self._entries]

    def clear(self) -> None:
        self._entries.clear()
