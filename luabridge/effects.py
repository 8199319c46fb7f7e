"""The effect tags an action carries, from least to most dangerous.

Kept apart from ``luabridge.action`` (which re-exports both names) so that code checking an
``allow`` set, such as the command line's option parsing, does not import pydantic for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Literal

from luabridge.errors import ConfigError

__all__ = ["EFFECTS", "Effect", "parse_allow", "quote_name", "suggest"]

#: Names longer than this get no "did you mean": difflib's cost grows with the name's length
#: (a 900,000-character parameter name took over a second), and no real name is this long.
_SUGGEST_MAX = 100
#: Characters of a name that error messages show before cutting it.
_SHOWN_MAX = 80

Effect = Literal["read", "write", "destructive"]

#: Effect tags, from least to most dangerous, with what each means for policy.
EFFECTS: dict[str, str] = {
    "read": "reads remote state; always allowed",
    "write": "creates or changes remote state; needs allow 'write'",
    "destructive": "deletes remote state; needs allow 'destructive'",
}


def suggest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``name``, else an empty string."""
    if len(name) > _SUGGEST_MAX:
        return ""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def quote_name(name: str) -> str:
    """``'name'`` as error messages show it; a long one is cut, saying how long it was."""
    if len(name) <= _SHOWN_MAX:
        return f"'{name}'"
    return f"'{name[:_SHOWN_MAX]}...' ({len(name)} characters)"


def parse_allow(allow: Iterable[str] | str | None) -> frozenset[str]:
    """What a run may do: ``"write"``, ``"write,destructive"`` or an iterable of tags, plus
    ``read`` always. ``None`` is read-only. Raises ``ConfigError`` for an unknown tag."""
    if allow is None:
        return frozenset({"read"})
    items = [allow] if isinstance(allow, str) else list(allow)
    effects = {part.strip() for item in items for part in str(item).split(",") if part.strip()}
    unknown = sorted(effects - set(EFFECTS))
    if unknown:
        hint = suggest(unknown[0], EFFECTS)
        raise ConfigError(
            f"allow: unknown effect {', '.join(map(repr, unknown))}{hint}; use one or more of "
            f"{', '.join(EFFECTS)} (Python: allow={{'write'}}; CLI: --allow write,destructive)"
        )
    return frozenset(effects | {"read"})
