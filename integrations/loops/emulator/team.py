"""One emulated Loops team: its data and every classic v1 endpoint's rules.

A ``Team`` owns the contacts, custom properties, mailing lists, transactional templates,
sending IPs, recorded events and sends, the idempotency store and the rate window of one Loops
account; its keys all share them. Each public method takes and returns wire-shaped JSON values
(camelCase dicts and lists) and raises ``ApiError`` for the documented failures. Public methods
hold the team's lock, so tests may call them from any thread while the server runs.
"""

from __future__ import annotations

import copy
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from .contacts import (
    MAX_STRING_LENGTH,
    ContactBook,
    ContactChanges,
    one_identifier,
    parse_changes,
)
from .errors import api_error
from .limits import MAX_IDEMPOTENCY_KEY, IdempotencyStore, RateWindow
from .properties import check_event_properties, check_new_property, label_for
from .records import (
    BUILTIN_PROPERTIES,
    PROPERTY_TYPES,
    Contact,
    EventRecord,
    MailingList,
    Property,
    PropertyType,
    SendRecord,
    Template,
    format_timestamp,
    make_id,
)
from .transactional import check_send, paginate, parse_per_page
from .webhooks import WebhookSender

__all__ = ["DEFAULT_REMOVAL_LIMIT", "REMOVAL_WINDOW", "Team"]

#: Suppression removals allowed per rolling window (the SDK docs show a limit of 100).
DEFAULT_REMOVAL_LIMIT: Final = 100
#: The rolling window the suppression removal quota counts over: 30 days.
REMOVAL_WINDOW: Final = 30 * 24 * 60 * 60.0


P = ParamSpec("P")
R = TypeVar("R")


def _synchronized(method: Callable[Concatenate[Team, P], R]) -> Callable[Concatenate[Team, P], R]:
    def locked(self: Team, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.lock:
            return method(self, *args, **kwargs)

    functools.update_wrapper(locked, method)
    return locked


class Team:
    """The data and rules of one Loops team (account).

    - ``name``: returned as ``teamName`` by ``GET /api-key``; the admin API addresses teams by it
    - ``keys``: the API keys that act for this team (all share its data and rate limit)
    - ``rate_limit``: requests per second, 0 turns limiting off (default 10)
    - ``reject_unknown_properties``: answer 400 for contact keys that are not defined
      properties instead of ignoring them (default ``False``)
    - ``removal_limit``: suppression removals allowed per 30 days (default 100)
    - ``clock``: wall-clock seconds, for idempotency expiry, quotas and timestamps
    - ``lock``: the lock public methods hold; pass the state's lock to share it

    >>> team = Team("acme", ["key_1"])
    >>> team.create_contact({"email": "ada@example.com"})["success"]
    True
    """

    def __init__(
        self,
        name: str,
        keys: Sequence[str] = (),
        *,
        rate_limit: int = 10,
        reject_unknown_properties: bool = False,
        removal_limit: int = DEFAULT_REMOVAL_LIMIT,
        clock: Callable[[], float] = time.time,
        lock: threading.RLock | None = None,
    ) -> None:
        self.name = name
        self.keys = list(keys)
        self.rate_limit = rate_limit
        self.reject_unknown_properties = reject_unknown_properties
        self.removal_limit = removal_limit
        self.lock = lock if lock is not None else threading.RLock()
        self.contacts = ContactBook()
        #: Custom properties only; the built-ins are ``BUILTIN_PROPERTIES``.
        self.properties: dict[str, Property] = {}
        self.lists: dict[str, MailingList] = {}
        self.templates: dict[str, Template] = {}
        self.sending_ips: list[str] = []
        self.events: list[EventRecord] = []
        self.sends: list[SendRecord] = []
        self.idempotency = IdempotencyStore(clock)
        self.window = RateWindow()
        self._clock = clock
        self._removals: deque[float] = deque()
        #: Where this team's contact events go (``set_webhook``); None sends none.
        self.webhooks: WebhookSender | None = None

    def __repr__(self) -> str:
        return f"Team(name={self.name!r}, contacts={len(self.contacts)})"

    # Setup and inspection (Python API) -------------------------------------------------------

    @_synchronized
    def add_property(self, key: str, type: PropertyType, label: str | None = None) -> Property:
        """Define a custom property (no checks beyond a clash: seeding may use any name)."""
        if key in self.properties:
            raise ValueError(f"property {key!r} already exists on team {self.name!r}")
        if type not in PROPERTY_TYPES:
            raise ValueError(f"property type must be one of {PROPERTY_TYPES}, got {type!r}")
        prop = Property(key, label if label is not None else label_for(key), type)
        self.properties[key] = prop
        return prop

    @_synchronized
    def add_list(
        self, list_id: str, name: str, *, description: str | None = None, is_public: bool = True
    ) -> MailingList:
        if list_id in self.lists:
            raise ValueError(f"mailing list {list_id!r} already exists on team {self.name!r}")
        mailing_list = MailingList(list_id, name, description, is_public)
        self.lists[list_id] = mailing_list
        return mailing_list

    @_synchronized
    def add_template(self, template: Template) -> Template:
        if template.id in self.templates:
            raise ValueError(f"template {template.id!r} already exists on team {self.name!r}")
        self.templates[template.id] = template
        return template

    @_synchronized
    def add_contact(self, contact: Contact) -> Contact:
        """Store a ready-made contact (for seeding); clashes are a ``ValueError``."""
        if not contact.created_at:
            contact.created_at = format_timestamp(self._clock())
        return self.contacts.add(contact)

    @_synchronized
    def find_contact(
        self, *, email: str | None = None, user_id: str | None = None
    ) -> Contact | None:
        """The stored contact with this email (any case) or userId, if any."""
        if email is not None:
            return self.contacts.by_email(email)
        if user_id is not None:
            return self.contacts.by_user_id(user_id)
        return None

    @_synchronized
    def set_suppressed(
        self, *, email: str | None = None, user_id: str | None = None, suppressed: bool = True
    ) -> Contact:
        """Put a contact on (or take it off) the suppression list, as a bounce would."""
        contact = self.find_contact(email=email, user_id=user_id)
        if contact is None:
            raise LookupError(
                f"team {self.name!r} has no contact with "
                f"{'email ' + repr(email) if email is not None else 'userId ' + repr(user_id)}"
            )
        contact.suppressed = suppressed
        return contact

    @_synchronized
    def snapshot(self, kind: str) -> list[Any]:
        """A JSON view of ``contacts``, ``events``, ``sends``, ``properties``, ``lists``,
        ``templates`` or ``idempotencyKeys``, for assertions and the admin API."""
        order = list(self.properties)
        views: dict[str, Callable[[], list[Any]]] = {
            "contacts": lambda: [c.to_admin(order) for c in self.contacts],
            "events": lambda: [e.to_dict() for e in self.events],
            "sends": lambda: [s.to_dict() for s in self.sends],
            "properties": lambda: [p.to_wire() for p in self.properties.values()],
            "lists": lambda: [m.to_wire() for m in self.lists.values()],
            "templates": lambda: [t.to_admin() for t in self.templates.values()],
            "idempotencyKeys": self.idempotency.keys,
        }
        if kind not in views:
            raise KeyError(f"unknown snapshot {kind!r}; choose one of: {', '.join(views)}")
        # A deep copy, so a caller can keep or change the view without touching the team.
        return copy.deepcopy(views[kind]())

    def take_rate_slot(self) -> tuple[bool, int]:
        """Count one request against the limit: ``(admitted, remaining)``; always admitted
        when limiting is off (``rate_limit`` 0)."""
        with self.lock:
            if self.rate_limit <= 0:
                return True, 0
            return self.window.take(self.rate_limit)

    # Webhooks ---------------------------------------------------------------------------------

    @_synchronized
    def set_webhook(self, url: str | None, secret: str | None = None) -> WebhookSender | None:
        """Send this team's contact events, signed with ``secret``, to ``url`` (None: stop)."""
        if self.webhooks is not None:
            self.webhooks.close()
            self.webhooks = None
        if url:
            if not secret:
                raise ValueError("a webhook URL needs its signing secret (whsec_...)")
            self.webhooks = WebhookSender(url, secret, clock=self._clock)
        return self.webhooks

    def _identity(self, contact: Contact) -> dict[str, Any]:
        return {"id": contact.id, "email": contact.email, "userId": contact.user_id}

    def _state_of(self, contact: Contact) -> tuple[bool, dict[str, bool]]:
        return contact.subscribed, {k: v for k, v in contact.lists.items() if v}

    def _emit_changes(self, contact: Contact, before: tuple[bool, dict[str, bool]] | None) -> None:
        """The events Loops sends for a contact that was created (``before`` None) or changed."""
        if self.webhooks is None:
            return
        identity = {"contactIdentity": self._identity(contact)}
        if before is None:
            wire = contact.to_wire(list(self.properties))
            self.webhooks.emit("contact.created", {**identity, "contact": wire})
            return
        subscribed, lists = self._state_of(contact)
        if before[0] and not subscribed:
            self.webhooks.emit("contact.unsubscribed", identity)
        for list_id in sorted(set(lists) ^ set(before[1])):
            mailing = self.lists.get(list_id)
            info = mailing.to_wire() if mailing is not None else {"id": list_id}
            name = "subscribed" if list_id in lists else "unsubscribed"
            self.webhooks.emit(f"contact.mailingList.{name}", {**identity, "mailingList": info})

    # Endpoints --------------------------------------------------------------------------------

    @_synchronized
    def api_key(self) -> dict[str, Any]:
        """``GET /api-key``."""
        return {"success": True, "teamName": self.name}

    def _changes(self, body: Mapping[str, Any], skip: Iterable[str] = ()) -> ContactChanges:
        return parse_changes(
            body,
            properties=self.properties,
            lists=self.lists,
            reject_unknown=self.reject_unknown_properties,
            skip=frozenset(skip),
        )

    def _new_contact(self, email: str) -> Contact:
        contact = Contact(make_id(), email, created_at=format_timestamp(self._clock()))
        return self.contacts.add(contact)

    def _upsert(self, changes: ContactChanges) -> tuple[Contact, bool]:
        """The update/event identity rules: match either identifier, create by email only."""
        if changes.email is None and changes.user_id is None:
            raise api_error(400, "An email or userId is required.")
        contact = self.contacts.resolve(changes.email, changes.user_id)
        created = contact is None
        before = None if contact is None else self._state_of(contact)
        if contact is None:
            if changes.email is None:
                raise api_error(400, "Contact not found.")
            contact = self._new_contact(changes.email)
        self.contacts.apply(contact, changes)
        self._emit_changes(contact, before)
        return contact, created

    @_synchronized
    def create_contact(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /contacts/create``."""
        changes = self._changes(body)
        if changes.email is None:
            raise api_error(400, "`email` is required to create a contact.")
        taken = self.contacts.by_email(changes.email) is not None or (
            changes.user_id is not None and self.contacts.by_user_id(changes.user_id) is not None
        )
        if taken:
            raise api_error(409, "Email or userId is already on list.")
        contact = self._new_contact(changes.email)
        self.contacts.apply(contact, changes)
        self._emit_changes(contact, None)
        return {"success": True, "id": contact.id}

    @_synchronized
    def update_contact(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /contacts/update``: upsert by email; by userId alone the contact must exist."""
        contact, _ = self._upsert(self._changes(body))
        return {"success": True, "id": contact.id}

    @_synchronized
    def find_all(self) -> list[dict[str, Any]]:
        """Every contact as ``/contacts/find`` returns it, in creation order (the audience an
        export would hold)."""
        order = list(self.properties)
        return [c.to_wire(order) for c in self.contacts]

    @_synchronized
    def find_contacts(self, *, email: str | None = None, user_id: str | None = None) -> list[Any]:
        """``GET /contacts/find``: ``[]`` or ``[contact]``."""
        email, user_id = one_identifier(email, user_id)
        contact = self.find_contact(email=email, user_id=user_id)
        return [] if contact is None else [contact.to_wire(list(self.properties))]

    @_synchronized
    def delete_contact(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /contacts/delete``: exactly one identifier in the body."""
        email, user_id = one_identifier(body.get("email"), body.get("userId"))
        contact = self.find_contact(email=email, user_id=user_id)
        if contact is None:
            raise api_error(404, "Contact not found.")
        self.contacts.remove(contact)
        if self.webhooks is not None:
            # Loops sends contact.unsubscribed alongside contact.deleted; unsubscribed goes first
            # here so that a receiver applying them in order ends with the contact gone.
            identity = {"contactIdentity": self._identity(contact)}
            self.webhooks.emit("contact.unsubscribed", identity)
            self.webhooks.emit("contact.deleted", identity)
        return {"success": True, "message": "Contact deleted."}

    def _quota(self) -> dict[str, int]:
        horizon = self._clock() - REMOVAL_WINDOW
        while self._removals and self._removals[0] <= horizon:
            self._removals.popleft()
        return {
            "limit": self.removal_limit,
            "remaining": max(0, self.removal_limit - len(self._removals)),
        }

    def _suppression_target(self, email: str | None, user_id: str | None) -> Contact:
        if email in (None, "") and user_id in (None, ""):
            raise api_error(400, "An email or userId is required.")
        email, user_id = one_identifier(email, user_id)
        contact = self.find_contact(email=email, user_id=user_id)
        if contact is None:
            raise api_error(404, "This contact was not found.")
        return contact

    @_synchronized
    def check_suppression(
        self, *, email: str | None = None, user_id: str | None = None
    ) -> dict[str, Any]:
        """``GET /contacts/suppression`` (no ``success`` key, as documented)."""
        contact = self._suppression_target(email, user_id)
        return {
            "contact": {"id": contact.id, "email": contact.email, "userId": contact.user_id},
            "isSuppressed": contact.suppressed,
            "removalQuota": self._quota(),
        }

    @_synchronized
    def remove_suppression(
        self, *, email: str | None = None, user_id: str | None = None
    ) -> dict[str, Any]:
        """``DELETE /contacts/suppression``: spends one unit of the 30-day removal quota."""
        contact = self._suppression_target(email, user_id)
        if not contact.suppressed:
            raise api_error(400, "This contact is not suppressed.")
        quota = self._quota()
        if quota["remaining"] <= 0:
            raise api_error(
                400,
                f"Suppression removal quota used up ({quota['limit']} removals per 30 days); "
                "wait for earlier removals to age out of the window.",
                removalQuota=quota,
            )
        contact.suppressed = False
        self._removals.append(self._clock())
        return {
            "success": True,
            "message": "Email removed from suppression list.",
            "removalQuota": self._quota(),
        }

    @_synchronized
    def list_properties(self, which: str | None = "all") -> list[Any]:
        """``GET /contacts/properties?list=all|custom``."""
        which = which or "all"
        if which not in ("all", "custom"):
            raise api_error(400, f'Invalid `list` value {which!r}: use "all" or "custom".')
        custom = [p.to_wire() for p in self.properties.values()]
        if which == "custom":
            return custom
        return [p.to_wire() for p in BUILTIN_PROPERTIES] + custom

    @_synchronized
    def list_custom_fields(self) -> list[Any]:
        """The legacy ``GET /contacts/customFields``: custom properties only."""
        return [p.to_wire() for p in self.properties.values()]

    @_synchronized
    def create_property(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /contacts/properties`` with ``{"name": camelCase, "type": ...}``."""
        name, kind = check_new_property(body, self.properties)
        self.add_property(name, kind)
        return {"success": True}

    @_synchronized
    def list_mailing_lists(self) -> list[Any]:
        """``GET /lists``."""
        return [m.to_wire() for m in self.lists.values()]

    def _check_idempotency(self, key: str | None) -> None:
        if key is None or key == "":
            return
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise api_error(
                400,
                f"Idempotency-Key is too long ({len(key)} characters); use at most "
                f"{MAX_IDEMPOTENCY_KEY}, such as a UUID.",
            )
        if key in self.idempotency:
            raise api_error(409, f"Request with idempotency key {key} has already been processed.")

    @_synchronized
    def send_event(
        self, body: Mapping[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``POST /events/send``: resolves (or creates) the contact, applies its properties."""
        self._check_idempotency(idempotency_key)
        event_name = body.get("eventName")
        if not isinstance(event_name, str) or not event_name.strip():
            raise api_error(400, '`eventName` is required: name the event (e.g. "signup").')
        if len(event_name) > MAX_STRING_LENGTH:
            raise api_error(400, f"`eventName` is longer than {MAX_STRING_LENGTH} characters.")
        event_properties = check_event_properties(body.get("eventProperties"))
        changes = self._changes(body, skip=("eventName", "eventProperties"))
        contact, created = self._upsert(changes)
        self.events.append(
            EventRecord(
                event_name=event_name,
                contact_id=contact.id,
                email=contact.email,
                user_id=contact.user_id,
                event_properties=event_properties,
                contact_properties={**changes.builtins, **changes.custom},
                mailing_lists=dict(changes.lists),
                idempotency_key=idempotency_key or None,
                created_contact=created,
                at=format_timestamp(self._clock()),
            )
        )
        if idempotency_key:
            self.idempotency.remember(idempotency_key)
        return {"success": True}

    @_synchronized
    def send_transactional(
        self, body: Mapping[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``POST /transactional``: records the send; ``addToAudience`` creates the contact."""
        self._check_idempotency(idempotency_key)
        checked = check_send(body, self.templates)
        contact = self.contacts.by_email(checked.email)
        if contact is None and checked.add_to_audience:
            contact = self._new_contact(checked.email)
        self.sends.append(
            SendRecord(
                transactional_id=checked.template.id,
                email=checked.email,
                data_variables=checked.data_variables,
                attachments=checked.attachments,
                add_to_audience=checked.add_to_audience,
                contact_id=contact.id if contact is not None else None,
                idempotency_key=idempotency_key or None,
                at=format_timestamp(self._clock()),
            )
        )
        if idempotency_key:
            self.idempotency.remember(idempotency_key)
        return {"success": True}

    @_synchronized
    def list_transactional(
        self, *, per_page: str | None, cursor: str | None, base_url: str
    ) -> dict[str, Any]:
        """The legacy ``GET /transactional``: published templates, oldest first."""
        size = parse_per_page(per_page)
        published = sorted(
            (t for t in self.templates.values() if t.published),
            key=lambda t: (t.created_at, t.id),
        )
        page = paginate(
            published,
            per_page=size,
            cursor=cursor,
            key=lambda t: t.id,
            next_url=lambda c: f"{base_url}/transactional?cursor={c}&perPage={size}",
        )
        return {"pagination": page.pagination, "data": [t.to_legacy_wire() for t in page.items]}

    @_synchronized
    def list_transactional_emails(
        self, *, per_page: str | None, cursor: str | None, base_url: str, root_url: str
    ) -> dict[str, Any]:
        """``GET /transactional-emails``: every template, drafts included, newest first."""
        size = parse_per_page(per_page, bare=True)
        newest_first = sorted(
            self.templates.values(), key=lambda t: (t.created_at, t.id), reverse=True
        )
        page = paginate(
            newest_first,
            per_page=size,
            cursor=cursor,
            key=lambda t: t.id,
            next_url=lambda c: f"{base_url}/transactional-emails?cursor={c}&perPage={size}",
            bare=True,
        )
        return {"pagination": page.pagination, "data": [t.to_wire(root_url) for t in page.items]}

    @_synchronized
    def list_sending_ips(self) -> list[str]:
        """``GET /dedicated-sending-ips``."""
        return list(self.sending_ips)
