"""The records the emulator stores per team, and how each one looks on the wire.

Plain dataclasses with no behaviour beyond rendering: ``contacts.py``, ``transactional.py`` and
``team.py`` own the rules that create and change them. Ids look like the cuid-style ids Loops
hands out (``c`` plus 24 lowercase letters and digits).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "BUILTIN_PROPERTIES",
    "PROPERTY_TYPES",
    "Contact",
    "EventRecord",
    "MailingList",
    "Property",
    "PropertyType",
    "SendRecord",
    "Template",
    "derived_id",
    "format_timestamp",
    "make_id",
]

PropertyType = Literal["string", "number", "boolean", "date"]

#: The value types a contact property can have, in the order error messages list them.
PROPERTY_TYPES: Final[tuple[PropertyType, ...]] = ("string", "number", "boolean", "date")

_BASE36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"


def make_id() -> str:
    """A fresh cuid-like id: ``c``, eight base-36 digits of the clock, sixteen random ones.

    The clock prefix keeps ids roughly in creation order, as real cuids are.
    """
    millis = int(time.time() * 1000)
    stamp = ""
    while millis:
        millis, digit = divmod(millis, 36)
        stamp = _BASE36[digit] + stamp
    stamp = stamp.rjust(8, "0")[-8:]
    return "c" + stamp + "".join(secrets.choice(_BASE36) for _ in range(16))


def derived_id(seed: str, salt: str) -> str:
    """A stable cuid-like id computed from ``seed`` and ``salt`` (same inputs, same id)."""
    return "c" + hashlib.sha256(f"{salt}:{seed}".encode()).hexdigest()[:24]


def format_timestamp(epoch: float) -> str:
    """``epoch`` seconds as ISO-8601 UTC with milliseconds, the way Loops writes dates."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class Property:
    """A contact property: built-in or team-defined (custom)."""

    key: str
    label: str
    type: PropertyType

    def to_wire(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "type": self.type}


#: The built-in properties, in the order ``GET /contacts/properties`` lists them.
BUILTIN_PROPERTIES: Final[tuple[Property, ...]] = (
    Property("firstName", "First Name", "string"),
    Property("lastName", "Last Name", "string"),
    Property("email", "Email", "string"),
    Property("notes", "Notes", "string"),
    Property("source", "Source", "string"),
    Property("userGroup", "User Group", "string"),
    Property("userId", "User Id", "string"),
    Property("subscribed", "Subscribed", "boolean"),
    Property("createdAt", "Created At", "date"),
)


@dataclass(slots=True)
class MailingList:
    """A mailing list; public lists show on the contact's preference page."""

    id: str
    name: str
    description: str | None = None
    is_public: bool = True

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "isPublic": self.is_public,
        }


@dataclass(slots=True)
class Contact:
    """One audience contact. ``custom`` holds only the custom properties that have a value."""

    id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    source: str = "API"
    subscribed: bool = True
    user_group: str = ""
    user_id: str | None = None
    notes: str | None = None
    created_at: str = ""
    opt_in_status: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    #: List id → subscribed. Only the ``True`` ones are shown by ``find``.
    lists: dict[str, bool] = field(default_factory=dict)
    #: Whether the address is on the suppression list (bounced or complained).
    suppressed: bool = False

    def to_wire(self, custom_order: list[str]) -> dict[str, Any]:
        """The contact as ``GET /contacts/find`` returns it.

        The key order follows real traffic: the defaults, then the custom properties that have
        a value (in ``custom_order``), then ``mailingLists`` and ``optInStatus``. ``notes`` and
        ``createdAt`` are stored but, as on the real API, not returned.
        """
        wire: dict[str, Any] = {
            "id": self.id,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "source": self.source,
            "subscribed": self.subscribed,
            "userGroup": self.user_group,
            "userId": self.user_id,
        }
        for key in custom_order:
            if key in self.custom:
                wire[key] = self.custom[key]
        wire["mailingLists"] = {list_id: True for list_id, on in self.lists.items() if on}
        wire["optInStatus"] = self.opt_in_status
        return wire

    def to_admin(self, custom_order: list[str]) -> dict[str, Any]:
        """Everything the emulator knows about the contact, for the admin API."""
        wire = self.to_wire(custom_order)
        wire["notes"] = self.notes
        wire["createdAt"] = self.created_at
        wire["suppressed"] = self.suppressed
        return wire


@dataclass(slots=True)
class Template:
    """A transactional email template.

    Data variables are required unless listed in ``optional_variables``, as in Loops.
    ``attachments_enabled`` stands in for the per-account switch Loops support turns on.
    """

    id: str
    name: str
    published: bool = True
    data_variables: tuple[str, ...] = ()
    optional_variables: tuple[str, ...] = ()
    attachments_enabled: bool = False
    created_at: str = "2025-01-01T00:00:00.000Z"
    updated_at: str = "2025-01-01T00:00:00.000Z"
    group_id: str | None = None

    @property
    def required_variables(self) -> tuple[str, ...]:
        return tuple(v for v in self.data_variables if v not in self.optional_variables)

    def to_legacy_wire(self) -> dict[str, Any]:
        """The item shape of the legacy ``GET /transactional`` list."""
        return {
            "id": self.id,
            "name": self.name,
            "lastUpdated": self.updated_at,
            "dataVariables": list(self.data_variables),
        }

    def to_wire(self, root_url: str) -> dict[str, Any]:
        """The item shape of ``GET /transactional-emails`` (drafts included)."""
        message_id = derived_id(self.id, "email-message")
        return {
            "id": self.id,
            "url": f"{root_url}/transactional/{self.id}",
            "name": self.name,
            "draftEmailMessageId": None if self.published else message_id,
            "publishedEmailMessageId": message_id if self.published else None,
            "transactionalGroupId": self.group_id,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "dataVariables": list(self.data_variables),
        }

    def to_admin(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "published": self.published,
            "dataVariables": list(self.data_variables),
            "optionalVariables": list(self.optional_variables),
            "requiredVariables": list(self.required_variables),
            "attachmentsEnabled": self.attachments_enabled,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(slots=True)
class EventRecord:
    """One accepted ``POST /events/send``, kept so tests can assert on it."""

    event_name: str
    contact_id: str
    email: str
    user_id: str | None
    event_properties: dict[str, Any]
    contact_properties: dict[str, Any]
    mailing_lists: dict[str, bool]
    idempotency_key: str | None
    created_contact: bool
    at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "eventName": self.event_name,
            "contactId": self.contact_id,
            "email": self.email,
            "userId": self.user_id,
            "eventProperties": self.event_properties,
            "contactProperties": self.contact_properties,
            "mailingLists": self.mailing_lists,
            "idempotencyKey": self.idempotency_key,
            "createdContact": self.created_contact,
            "at": self.at,
        }


@dataclass(slots=True)
class SendRecord:
    """One accepted ``POST /transactional``; attachments are kept as name, type and size."""

    transactional_id: str
    email: str
    data_variables: dict[str, Any]
    attachments: list[dict[str, Any]]
    add_to_audience: bool
    contact_id: str | None
    idempotency_key: str | None
    at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "transactionalId": self.transactional_id,
            "email": self.email,
            "dataVariables": self.data_variables,
            "attachments": self.attachments,
            "addToAudience": self.add_to_audience,
            "contactId": self.contact_id,
            "idempotencyKey": self.idempotency_key,
            "at": self.at,
        }
