"""Loops' wire format, as far as the pack needs it without its models: the keys of a contact.

Kept apart from ``models.py`` so that the handlers and the contact directory can be imported
without building the pydantic models (``luabridge.action.model_ref``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CONTACT_KEYS", "contact_from_wire"]

#: Wire keys of a contact that are not custom properties (Loops returns them, null or not).
CONTACT_KEYS = frozenset(
    {
        "id",
        "email",
        "firstName",
        "lastName",
        "source",
        "subscribed",
        "userGroup",
        "userId",
        "mailingLists",
        "optInStatus",
    }
)


def contact_from_wire(data: Mapping[str, Any]) -> dict[str, Any]:
    """A contact from Loops (camelCase, custom properties at the top) as ``Contact`` fields."""
    return {
        "id": data.get("id"),
        "email": data.get("email"),
        "first_name": data.get("firstName"),
        "last_name": data.get("lastName"),
        "source": data.get("source"),
        "subscribed": data.get("subscribed"),
        "user_group": data.get("userGroup"),
        "user_id": data.get("userId"),
        "mailing_lists": {str(k): True for k, v in (data.get("mailingLists") or {}).items() if v},
        "opt_in_status": data.get("optInStatus"),
        "properties": {
            k: v
            for k, v in data.items()
            if k not in CONTACT_KEYS and isinstance(v, str | int | float | bool | None)
        },
    }
