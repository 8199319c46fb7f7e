"""Redaction of secrets by value from everything that leaves the bridge.

A :class:`Redactor` knows the secret strings (API keys) and replaces every occurrence with
``[REDACTED]`` in text, and in every string inside JSON-like data (keys included). We redact by
value rather than by field name because secrets can surface anywhere: an error body that echoes a
header, a script that prints a value it was handed, a repr.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
#: Types that hold no text: kept as they are.
_KEPT = frozenset((int, float, bool, type(None)))


class Redactor:
    """Replaces known secret values; secrets shorter than 4 characters are ignored."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in values)) if values else None

    def __repr__(self) -> str:
        return "Redactor(<secrets hidden>)"

    def text(self, value: str) -> str:
        if self._pattern is None or not value:
            return value
        return self._pattern.sub(REDACTED, value)

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with every string redacted."""
        if self._pattern is None:
            return value
        return self._data(value, self._pattern.sub)

    def _data(self, value: Any, sub: Any) -> Any:
        # Every action call redacts its parameters and its result: the exact JSON types are
        # tested first, and numbers, booleans and None are kept without a call each.
        t = type(value)
        if t is str:
            return sub(REDACTED, value)
        if t is dict:
            return {
                (self.text(k) if isinstance(k, str) else k): (
                    v if type(v) in _KEPT else self._data(v, sub)
                )
                for k, v in value.items()
            }
        if t is list or t is tuple:
            return [v if type(v) in _KEPT else self._data(v, sub) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                self.text(k) if isinstance(k, str) else k: self._data(v, sub)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._data(v, sub) for v in value]
        return value
