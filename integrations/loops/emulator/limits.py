"""Per-team counters: the fixed-window rate limiter and the idempotency-key store.

Both are plain objects with an injectable clock; the owning ``Team`` serialises access, so
neither takes a lock of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

__all__ = ["IDEMPOTENCY_TTL", "MAX_IDEMPOTENCY_KEY", "IdempotencyStore", "RateWindow"]

#: How long Loops remembers an ``Idempotency-Key``: 24 hours.
IDEMPOTENCY_TTL: Final = 24 * 60 * 60.0

#: The longest ``Idempotency-Key`` Loops accepts.
MAX_IDEMPOTENCY_KEY: Final = 100


class RateWindow:
    """A fixed one-second window counting one team's requests.

    A window opens with the first request after the previous one closed and admits ``limit``
    requests; the rest of that second is refused. Loops documents a per-team limit but not its
    algorithm; a fixed window is the simplest reading and never refuses a client that keeps
    to ``limit`` requests in any one-second span.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._opened = float("-inf")
        self._count = 0

    def take(self, limit: int) -> tuple[bool, int]:
        """Count one request: ``(admitted, remaining)`` for the current window."""
        now = self._clock()
        if now - self._opened >= 1.0:
            self._opened = now
            self._count = 0
        if self._count >= limit:
            return False, 0
        self._count += 1
        return True, limit - self._count

    def clear(self) -> None:
        self._opened = float("-inf")
        self._count = 0


class IdempotencyStore:
    """The ``Idempotency-Key`` values a team used successfully in the last ``ttl`` seconds.

    Keys are compared as raw strings, with no regard to the endpoint or the body: the
    reference implies any reuse within the window is a conflict.
    """

    def __init__(self, clock: Callable[[], float] = time.time, ttl: float = IDEMPOTENCY_TTL):
        self._clock = clock
        self._ttl = ttl
        # Insertion order is expiry order while the clock only moves forward, so expired keys
        # can be dropped from the front.
        self._expiry: dict[str, float] = {}

    def __len__(self) -> int:
        self._purge()
        return len(self._expiry)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        expiry = self._expiry.get(key)
        return expiry is not None and expiry > self._clock()

    def remember(self, key: str) -> None:
        self._purge()
        self._expiry.pop(key, None)
        self._expiry[key] = self._clock() + self._ttl

    def keys(self) -> list[str]:
        self._purge()
        return list(self._expiry)

    def clear(self) -> None:
        self._expiry.clear()

    def _purge(self) -> None:
        now = self._clock()
        while self._expiry:
            key, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                break
            del self._expiry[key]
