"""Per-run resource limits, their documented defaults and ranges, and per-run overrides.

| limit | default | range | ends the run with |
|---|---|---|---|
| ``timeout`` | 5 s wall clock | over 0 to 86400 s | ``TimeoutError`` |
| ``instructions`` | 500,000,000 (1-2 s of Lua) | 1 to 10^12 | ``InstructionLimitError`` |
| ``memory`` | 64 MiB of Lua heap | 1 MiB to 1 TiB | ``MemoryError`` |
| ``output_bytes`` | 1 MiB of ``print`` output | 1 B to 256 MiB | ``OutputLimitError`` |
| ``calls`` | 100 action calls | 1 to 100,000 | ``CallLimitError`` |
| ``result_bytes`` | 1 MiB of returned JSON | 1 B to 256 MiB | ``ResultLimitError`` |
| ``argument_bytes`` | 1 MiB of JSON per call | 1 B to 256 MiB | ``ValidationError`` (in Lua) |
| ``source_bytes`` | 1 MiB of script (UTF-8) | 1 B to 256 MiB | ``SourceLimitError`` |
| ``queue_timeout`` | 10 s for a free worker | over 0 to 86400 s | ``QueueTimeoutError`` |

Every value is checked where it enters (``Limits(...)``, ``merged``, ``[limits]`` of the file,
CLI flags): a number of the right kind (a whole number for the counts and sizes; a finite one
for the times), inside its range, else a ``ConfigError`` that names the limit and its range.

With process isolation the worker is killed half a second after ``timeout`` if the script is stuck
where the VM's hook cannot reach it (inside one long C call such as a pathological
``string.find``). ``queue_timeout`` bounds the wait for a free worker before the run starts (it
does not count against ``timeout``); in-process runs never wait.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from luabridge.errors import ConfigError

__all__ = ["DEFAULT_LIMITS", "LIMIT_RANGES", "Limits", "describe_range"]

_MIB: Final = 1024 * 1024
_DAY: Final = 86400.0

#: Each limit's kind (``"seconds"``: a finite number; ``"count"``/``"bytes"``: a whole number)
#: and its inclusive range; a time's lower bound is exclusive (it must be over 0).
LIMIT_RANGES: Final[dict[str, tuple[str, float, float]]] = {
    "timeout": ("seconds", 0.0, _DAY),
    "instructions": ("count", 1, 10**12),
    "memory": ("bytes", _MIB, 1 << 40),
    "output_bytes": ("bytes", 1, 256 * _MIB),
    "calls": ("count", 1, 100_000),
    "result_bytes": ("bytes", 1, 256 * _MIB),
    "argument_bytes": ("bytes", 1, 256 * _MIB),
    "source_bytes": ("bytes", 1, 256 * _MIB),
    "queue_timeout": ("seconds", 0.0, _DAY),
}


def _size(n: float) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", _MIB)):
        if n >= scale and n % scale == 0:
            return f"{int(n // scale)} {unit}"
    return f"{int(n)} bytes"


def describe_range(name: str) -> str:
    """The range of limit ``name`` in words, as error messages and docs give it."""
    kind, low, high = LIMIT_RANGES[name]
    if kind == "seconds":
        return f"a number of seconds over 0 and at most {high:g}"
    low_text = f"{int(low)} ({_size(low)})" if low >= _MIB else str(int(low))
    if kind == "bytes":
        return f"a whole number of bytes from {low_text} to {int(high)} ({_size(high)})"
    return f"a whole number from {low_text} to {int(high)}"


def _checked(name: str, value: Any) -> int | float:
    """``value`` as limit ``name`` takes it, or ``ConfigError`` naming the limit and its range."""
    kind, low, high = LIMIT_RANGES[name]
    where = f"limits.{name} must be {describe_range(name)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}, got {value!r}")
    if kind == "seconds":
        if not math.isfinite(value) or not low < value <= high:
            raise ConfigError(f"{where}, got {value!r}")
        return float(value)
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise ConfigError(f"{where}, got {value!r}")
        value = int(value)
    if not low <= value <= high:
        raise ConfigError(f"{where}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run; every field has a default and a range (see the module table).

    Whole-number limits given as floats with no fraction (``100.0``) are taken as integers;
    anything else outside the documented kind and range raises ``ConfigError``.
    """

    timeout: float = 5.0
    instructions: int = 500_000_000
    memory: int = 64 * _MIB
    output_bytes: int = _MIB
    calls: int = 100
    result_bytes: int = _MIB
    argument_bytes: int = _MIB
    source_bytes: int = _MIB
    queue_timeout: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            # Frozen: the normalised value (an int for 100.0) goes in through object.__setattr__.
            object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name)))

    def merged(self, overrides: Limits | dict[str, Any] | None) -> Limits:
        """These limits with ``overrides`` applied (a ``Limits`` replaces them entirely)."""
        if overrides is None:
            return self
        if isinstance(overrides, Limits):
            return overrides
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(
                f"unknown limit(s) {', '.join(sorted(map(str, unknown)))}; "
                f"known: {', '.join(sorted(known))}"
            )
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_LIMITS = Limits()
