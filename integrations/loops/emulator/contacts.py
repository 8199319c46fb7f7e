"""Contact storage and the identity rules of the Loops contact endpoints.

``ContactBook`` indexes one team's contacts by id, by email (case-insensitively, keeping the
stored case) and by ``userId``. ``parse_changes`` validates a contact body against the team's
property registry and mailing lists before anything changes, so a 400 never leaves a contact
half-updated. The upsert rules follow section 2.3 of the Loops reference.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from .errors import api_error
from .records import BUILTIN_PROPERTIES, Contact, Property, PropertyType, format_timestamp

__all__ = [
    "MAX_STRING_LENGTH",
    "RESERVED_NAMES",
    "ContactBook",
    "ContactChanges",
    "check_email",
    "check_property_value",
    "one_identifier",
    "parse_changes",
]

#: Loops limits most string values in contact, event and transactional bodies to 500 characters.
MAX_STRING_LENGTH: Final = 500

#: Names no custom property may take: the documented reserved names, the built-ins, and the
#: keys contact bodies already use for something else.
RESERVED_NAMES: Final = frozenset(
    {"id", "listId", "softDeleteAt", "teamId", "updatedAt", "mailingLists", "optInStatus"}
    | {p.key for p in BUILTIN_PROPERTIES}
)

#: Keys a real create or update accepts without complaint and without effect (a real request
#: carrying ``"id": ""`` succeeded), so we ignore them even when unknown keys are rejected.
_IGNORED_KEYS: Final = frozenset(
    {"id", "listId", "softDeleteAt", "teamId", "updatedAt", "optInStatus"}
)

_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_DATE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?)?(Z|[+-]\d{2}:\d{2})?"
)

#: Built-in string fields: wire key → Contact attribute, and the value a ``null`` resets it to.
_STRING_FIELDS: Final[dict[str, tuple[str, str | None]]] = {
    "firstName": ("first_name", None),
    "lastName": ("last_name", None),
    "notes": ("notes", None),
    "source": ("source", "API"),
    "userGroup": ("user_group", ""),
}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check_length(name: str, value: str) -> None:
    if len(value) > MAX_STRING_LENGTH:
        raise api_error(
            400,
            f"`{name}` is too long ({len(value)} characters); values are limited to "
            f"{MAX_STRING_LENGTH} characters.",
        )


def check_email(value: Any) -> str:
    """``value`` if it is a plausible email address, else the API's 400."""
    if not isinstance(value, str) or len(value) > 254 or not _EMAIL.fullmatch(value):
        raise api_error(400, "Invalid email address.")
    return value


def _is_date(value: Any) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return True  # a Unix timestamp in milliseconds
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def check_property_value(key: str, kind: PropertyType, value: Any) -> Any:
    """``value`` if it suits a property of type ``kind``; otherwise a 400 naming the mismatch."""
    ok = {
        "string": isinstance(value, str),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "date": _is_date(value),
    }[kind]
    if not ok:
        hint = (
            " Dates are 'YYYY-MM-DD', 'YYYY-MM-DDTHH:MM:SS' (optionally with milliseconds and a "
            "±HH:MM offset) or a Unix timestamp in milliseconds."
            if kind == "date"
            else ""
        )
        raise api_error(
            400,
            f"Invalid value for property `{key}`: it has type {kind}, got {_type_name(value)} "
            f"{value!r}.{hint}",
        )
    if isinstance(value, str):
        _check_length(key, value)
    return value


@dataclass(slots=True)
class ContactChanges:
    """A validated contact body: the identity plus everything it sets.

    ``email`` and ``user_id`` are the identifiers as given (``None`` when absent).
    ``builtins`` maps built-in wire keys to their new values, ``custom`` maps custom property
    keys to values (``None`` empties one), ``lists`` maps list ids to subscribe (``True``) or
    unsubscribe (``False``).
    """

    email: str | None = None
    user_id: str | None = None
    clear_user_id: bool = False
    builtins: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    lists: dict[str, bool] = field(default_factory=dict)


def _parse_user_id(value: Any) -> str:
    # Loops has wanted strings since 2024 but used to take numbers; we take both and store text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise api_error(400, f"`userId` must be a string, got {_type_name(value)} {value!r}.")
    _check_length("userId", value)
    return value


def _parse_lists(value: Any, known_lists: Collection[str]) -> dict[str, bool]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise api_error(
            400,
            "`mailingLists` must be an object mapping list ids to true (subscribe) or false "
            f"(unsubscribe), got {_type_name(value)}.",
        )
    lists: dict[str, bool] = {}
    for list_id, on in value.items():
        if list_id not in known_lists:
            known = ", ".join(known_lists) or "none"
            raise api_error(
                400,
                f"Mailing list `{list_id}` does not exist. GET /lists shows the team's lists "
                f"(known ids: {known}).",
            )
        if not isinstance(on, bool):
            raise api_error(
                400,
                f"`mailingLists.{list_id}` must be true or false, got {_type_name(on)} {on!r}.",
            )
        lists[list_id] = on
    return lists


def parse_changes(
    body: Mapping[str, Any],
    *,
    properties: Mapping[str, Property],
    lists: Collection[str],
    reject_unknown: bool = False,
    skip: Collection[str] = (),
) -> ContactChanges:
    """Validate a contact body (create, update, or the contact part of an event).

    ``properties`` is the team's custom property registry and ``lists`` its mailing list ids.
    Keys in ``skip`` belong to the caller (``eventName``, ``eventProperties``). Unknown keys are
    ignored unless ``reject_unknown`` is set, which turns them into a 400.
    """
    changes = ContactChanges()
    for key, value in body.items():
        if key in skip or key in _IGNORED_KEYS:
            continue
        if key == "email":
            if value is not None:
                changes.email = check_email(value)
        elif key == "userId":
            if value is None:
                changes.clear_user_id = True
            elif value != "":
                changes.user_id = _parse_user_id(value)
        elif key == "mailingLists":
            changes.lists = _parse_lists(value, lists)
        elif key in _STRING_FIELDS:
            if value is not None:
                if not isinstance(value, str):
                    raise api_error(
                        400, f"`{key}` must be a string, got {_type_name(value)} {value!r}."
                    )
                _check_length(key, value)
            changes.builtins[key] = value
        elif key == "subscribed":
            if not isinstance(value, bool):
                raise api_error(
                    400, f"`subscribed` must be true or false, got {_type_name(value)} {value!r}."
                )
            changes.builtins[key] = value
        elif key == "createdAt":
            if value is not None:
                changes.builtins[key] = check_property_value(key, "date", value)
        elif key in properties:
            prop = properties[key]
            changes.custom[key] = (
                None if value is None else check_property_value(key, prop.type, value)
            )
        elif reject_unknown:
            defined = ", ".join(properties) or "none"
            raise api_error(
                400,
                f"Unknown contact property `{key}`. Create it first with POST "
                f"/contacts/properties (custom properties defined: {defined}).",
            )
    return changes


def one_identifier(email: Any, user_id: Any) -> tuple[str | None, str | None]:
    """Exactly one of ``email`` / ``userId`` (empty means absent), else the API's 400."""
    email = None if email in (None, "") else email
    user_id = None if user_id in (None, "") else user_id
    if email is not None and user_id is not None:
        raise api_error(400, "Only one parameter is permitted: give `email` or `userId`, not both.")
    if email is None and user_id is None:
        raise api_error(400, "An email or userId is required.")
    if email is not None:
        return check_email(email), None
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str):
        raise api_error(400, f"`userId` must be a string, got {user_id!r}.")
    return None, user_id


class ContactBook:
    """One team's contacts, indexed by id, lowercased email and userId.

    Not thread-safe on its own: the owning ``Team`` serialises access.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Contact] = {}
        self._by_email: dict[str, Contact] = {}
        self._by_user_id: dict[str, Contact] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Contact]:
        return iter(list(self._by_id.values()))

    def get(self, contact_id: str) -> Contact | None:
        return self._by_id.get(contact_id)

    def by_email(self, email: str) -> Contact | None:
        return self._by_email.get(email.lower())

    def by_user_id(self, user_id: str) -> Contact | None:
        return self._by_user_id.get(user_id)

    def add(self, contact: Contact) -> Contact:
        """Store ``contact``; a clash on id, email or userId is a ``ValueError``."""
        if contact.id in self._by_id:
            raise ValueError(f"a contact with id {contact.id!r} already exists")
        if contact.email.lower() in self._by_email:
            raise ValueError(f"a contact with email {contact.email!r} already exists")
        if contact.user_id is not None and contact.user_id in self._by_user_id:
            raise ValueError(f"a contact with userId {contact.user_id!r} already exists")
        self._by_id[contact.id] = contact
        self._by_email[contact.email.lower()] = contact
        if contact.user_id is not None:
            self._by_user_id[contact.user_id] = contact
        return contact

    def remove(self, contact: Contact) -> None:
        del self._by_id[contact.id]
        del self._by_email[contact.email.lower()]
        if contact.user_id is not None:
            del self._by_user_id[contact.user_id]

    def resolve(self, email: str | None, user_id: str | None) -> Contact | None:
        """The contact matching ``email`` or ``user_id``; a 400 if they match different ones."""
        by_email = self.by_email(email) if email is not None else None
        by_user_id = self.by_user_id(user_id) if user_id is not None else None
        if by_email is not None and by_user_id is not None and by_email is not by_user_id:
            raise api_error(400, "Multiple contacts found for the given criteria")
        return by_user_id or by_email

    def apply(self, contact: Contact, changes: ContactChanges) -> None:
        """Write ``changes`` onto ``contact``, keeping the indexes in step.

        The caller has checked that a new email or userId is free (``resolve`` does).
        """
        if changes.email is not None and changes.email.lower() != contact.email.lower():
            del self._by_email[contact.email.lower()]
            self._by_email[changes.email.lower()] = contact
            contact.email = changes.email
        new_user_id = None if changes.clear_user_id else changes.user_id
        if (changes.clear_user_id or new_user_id is not None) and new_user_id != contact.user_id:
            if contact.user_id is not None:
                del self._by_user_id[contact.user_id]
            if new_user_id is not None:
                self._by_user_id[new_user_id] = contact
            contact.user_id = new_user_id
        for key, value in changes.builtins.items():
            if key in _STRING_FIELDS:
                attribute, reset = _STRING_FIELDS[key]
                setattr(contact, attribute, reset if value is None else value)
            elif key == "subscribed":
                contact.subscribed = value
            elif key == "createdAt":
                # We keep a date string as given and turn a millisecond timestamp into one.
                contact.created_at = (
                    value if isinstance(value, str) else format_timestamp(value / 1000)
                )
        for key, value in changes.custom.items():
            if value is None:
                contact.custom.pop(key, None)
            else:
                contact.custom[key] = value
        contact.lists.update(changes.lists)

    def clear(self) -> None:
        self._by_id.clear()
        self._by_email.clear()
        self._by_user_id.clear()
