"""Property rules: new custom properties, their labels, and event property values.

Contact property *values* are checked in ``contacts.py`` (``check_property_value``); this
module owns what ``POST /contacts/properties`` accepts and how labels are derived, plus the
looser rules for ``eventProperties``, which need no definition beforehand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from .contacts import MAX_STRING_LENGTH, RESERVED_NAMES
from .errors import api_error
from .records import PROPERTY_TYPES, PropertyType

__all__ = ["check_event_properties", "check_new_property", "label_for"]

_PROPERTY_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_WORD: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def label_for(key: str) -> str:
    """The sentence-case label Loops derives from a camelCase key (``planName`` → "Plan name").

    Runs of capitals stay as they are, so ``apiURL`` becomes "Api URL".
    """
    words = _WORD.findall(key) or [key]
    shaped = [w if len(w) > 1 and w.isupper() else w.lower() for w in words]
    first = shaped[0]
    shaped[0] = first[:1].upper() + first[1:]
    return " ".join(shaped)


def check_new_property(
    body: Mapping[str, Any], existing: Mapping[str, Any]
) -> tuple[str, PropertyType]:
    """The ``(name, type)`` of a valid ``POST /contacts/properties`` body, else its 400.

    Names are compared without regard to case, both with ``existing`` and with the reserved
    names: Loops documents neither way, and refusing look-alikes is the safer guess.
    """
    name, kind = body.get("name"), body.get("type")
    if not isinstance(name, str) or not name:
        raise api_error(400, "`name` is required: the new property's camelCase name.")
    if not _PROPERTY_NAME.fullmatch(name) or len(name) > MAX_STRING_LENGTH:
        raise api_error(
            400,
            f"Invalid property name {name!r}: use camelCase letters and digits, starting "
            "with a letter (e.g. planName).",
        )
    if kind not in PROPERTY_TYPES:
        raise api_error(
            400, f"Invalid property type {kind!r}: use one of {', '.join(PROPERTY_TYPES)}."
        )
    lowered = name.lower()
    if lowered in {r.lower() for r in RESERVED_NAMES}:
        raise api_error(400, f"`{name}` is a reserved property name; choose another name.")
    if lowered in {k.lower() for k in existing}:
        raise api_error(400, "Property already exists.")
    return name, kind


def check_event_properties(value: Any) -> dict[str, Any]:
    """``eventProperties`` as given, if every value is a string, number or boolean."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise api_error(400, "`eventProperties` must be an object of property values.")
    for key, item in value.items():
        scalar = isinstance(item, str | bool | int | float)
        if not scalar:
            raise api_error(
                400,
                f"Event property `{key}` must be a string, number, boolean or date string "
                f"(got {'null' if item is None else type(item).__name__}); leave it out instead "
                "of sending null.",
            )
        if isinstance(item, str) and len(item) > MAX_STRING_LENGTH:
            raise api_error(
                400,
                f"Event property `{key}` is too long ({len(item)} characters); values are "
                f"limited to {MAX_STRING_LENGTH} characters.",
            )
    return dict(value)
