"""Per-run resource limits, their documented defaults, and per-run overrides.

| limit | default | ends the run with |
|---|---|---|
| ``timeout`` | 5 s wall clock | ``TimeoutError`` |
| ``instructions`` | 500,000,000 VM instructions (1-2 s of Lua) | ``InstructionLimitError`` |
| ``memory`` | 64 MiB of Lua heap | ``MemoryError`` |
| ``output_bytes`` | 1 MiB of ``print`` output | ``OutputLimitError`` |
| ``calls`` | 100 action calls | ``CallLimitError`` |
| ``result_bytes`` | 1 MiB of returned value (as JSON) | ``ResultLimitError`` |
| ``argument_bytes`` | 1 MiB of parameters per action call | ``ValidationError`` (raised in Lua) |

With process isolation the worker is killed half a second after ``timeout`` if the script is stuck
where the VM's hook cannot reach it (inside one long C call such as a pathological
``string.find``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from luabridge.errors import ConfigError

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run; every field has a default (see the module table)."""

    timeout: float = 5.0
    instructions: int = 500_000_000
    memory: int = 64 * 1024 * 1024
    output_bytes: int = 1024 * 1024
    calls: int = 100
    result_bytes: int = 1024 * 1024
    argument_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"limits.{f.name} must be a number, got {value!r}")
            if value <= 0:
                raise ConfigError(f"limits.{f.name} must be greater than 0, got {value!r}")
        if self.memory < 1024 * 1024:
            raise ConfigError(f"limits.memory must be at least 1 MiB (1048576), got {self.memory}")

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
                f"unknown limit(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_LIMITS = Limits()
