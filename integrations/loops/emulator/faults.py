"""Fault injection: make the next N matching API requests fail on purpose.

A ``FaultPlan`` is a queue of ``Fault`` entries. Each request under ``/api/v1`` takes the first
entry whose filters match it and spends one of its ``count``. The kinds are the failures a
client must survive: a 429, a 500, a slow answer, a connection dropped before the request is
handled, and one dropped after it was handled (the state changed but no answer arrived).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["API_PREFIX", "Fault", "FaultKind", "FaultPlan"]

#: Where the emulated Loops API lives; fault path filters are relative to it or absolute.
API_PREFIX: Final = "/api/v1"

_DEFAULT_DELAY: Final = 1.0


class FaultKind(enum.Enum):
    """What a fault does to the request it hits."""

    #: Answer 429 "Rate limit exceeded." with the rate-limit headers (remaining 0).
    RATE_LIMITED = "429"
    #: Answer 500 with a Loops-style error body.
    SERVER_ERROR = "500"
    #: Wait ``delay`` seconds, then handle the request normally.
    SLOW = "slow"
    #: Close the connection before handling the request: no state change, no answer.
    CUT = "cut"
    #: Handle the request (state changes), then close the connection halfway through the
    #: answer, so the client cannot tell whether it worked.
    CUT_AFTER = "cut_after"


@dataclass(slots=True)
class Fault:
    """One planned fault.

    - ``kind``: a ``FaultKind``
    - ``count``: how many matching requests it hits (default 1)
    - ``delay``: seconds to wait, for ``slow`` (default 1.0)
    - ``path``: only requests to this path, absolute (``/api/v1/lists``) or relative to the API
      (``/lists``); ``None`` matches every path
    - ``method``: only requests with this HTTP method; ``None`` matches any
    """

    kind: FaultKind
    count: int = 1
    delay: float = _DEFAULT_DELAY
    path: str | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a fault's count must be at least 1, got {self.count}")
        if self.delay < 0:
            raise ValueError(f"a fault's delay must be 0 seconds or more, got {self.delay}")
        if self.path is not None:
            if not self.path.startswith("/"):
                self.path = "/" + self.path
            if not self.path.startswith(API_PREFIX + "/"):
                self.path = API_PREFIX + self.path
        if self.method is not None:
            self.method = self.method.upper()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from the admin API's JSON; bad input is a ``ValueError`` that says why."""
        unknown = set(data) - {"kind", "count", "delay", "path", "method"}
        if unknown:
            raise ValueError(
                f"unknown fault field(s) {sorted(unknown)}; use kind, count, delay, path, method"
            )
        kinds = [k.value for k in FaultKind]
        try:
            kind = FaultKind(str(data.get("kind")))
        except ValueError:
            raise ValueError(
                f"fault kind must be one of {kinds}, got {data.get('kind')!r}"
            ) from None
        count = data.get("count", 1)
        delay = data.get("delay", _DEFAULT_DELAY)
        if not isinstance(count, int) or isinstance(count, bool):
            raise ValueError(f"fault count must be a whole number, got {count!r}")
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            raise ValueError(f"fault delay must be a number of seconds, got {delay!r}")
        path, method = data.get("path"), data.get("method")
        if path is not None and not isinstance(path, str):
            raise ValueError(
                f"fault path must be a string such as '/contacts/create', got {path!r}"
            )
        if method is not None and not isinstance(method, str):
            raise ValueError(f"fault method must be a string such as 'POST', got {method!r}")
        return cls(kind, count, float(delay), path, method)

    def matches(self, method: str, path: str) -> bool:
        return (self.path is None or self.path == path) and (
            self.method is None or self.method == method
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "count": self.count,
            "delay": self.delay,
            "path": self.path,
            "method": self.method,
        }


class FaultPlan:
    """The pending faults, oldest first. Not locked: the emulator state serialises access."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def __len__(self) -> int:
        return len(self._faults)

    def add(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """Spend one use of the first fault matching the request, if any (checked fast when
        nothing is planned, which is the common case)."""
        if not self._faults:
            return None
        for index, fault in enumerate(self._faults):
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count == 0:
                    del self._faults[index]
                return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self._faults]

    def clear(self) -> None:
        self._faults.clear()
