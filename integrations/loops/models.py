"""Pydantic models of the Loops actions: the parameters scripts pass and the tables they get back.

Input models subclass ``luabridge.action.ActionInput`` (unknown fields refused, snake_case names
from the Lua reference, aliases for the second naming convention). Output models subclass
``ActionResult`` and tolerate new fields. ``contact_from_wire`` (from ``wire.py``, which needs
no pydantic) turns Loops' camelCase contacts into the snake_case output fields.

The actions name these models with ``luabridge.action.model_ref``, so this module is imported
on the first use of a Loops action's models, not with the pack.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from luabridge.action import ActionInput, ActionResult

from .wire import CONTACT_KEYS, contact_from_wire

__all__ = [
    "CONTACT_KEYS",
    "Attachment",
    "CheckContactSuppressionInput",
    "CheckContactSuppressionOutput",
    "Contact",
    "ContactProperty",
    "CreateContactInput",
    "CreateContactOutput",
    "CreateContactPropertyInput",
    "CreateContactPropertyOutput",
    "DataVariableValue",
    "DeleteContactInput",
    "DeleteContactOutput",
    "EventPropertyValue",
    "FindContactInput",
    "FindContactOutput",
    "GetContactInput",
    "GetContactOutput",
    "GetCurrentUserInput",
    "GetCurrentUserOutput",
    "ListContactPropertiesInput",
    "ListContactPropertiesOutput",
    "ListContactsInput",
    "ListContactsOutput",
    "ListDedicatedSendingIpsInput",
    "ListDedicatedSendingIpsOutput",
    "ListMailingListsInput",
    "ListMailingListsOutput",
    "ListTransactionalEmailsInput",
    "ListTransactionalEmailsOutput",
    "MailingList",
    "Pagination",
    "PropertyValue",
    "RemovalQuota",
    "RemoveContactSuppressionInput",
    "RemoveContactSuppressionOutput",
    "SendEventInput",
    "SendEventOutput",
    "SendTransactionalEmailInput",
    "SendTransactionalEmailOutput",
    "SuppressedContact",
    "TransactionalEmail",
    "UpdateContactInput",
    "UpdateContactOutput",
    "contact_from_wire",
]

#: A custom contact property value; None (``app.null``) clears the property.
PropertyValue = str | int | float | bool | None
#: An event property value (Loops accepts no null here).
EventPropertyValue = str | int | float | bool
#: A transactional data variable: a string, a number, or a list of flat tables.
DataVariableValue = str | int | float | list[dict[str, str | int | float]]

#: Contact keys Loops defines itself, with the parameter that sets them.
_STANDARD_KEYS: dict[str, str] = {
    "email": "email",
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "source": "source",
    "subscribed": "subscribed",
    "userGroup": "user_group",
    "user_group": "user_group",
    "userId": "user_id",
    "user_id": "user_id",
    "mailingLists": "mailing_lists",
    "mailing_lists": "mailing_lists",
}
#: Property names Loops reserves for itself.
_RESERVED_KEYS = frozenset({"id", "listId", "softDeleteAt", "teamId", "updatedAt", "optInStatus"})
_TEXT = 500  # Loops' limit on most string values


def _check_email(value: str | None) -> str | None:
    """A light check that catches typos early; Loops has the last word on validity."""
    if value is None:
        return None
    local, at, domain = value.partition("@")
    if not at or not local or not domain or any(c.isspace() for c in value) or "@" in domain:
        raise ValueError(f"{value!r} is not an email address; expected something like a@b.co")
    return value


def _check_properties(value: dict[str, Any] | None) -> dict[str, Any] | None:
    for key in value or {}:
        if not key:
            raise ValueError("property names must not be empty")
        if key in _STANDARD_KEYS:
            raise ValueError(
                f"{key!r} is a standard contact field, not a custom property; pass it as the "
                f"{_STANDARD_KEYS[key]} parameter instead"
            )
        if key in _RESERVED_KEYS:
            raise ValueError(f"{key!r} is a name Loops reserves; it cannot be set")
    return value


def _one_spelling(data: Any, canonical: str, alias: str) -> Any:
    if isinstance(data, Mapping) and canonical in data and alias in data:
        raise ValueError(f"give {canonical} or its alias {alias}, not both")
    return data


def _count_given(*values: object) -> int:
    return sum(v is not None for v in values)


_EMAIL_DOC = "the contact's email address"
_USER_ID_DOC = "the contact's userId: your own unique id for them"
_MAILING_LISTS_DOC = (
    "mailing list ids mapped to true (subscribe) or false (unsubscribe); lists not named are "
    "left as they are. Ids come from list_mailing_lists"
)
_PROPERTIES_DOC = (
    "custom contact properties by their Loops name (camelCase, e.g. planName), each a string, "
    "number, boolean, date string or app.null (to clear it). The property must already exist "
    "(see list_contact_properties / create_contact_property)"
)
_IDEMPOTENCY_DOC = (
    "Idempotency-Key for this send (at most 100 characters). By default it is derived from the "
    "execution id, the call's place in the run and its parameters, so a resumed run sends the "
    "same key; pass the key from an earlier result to make sure a repeated send is not "
    "delivered twice (Loops remembers keys for 24 hours; a repeat is success with "
    "deduplicated = true)"
)


# --- inputs -------------------------------------------------------------------------------


class GetCurrentUserInput(ActionInput):
    """No parameters."""


def _first_name() -> Any:
    return Field(None, max_length=_TEXT, description="the first name")


def _last_name() -> Any:
    return Field(None, max_length=_TEXT, description="the last name")


def _source() -> Any:
    return Field(
        None, max_length=_TEXT, description='where the contact came from (Loops\' default: "API")'
    )


def _subscribed() -> Any:
    return Field(
        None,
        description="whether the contact gets campaign and loop emails; false unsubscribes, "
        "true resubscribes. Leave it out unless you mean to change it",
    )


def _user_group() -> Any:
    return Field(
        None, max_length=_TEXT, description="a group to segment the contact into (one per contact)"
    )


def _mailing_lists() -> Any:
    return Field(None, description=_MAILING_LISTS_DOC)


def _contact_properties() -> Any:
    return Field(
        None,
        validation_alias=AliasChoices("properties", "custom_properties"),
        description=_PROPERTIES_DOC,
    )


class _ContactWrite(ActionInput):
    """Validators shared by create_contact and update_contact."""

    @model_validator(mode="before")
    @classmethod
    def _one_properties_spelling(cls, data: Any) -> Any:
        return _one_spelling(data, "properties", "custom_properties")

    @field_validator("properties", check_fields=False)
    @classmethod
    def _known_properties(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_properties(value)

    @field_validator("email", check_fields=False)
    @classmethod
    def _valid_email(cls, value: str | None) -> str | None:
        return _check_email(value)


class CreateContactInput(_ContactWrite):
    """Parameters of create_contact."""

    email: str = Field(max_length=_TEXT, description=f"{_EMAIL_DOC}; must not exist yet")
    first_name: str | None = _first_name()
    last_name: str | None = _last_name()
    source: str | None = _source()
    subscribed: bool | None = _subscribed()
    user_group: str | None = _user_group()
    user_id: str | None = Field(None, max_length=_TEXT, description=_USER_ID_DOC)
    mailing_lists: dict[str, bool] | None = _mailing_lists()
    properties: dict[str, PropertyValue] | None = _contact_properties()


class UpdateContactInput(_ContactWrite):
    """Parameters of update_contact: which contact (contact_id, email or user_id), then what."""

    contact_id: str | None = Field(
        None,
        min_length=1,
        description="the id of a contact this integration has seen (from create_contact, "
        "update_contact, find_contact, get_contact or list_contacts). With it, email and "
        "user_id are new values to set rather than the contact to look for",
    )
    email: str | None = Field(
        None,
        max_length=_TEXT,
        description="without contact_id: the contact to update, created if no contact has this "
        "email. With contact_id: the new email (the contact needs a user_id for that)",
    )
    user_id: str | None = Field(
        None,
        max_length=_TEXT,
        description="without contact_id: the contact to update (it must exist). With email as "
        "well, the contact matching either is updated; this is how to change an email",
    )
    first_name: str | None = _first_name()
    last_name: str | None = _last_name()
    source: str | None = _source()
    subscribed: bool | None = _subscribed()
    user_group: str | None = _user_group()
    mailing_lists: dict[str, bool] | None = _mailing_lists()
    properties: dict[str, PropertyValue] | None = _contact_properties()

    @model_validator(mode="after")
    def _needs_identity(self) -> UpdateContactInput:
        if _count_given(self.contact_id, self.email, self.user_id) == 0:
            raise ValueError(
                "update_contact needs contact_id, email or user_id to know which contact to "
                "update; give at least one"
            )
        return self


class _OneIdentifier(ActionInput):
    """Exactly one of email or user_id."""

    email: str | None = Field(None, max_length=_TEXT, description=_EMAIL_DOC)
    user_id: str | None = Field(None, max_length=_TEXT, description=_USER_ID_DOC)

    @model_validator(mode="after")
    def _exactly_one(self) -> _OneIdentifier:
        if _count_given(self.email, self.user_id) != 1:
            raise ValueError("give exactly one of email or user_id")
        return self


class FindContactInput(_OneIdentifier):
    """Parameters of find_contact."""


class CheckContactSuppressionInput(_OneIdentifier):
    """Parameters of check_contact_suppression."""


class RemoveContactSuppressionInput(_OneIdentifier):
    """Parameters of remove_contact_suppression."""


class GetContactInput(ActionInput):
    """Parameters of get_contact."""

    contact_id: str = Field(
        min_length=1,
        description="the contact's Loops id, as returned by create_contact, update_contact, "
        "find_contact or list_contacts",
    )


class ListContactsInput(ActionInput):
    """Parameters of list_contacts."""

    limit: int = Field(50, ge=1, le=50, description="how many contacts to return")
    offset: int = Field(0, ge=0, description="how many contacts to skip, for the next pages")


class DeleteContactInput(ActionInput):
    """Parameters of delete_contact: exactly one of email, user_id or contact_id."""

    email: str | None = Field(None, max_length=_TEXT, description=_EMAIL_DOC)
    user_id: str | None = Field(None, max_length=_TEXT, description=_USER_ID_DOC)
    contact_id: str | None = Field(
        None, min_length=1, description="the id of a contact this integration has seen"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DeleteContactInput:
        if _count_given(self.email, self.user_id, self.contact_id) != 1:
            raise ValueError("give exactly one of email, user_id or contact_id")
        return self


class ListContactPropertiesInput(ActionInput):
    """Parameters of list_contact_properties."""

    list: Literal["all", "custom"] = Field(
        "all", description='"all" for built-in and custom properties, "custom" for yours only'
    )


class CreateContactPropertyInput(ActionInput):
    """Parameters of create_contact_property."""

    name: str = Field(
        min_length=1,
        max_length=_TEXT,
        description="the property name in camelCase, e.g. favoriteColor (letters and digits)",
    )
    type: Literal["string", "number", "boolean", "date"] = Field(
        description="the kind of values it holds"
    )

    @field_validator("name")
    @classmethod
    def _camel_case(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", value):
            words = [w for w in re.split(r"[^A-Za-z0-9]+", value) if w]
            hint = words[0][:1].lower() + words[0][1:] if words else "favoriteColor"
            hint += "".join(w[:1].upper() + w[1:] for w in words[1:])
            raise ValueError(
                f"property names are camelCase letters and digits starting with a letter "
                f"(got {value!r}; try {hint!r})"
            )
        if value in _RESERVED_KEYS or value in _STANDARD_KEYS:
            raise ValueError(f"{value!r} is a name Loops already uses; pick another")
        return value


class ListMailingListsInput(ActionInput):
    """No parameters."""


class SendEventInput(ActionInput):
    """Parameters of send_event."""

    event_name: str = Field(
        min_length=1,
        max_length=_TEXT,
        description='the event, e.g. "signup"; an unknown name creates a new event in Loops',
    )
    email: str | None = Field(
        None,
        max_length=_TEXT,
        description=f"{_EMAIL_DOC}; a new contact is created if none has it. Give email, "
        "user_id or both",
    )
    user_id: str | None = Field(
        None, max_length=_TEXT, description=f"{_USER_ID_DOC}; without email it must exist"
    )
    properties: dict[str, EventPropertyValue] | None = Field(
        None,
        validation_alias=AliasChoices("properties", "event_properties"),
        description="event properties (strings, numbers, booleans, date strings; no null) that "
        "the emails this event triggers can use",
    )
    contact_properties: dict[str, PropertyValue] | None = Field(
        None,
        description="contact properties to save on the contact at the same time (custom "
        "properties by their Loops name; app.null clears one)",
    )
    mailing_lists: dict[str, bool] | None = Field(None, description=_MAILING_LISTS_DOC)
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=100, description=_IDEMPOTENCY_DOC
    )
    #: The key made for this call when none was given; retries and the plan reuse it.
    _generated_key: str | None = PrivateAttr(default=None)

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str | None) -> str | None:
        return _check_email(value)

    @field_validator("contact_properties")
    @classmethod
    def _known_properties(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_properties(value)

    @model_validator(mode="before")
    @classmethod
    def _one_properties_spelling(cls, data: Any) -> Any:
        data = _one_spelling(data, "properties", "event_properties")
        if isinstance(data, Mapping):
            for name in ("properties", "event_properties"):
                values = data.get(name)
                if isinstance(values, Mapping):
                    nulls = sorted(str(k) for k, v in values.items() if v is None)
                    if nulls:
                        raise ValueError(
                            f"event properties cannot be null (got null for {', '.join(nulls)});"
                            " leave them out instead"
                        )
        return data

    @model_validator(mode="after")
    def _needs_identity(self) -> SendEventInput:
        if _count_given(self.email, self.user_id) == 0:
            raise ValueError("send_event needs email or user_id (or both) to know the contact")
        return self


class Attachment(ActionInput):
    """One file attached to a transactional email."""

    filename: str = Field(min_length=1, max_length=_TEXT, description="the file name shown")
    content_type: str = Field(
        min_length=1,
        validation_alias=AliasChoices("content_type", "contentType"),
        description='its MIME type, e.g. "application/pdf"',
    )
    data: str = Field(min_length=1, description="the file's bytes, base64-encoded")

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("data must be base64-encoded (A-Z, a-z, 0-9, +, /, =)") from exc
        return value


class SendTransactionalEmailInput(ActionInput):
    """Parameters of send_transactional_email."""

    transactional_id: str = Field(
        min_length=1,
        description="the id of a published transactional email (see list_transactional_emails)",
    )
    email: str = Field(max_length=_TEXT, description="the recipient's email address")
    add_to_audience: bool | None = Field(
        None,
        description="true creates a contact for the recipient if there is none (Loops' "
        "default: false)",
    )
    data_variables: dict[str, DataVariableValue] | None = Field(
        None,
        description="the template's data variables: strings or numbers, or lists of flat "
        "tables for array variables. Required if the template has required variables",
    )
    attachments: list[Attachment] | None = Field(
        None, description="files to attach (the feature must be enabled for the account)"
    )
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=100, description=_IDEMPOTENCY_DOC
    )
    _generated_key: str | None = PrivateAttr(default=None)

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        return str(_check_email(value))


class ListTransactionalEmailsInput(ActionInput):
    """Parameters of list_transactional_emails."""

    per_page: int = Field(20, ge=10, le=50, description="how many emails per page")
    cursor: str | None = Field(
        None, min_length=1, description="pagination.next_cursor from the previous page"
    )

    @field_validator("per_page", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> Any:
        # Some scripts pass the page size as a string, as the Loops API itself takes it.
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value


class ListDedicatedSendingIpsInput(ActionInput):
    """No parameters."""


# --- outputs ------------------------------------------------------------------------------


class _Record(BaseModel):
    """A nested output table; unknown fields from newer API versions are dropped."""

    model_config = ConfigDict(extra="ignore", defer_build=True)


class Contact(_Record):
    """A Loops contact, with snake_case field names."""

    id: str | None = Field(None, description="the contact's Loops id (use it as contact_id)")
    email: str | None = Field(None, description="email address")
    first_name: str | None = Field(None, description="first name")
    last_name: str | None = Field(None, description="last name")
    source: str | None = Field(None, description='where it came from, e.g. "API"')
    subscribed: bool | None = Field(None, description="whether it gets campaign emails")
    user_group: str | None = Field(None, description="its group")
    user_id: str | None = Field(None, description="your own id for it")
    mailing_lists: dict[str, bool] = Field(
        default_factory=dict, description="ids of the lists it is subscribed to, mapped to true"
    )
    opt_in_status: str | None = Field(
        None, description='double opt-in state: "pending", "accepted", "rejected" or nil'
    )
    properties: dict[str, PropertyValue] = Field(
        default_factory=dict,
        description="custom properties under their Loops names (unset ones are left out)",
    )


class ContactProperty(_Record):
    key: str | None = Field(None, description="the property name, e.g. planName")
    label: str | None = Field(None, description="its label in the Loops app")
    type: str | None = Field(None, description='"string", "number", "boolean" or "date"')


class MailingList(_Record):
    id: str | None = Field(None, description="the list id, for mailing_lists parameters")
    name: str | None = Field(None, description="its name")
    description: str | None = Field(None, description="its description, if any")
    is_public: bool | None = Field(None, description="whether contacts see it on their page")


class TransactionalEmail(_Record):
    id: str | None = Field(None, description="the id to pass as transactional_id")
    name: str | None = Field(None, description="its name")
    last_updated: str | None = Field(None, description="when it was last changed (ISO 8601)")
    data_variables: list[str] = Field(
        default_factory=list, description="names of its data variables"
    )


class Pagination(_Record):
    total_results: int | None = Field(None, description="emails in all pages")
    returned_results: int | None = Field(None, description="emails in this page")
    per_page: int | None = Field(None, description="the page size")
    total_pages: int | None = Field(None, description="number of pages")
    next_cursor: str | None = Field(
        None, description="pass as cursor for the next page; nil on the last page"
    )
    next_page: str | None = Field(None, description="URL of the next page; nil on the last")


class SuppressedContact(_Record):
    id: str | None = Field(None, description="the contact's Loops id")
    email: str | None = Field(None, description="its email")
    user_id: str | None = Field(None, description="its userId")


class RemovalQuota(_Record):
    limit: int | None = Field(None, description="removals allowed per rolling 30 days")
    remaining: int | None = Field(None, description="removals left in the window")


class GetCurrentUserOutput(ActionResult):
    team_name: str | None = Field(None, description="the Loops team the API key belongs to")


class _Recorded(ActionResult):
    """The output of an action that records contacts in the contact directory."""

    directory_error: str | None = Field(
        None,
        description="set when Loops did what was asked but the local contact directory could "
        "not record it (a read-only, locked or damaged file): why, and how to fix it; until "
        "then this contact's id may not resolve in get_contact, update_contact or "
        "delete_contact (find_contact looks it up again)",
    )


class CreateContactOutput(_Recorded):
    id: str | None = Field(None, description="the new contact's id (a contact_id elsewhere)")


class UpdateContactOutput(_Recorded):
    id: str | None = Field(None, description="the id of the contact updated or created")


class FindContactOutput(_Recorded):
    contacts: list[Contact] = Field(
        default_factory=list, description="the matching contact, or an empty list"
    )
    contact: Contact | None = Field(None, description="the match, or nil when there is none")


class GetContactOutput(ActionResult):
    contact: Contact | None = Field(None, description="the contact, fresh from Loops")


class ListContactsOutput(ActionResult):
    contacts: list[Contact] = Field(
        default_factory=list,
        description="contacts as last seen by this integration, in the order it first saw them",
    )
    total: int = Field(0, description="how many contacts the directory holds for this account")
    limit: int = Field(50, description="the limit used")
    offset: int = Field(0, description="the offset used")
    has_more: bool = Field(False, description="whether another page follows")
    next_offset: int | None = Field(None, description="offset of the next page, nil at the end")
    source: str = Field(
        "seen",
        description='what filled the directory last: "webhooks" (Loops webhooks received by '
        'luabridge serve), "import" (an audience CSV export), "emulator" (the emulator\'s '
        'audience, in --emulator runs), or "seen" (only contacts this integration touched)',
    )
    synced_at: str | None = Field(
        None,
        description='when that source last filled it (ISO 8601, UTC); nil for "seen"',
    )


class DeleteContactOutput(_Recorded):
    message: str | None = Field(None, description="Loops' confirmation text")


class ListContactPropertiesOutput(ActionResult):
    properties: list[ContactProperty] = Field(
        default_factory=list, description="the properties, built-in ones first"
    )


class CreateContactPropertyOutput(ActionResult):
    pass


class ListMailingListsOutput(ActionResult):
    mailing_lists: list[MailingList] = Field(default_factory=list, description="the lists")


class SendEventOutput(ActionResult):
    idempotency_key: str | None = Field(
        None, description="the Idempotency-Key sent; pass it again to repeat safely"
    )
    deduplicated: bool | None = Field(
        None, description="true when Loops had already received this send (nothing new sent)"
    )


class SendTransactionalEmailOutput(SendEventOutput):
    pass


class ListTransactionalEmailsOutput(ActionResult):
    transactional_emails: list[TransactionalEmail] = Field(
        default_factory=list, description="published transactional emails in this page"
    )
    pagination: Pagination | None = Field(None, description="where this page sits")


class CheckContactSuppressionOutput(_Recorded):
    contact: SuppressedContact | None = Field(None, description="the contact checked")
    is_suppressed: bool | None = Field(
        None, description="true when Loops will not email this address"
    )
    removal_quota: RemovalQuota | None = Field(None, description="suppression removals left")


class RemoveContactSuppressionOutput(ActionResult):
    message: str | None = Field(None, description="Loops' confirmation text")
    removal_quota: RemovalQuota | None = Field(None, description="suppression removals left")


class ListDedicatedSendingIpsOutput(ActionResult):
    ips: list[str] = Field(default_factory=list, description="IPv4 addresses Loops sends from")
