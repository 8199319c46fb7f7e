"""The effect tags an action carries, from least to most dangerous.

Kept apart from ``luabridge.action`` (which re-exports both names) so that code checking an
``allow`` set, such as the command line's option parsing, does not import pydantic for it.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["EFFECTS", "Effect"]

Effect = Literal["read", "write", "destructive"]

#: Effect tags, from least to most dangerous, with what each means for policy.
EFFECTS: dict[str, str] = {
    "read": "reads remote state; always allowed",
    "write": "creates or changes remote state; needs allow 'write'",
    "destructive": "deletes remote state; needs allow 'destructive'",
}
