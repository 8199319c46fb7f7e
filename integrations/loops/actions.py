"""The Loops actions: their metadata, the functions behind them and the per-account handle.

Each action is declared once as a ``luabridge.action.Action`` built from the models in
``models.py``. Handlers send requests through ``LoopsClient`` and keep the ``ContactDirectory`` up
to date; write and destructive actions have a ``plan`` built from the same request description
as the handler, so a dry run shows exactly what would be sent.
"""

from __future__ import annotations

import logging
import textwrap
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from luabridge.accounts import AccountSettings
from luabridge.action import Action, ActionInput, CallContext, Example
from luabridge.errors import APIError, ConfigError, IntegrationError, NotFoundError

if TYPE_CHECKING:
    import httpx

from .client import DEFAULT_BASE_URL, LoopsClient, preview_request
from .directory import (
    ContactDirectory,
    DirectoryError,
    account_identity,
    default_directory_path,
)
from .models import (
    CheckContactSuppressionInput,
    CheckContactSuppressionOutput,
    CreateContactInput,
    CreateContactOutput,
    CreateContactPropertyInput,
    CreateContactPropertyOutput,
    DeleteContactInput,
    DeleteContactOutput,
    FindContactInput,
    FindContactOutput,
    GetContactInput,
    GetContactOutput,
    GetCurrentUserInput,
    GetCurrentUserOutput,
    ListContactPropertiesInput,
    ListContactPropertiesOutput,
    ListContactsInput,
    ListContactsOutput,
    ListDedicatedSendingIpsInput,
    ListDedicatedSendingIpsOutput,
    ListMailingListsInput,
    ListMailingListsOutput,
    ListTransactionalEmailsInput,
    ListTransactionalEmailsOutput,
    RemoveContactSuppressionInput,
    RemoveContactSuppressionOutput,
    SendEventInput,
    SendEventOutput,
    SendTransactionalEmailInput,
    SendTransactionalEmailOutput,
    UpdateContactInput,
    UpdateContactOutput,
    contact_from_wire,
)

__all__ = ["ACTIONS", "LoopsAccount", "open_account"]

_log = logging.getLogger(__name__)
P = TypeVar("P", bound=ActionInput)


@dataclass
class LoopsAccount:
    """What ``ctx.client`` is for a Loops account: its HTTP client and its contact directory.

    - ``name``: the account name (``default``, ``marketing``, ...)
    - ``client``: the account's ``LoopsClient``
    - ``account_id``: the key of its rows in the directory (see ``account_identity``)
    - ``directory_path``: the directory file; it is opened on first use, so a folder that cannot
      be written only fails the actions that need the directory
    """

    name: str
    client: LoopsClient
    account_id: str
    directory_path: Path
    _directory: ContactDirectory | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def directory(self) -> ContactDirectory:
        """The contact directory, opened on first use (raises ``DirectoryError``)."""
        with self._lock:
            if self._directory is None:
                self._directory = ContactDirectory(self.directory_path)
            return self._directory

    def close(self) -> None:
        """Close the HTTP client and the directory."""
        self.client.close()
        with self._lock:
            if self._directory is not None:
                self._directory.close()
                self._directory = None


def open_account(
    settings: AccountSettings,
    *,
    directory_path: str | Path | None = None,
    transport: httpx.BaseTransport | None = None,
) -> LoopsAccount:
    """A ``LoopsAccount`` for ``settings``: the ``Integration.open_client`` of the Loops pack.

    The directory file is ``directory_path`` if given, else ``default_directory_path()``.
    """
    if not settings.api_key:
        raise ConfigError(
            f"Loops account {settings.name!r} has no API key; set LOOPS_API_KEY (for default) or "
            f"LOOPS_API_KEY_{settings.name.upper()}, or api_key_env in luabridge.toml"
        )
    base_url = settings.base_url or DEFAULT_BASE_URL
    client = LoopsClient(
        api_key=settings.api_key,
        base_url=base_url,
        timeout=settings.timeout or 10.0,
        rate_limit=10.0 if settings.rate_limit is None else settings.rate_limit,
        transport=transport,
    )
    return LoopsAccount(
        name=settings.name,
        client=client,
        account_id=account_identity(settings.name, base_url, settings.api_key),
        directory_path=Path(directory_path) if directory_path else default_directory_path(),
    )


# --- plumbing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """One request to Loops, described once for both the handler and the dry-run plan."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    idempotency_key: str | None = None


def _account(ctx: CallContext) -> LoopsAccount:
    if not isinstance(ctx.client, LoopsAccount):
        raise IntegrationError(
            f"{ctx.integration}.{ctx.account}: no Loops client is open for this call (got "
            f"{type(ctx.client).__name__}); a dry run cannot look contacts up without one, so "
            "name the contact by email or user_id instead of contact_id",
            code="loops.no_client",
        )
    return ctx.client


def _send(ctx: CallContext, request: _Request) -> Any:
    return _account(ctx).client.request(
        request.method,
        request.path,
        params=request.params,
        json=request.json,
        idempotency_key=request.idempotency_key,
        deadline=ctx.deadline,
    )


def _preview(ctx: CallContext, request: _Request) -> dict[str, Any]:
    """The plan of ``request``. Without the account's client (a dry run that opened none) the
    base URL is unknown, so ``url`` is the path relative to the account's base URL."""
    base_url = ctx.client.client.base_url if isinstance(ctx.client, LoopsAccount) else ""
    return preview_request(
        base_url,
        request.method,
        request.path,
        params=request.params,
        json=request.json,
        idempotency_key=request.idempotency_key,
    )


def _directory(ctx: CallContext) -> ContactDirectory:
    """The directory, for actions that cannot work without it."""
    try:
        return _account(ctx).directory
    except DirectoryError as exc:
        raise IntegrationError(exc.args[0], code="loops.directory_unavailable") from exc


def _record(ctx: CallContext, contact: Mapping[str, Any], *, replace: bool = False) -> None:
    """Best effort: the remote call already worked, so a directory failure is only logged."""
    if not contact.get("id"):
        return
    account = _account(ctx)
    try:
        account.directory.upsert(account.account_id, contact, replace=replace)
    except DirectoryError as exc:
        _log.warning("could not record contact %s: %s", contact.get("id"), exc)


def _forget(ctx: CallContext, **identity: str | None) -> None:
    account = _account(ctx)
    try:
        account.directory.remove(account.account_id, **identity)
    except DirectoryError as exc:
        _log.warning("could not remove contact from the directory: %s", exc)


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the entries that are None (parameters left out)."""
    return {k: v for k, v in values.items() if v is not None}


def _object(data: Any) -> Mapping[str, Any]:
    return data if isinstance(data, Mapping) else {}


def _items(data: Any) -> list[Mapping[str, Any]]:
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def _idempotency_key(params: SendEventInput | SendTransactionalEmailInput) -> str:
    """The caller's key, or one made for this call and kept on it so retries reuse it."""
    if params.idempotency_key:
        return params.idempotency_key
    if params._generated_key is None:
        params._generated_key = str(uuid.uuid4())
    return params._generated_key


def _unknown_contact_id(contact_id: str) -> IntegrationError:
    return NotFoundError(
        f"contact_id {contact_id!r} is not in the local contact directory for this "
        "account. Ids are known only after this integration created, updated, found or fetched "
        "the contact; call find_contact with email or user_id to look it up in Loops.",
        code="loops.unknown_contact_id",
    )


def _resolve(ctx: CallContext, contact_id: str) -> dict[str, Any]:
    """The contact with this id, fresh from ``/contacts/find``, found through the directory."""
    account = _account(ctx)
    stored = _directory(ctx).get(account.account_id, contact_id)
    if stored is None:
        raise _unknown_contact_id(contact_id)
    if stored.get("email"):
        query = {"email": stored["email"]}
    elif stored.get("userId"):
        query = {"userId": stored["userId"]}
    else:
        raise _unknown_contact_id(contact_id)
    found = _items(_send(ctx, _Request("GET", "/contacts/find", params=query)))
    for contact in found:
        _record(ctx, contact, replace=True)
    if not any(contact.get("id") == contact_id for contact in found):
        _forget(ctx, contact_id=contact_id)
        raise NotFoundError(
            f"contact {contact_id!r} is no longer in Loops (no contact has its "
            f"{next(iter(query))} {next(iter(query.values()))!r} any more); it has been removed "
            "from the contact directory. Use find_contact to look the person up again.",
            code="loops.not_found",
        )
    return next(dict(contact) for contact in found if contact.get("id") == contact_id)


def _action(
    name: str,
    *,
    summary: str,
    description: str,
    input: type[P],
    output: type[Any],
    effect: str,
    endpoint: str,
    examples: tuple[Example, ...],
    handler: Callable[[CallContext, P], Mapping[str, Any]],
    build: Callable[[CallContext, P], _Request] | None = None,
) -> Action:
    """An ``Action`` whose plan (for writes) previews the request ``build`` describes."""

    def plan(ctx: CallContext, params: Any) -> Mapping[str, Any]:
        assert build is not None
        return _preview(ctx, build(ctx, params))

    return Action(
        name=name,
        summary=summary,
        description=description,
        input=input,
        output=output,
        effect=effect,  # type: ignore[arg-type]
        endpoint=endpoint,
        examples=examples,
        handler=handler,
        plan=plan if build is not None else None,
    )


# --- contacts -----------------------------------------------------------------------------


def _contact_body(
    params: CreateContactInput | UpdateContactInput, identity: Mapping[str, Any]
) -> dict[str, Any]:
    body = dict(identity)
    body.update(
        _compact(
            {
                "firstName": params.first_name,
                "lastName": params.last_name,
                "source": params.source,
                "subscribed": params.subscribed,
                "userGroup": params.user_group,
            }
        )
    )
    body.update(params.properties or {})
    if params.mailing_lists is not None:
        body["mailingLists"] = dict(params.mailing_lists)
    return body


def _build_create_contact(ctx: CallContext, params: CreateContactInput) -> _Request:
    identity = _compact({"email": params.email, "userId": params.user_id})
    return _Request("POST", "/contacts/create", json=_contact_body(params, identity))


def _create_contact(ctx: CallContext, params: CreateContactInput) -> dict[str, Any]:
    request = _build_create_contact(ctx, params)
    data = _object(_send(ctx, request))
    contact_id = data.get("id")
    if isinstance(contact_id, str):
        _record(ctx, {**request.json, "id": contact_id})
    return {"success": True, "id": contact_id}


def _update_identity(ctx: CallContext, params: UpdateContactInput) -> dict[str, Any]:
    """The email/userId to send: as given, or worked out from the contact behind contact_id."""
    if params.contact_id is None:
        return _compact({"email": params.email, "userId": params.user_id})
    current = _resolve(ctx, params.contact_id)
    email, user_id = current.get("email"), current.get("userId")
    new_email = params.email if params.email and params.email != email else None
    if new_email and email and new_email.lower() == str(email).lower():
        new_email = None
    new_user_id = params.user_id if params.user_id and params.user_id != user_id else None
    if new_email and new_user_id:
        raise APIError(
            f"update_contact cannot change both the email and the user_id of contact "
            f"{params.contact_id!r} at once: Loops finds the contact by one of them. Change "
            "user_id in one call, then email in another.",
            code="loops.ambiguous_update",
        )
    if new_email:
        if not user_id:
            raise APIError(
                f"contact {params.contact_id!r} has no user_id, and Loops can change a contact's "
                "email only through its user_id. Set one first with update_contact{contact_id="
                "..., user_id=...}, then change the email.",
                code="loops.cannot_change_email",
            )
        return {"email": new_email, "userId": user_id}
    if new_user_id:
        return {"email": email, "userId": new_user_id}
    return {"email": email} if email else {"userId": user_id}


def _build_update_contact(ctx: CallContext, params: UpdateContactInput) -> _Request:
    body = _contact_body(params, _update_identity(ctx, params))
    return _Request("PUT", "/contacts/update", json=body)


def _update_contact(ctx: CallContext, params: UpdateContactInput) -> dict[str, Any]:
    request = _build_update_contact(ctx, params)
    data = _object(_send(ctx, request))
    contact_id = data.get("id")
    if isinstance(contact_id, str):
        _record(ctx, {**request.json, "id": contact_id})
    return {"success": True, "id": contact_id}


def _lookup_params(
    params: FindContactInput | CheckContactSuppressionInput | RemoveContactSuppressionInput,
) -> dict[str, Any]:
    return _compact({"email": params.email, "userId": params.user_id})


def _find_contact(ctx: CallContext, params: FindContactInput) -> dict[str, Any]:
    found = _items(_send(ctx, _Request("GET", "/contacts/find", params=_lookup_params(params))))
    for contact in found:
        _record(ctx, contact, replace=True)
    contacts = [contact_from_wire(contact) for contact in found]
    return {"success": True, "contacts": contacts, "contact": contacts[0] if contacts else None}


def _get_contact(ctx: CallContext, params: GetContactInput) -> dict[str, Any]:
    return {"success": True, "contact": contact_from_wire(_resolve(ctx, params.contact_id))}


def _list_contacts(ctx: CallContext, params: ListContactsInput) -> dict[str, Any]:
    account = _account(ctx)
    try:
        rows, total = _directory(ctx).page(account.account_id, params.limit, params.offset)
    except DirectoryError as exc:
        raise IntegrationError(exc.args[0], code="loops.directory_unavailable") from exc
    end = params.offset + len(rows)
    return {
        "success": True,
        "contacts": [contact_from_wire(row) for row in rows],
        "total": total,
        "limit": params.limit,
        "offset": params.offset,
        "has_more": end < total,
        "next_offset": end if end < total else None,
    }


def _build_delete_contact(ctx: CallContext, params: DeleteContactInput) -> _Request:
    if params.contact_id is not None:
        current = _resolve(ctx, params.contact_id)
        identity = (
            {"email": current["email"]} if current.get("email") else {"userId": current["userId"]}
        )
    else:
        identity = _compact({"email": params.email, "userId": params.user_id})
    return _Request("POST", "/contacts/delete", json=identity)


def _delete_contact(ctx: CallContext, params: DeleteContactInput) -> dict[str, Any]:
    request = _build_delete_contact(ctx, params)
    identity = {"email": request.json.get("email"), "user_id": request.json.get("userId")}
    try:
        data = _object(_send(ctx, request))
    except NotFoundError:
        _forget(ctx, contact_id=params.contact_id, **identity)  # gone either way
        raise
    _forget(ctx, contact_id=params.contact_id, **identity)
    return {"success": True, "message": data.get("message")}


def _suppression(ctx: CallContext, params: CheckContactSuppressionInput) -> dict[str, Any]:
    request = _Request("GET", "/contacts/suppression", params=_lookup_params(params))
    data = _object(_send(ctx, request))
    contact = _object(data.get("contact"))
    if contact.get("id"):
        _record(ctx, _compact(dict(contact)))
    quota = _object(data.get("removalQuota"))
    return {
        "success": True,
        "contact": {
            "id": contact.get("id"),
            "email": contact.get("email"),
            "user_id": contact.get("userId"),
        }
        if contact
        else None,
        "is_suppressed": data.get("isSuppressed"),
        "removal_quota": dict(quota) if quota else None,
    }


def _build_remove_suppression(ctx: CallContext, params: RemoveContactSuppressionInput) -> _Request:
    return _Request("DELETE", "/contacts/suppression", params=_lookup_params(params))


def _remove_suppression(ctx: CallContext, params: RemoveContactSuppressionInput) -> dict[str, Any]:
    data = _object(_send(ctx, _build_remove_suppression(ctx, params)))
    quota = _object(data.get("removalQuota"))
    return {
        "success": True,
        "message": data.get("message"),
        "removal_quota": dict(quota) if quota else None,
    }


# --- properties, lists, account -----------------------------------------------------------


def _get_current_user(ctx: CallContext, params: GetCurrentUserInput) -> dict[str, Any]:
    data = _object(_send(ctx, _Request("GET", "/api-key")))
    return {"success": True, "team_name": data.get("teamName")}


def _list_contact_properties(
    ctx: CallContext, params: ListContactPropertiesInput
) -> dict[str, Any]:
    data = _send(ctx, _Request("GET", "/contacts/properties", params={"list": params.list}))
    properties = [
        {"key": p.get("key"), "label": p.get("label"), "type": p.get("type")} for p in _items(data)
    ]
    return {"success": True, "properties": properties}


def _build_create_contact_property(
    ctx: CallContext, params: CreateContactPropertyInput
) -> _Request:
    return _Request("POST", "/contacts/properties", json={"name": params.name, "type": params.type})


def _create_contact_property(
    ctx: CallContext, params: CreateContactPropertyInput
) -> dict[str, Any]:
    _send(ctx, _build_create_contact_property(ctx, params))
    return {"success": True}


def _list_mailing_lists(ctx: CallContext, params: ListMailingListsInput) -> dict[str, Any]:
    lists = [
        {
            "id": item.get("id"),
            "name": item.get("name"),
            "description": item.get("description"),
            "is_public": item.get("isPublic"),
        }
        for item in _items(_send(ctx, _Request("GET", "/lists")))
    ]
    return {"success": True, "mailing_lists": lists}


def _list_dedicated_sending_ips(
    ctx: CallContext, params: ListDedicatedSendingIpsInput
) -> dict[str, Any]:
    data = _send(ctx, _Request("GET", "/dedicated-sending-ips"))
    ips = [ip for ip in data if isinstance(ip, str)] if isinstance(data, list) else []
    return {"success": True, "ips": ips}


# --- sending ------------------------------------------------------------------------------


def _build_send_event(ctx: CallContext, params: SendEventInput) -> _Request:
    body: dict[str, Any] = {"eventName": params.event_name}
    body.update(_compact({"email": params.email, "userId": params.user_id}))
    body.update(params.contact_properties or {})
    if params.properties is not None:
        body["eventProperties"] = dict(params.properties)
    if params.mailing_lists is not None:
        body["mailingLists"] = dict(params.mailing_lists)
    return _Request("POST", "/events/send", json=body, idempotency_key=_idempotency_key(params))


def _sent(ctx: CallContext, request: _Request) -> dict[str, Any]:
    data = _object(_send(ctx, request))
    return {
        "success": True,
        "idempotency_key": request.idempotency_key,
        "deduplicated": bool(data.get("deduplicated")),
    }


def _send_event(ctx: CallContext, params: SendEventInput) -> dict[str, Any]:
    return _sent(ctx, _build_send_event(ctx, params))


def _build_send_transactional_email(
    ctx: CallContext, params: SendTransactionalEmailInput
) -> _Request:
    body: dict[str, Any] = {"transactionalId": params.transactional_id, "email": params.email}
    if params.add_to_audience is not None:
        body["addToAudience"] = params.add_to_audience
    if params.data_variables is not None:
        body["dataVariables"] = dict(params.data_variables)
    if params.attachments is not None:
        body["attachments"] = [
            {"filename": a.filename, "contentType": a.content_type, "data": a.data}
            for a in params.attachments
        ]
    return _Request("POST", "/transactional", json=body, idempotency_key=_idempotency_key(params))


def _send_transactional_email(
    ctx: CallContext, params: SendTransactionalEmailInput
) -> dict[str, Any]:
    return _sent(ctx, _build_send_transactional_email(ctx, params))


def _list_transactional_emails(
    ctx: CallContext, params: ListTransactionalEmailsInput
) -> dict[str, Any]:
    query = _compact({"perPage": str(params.per_page), "cursor": params.cursor})
    data = _object(_send(ctx, _Request("GET", "/transactional", params=query)))
    emails = [
        {
            "id": item.get("id"),
            "name": item.get("name"),
            "last_updated": item.get("lastUpdated"),
            "data_variables": [v for v in item.get("dataVariables") or [] if isinstance(v, str)],
        }
        for item in _items(data.get("data"))
    ]
    page = _object(data.get("pagination"))
    pagination = {
        "total_results": page.get("totalResults"),
        "returned_results": page.get("returnedResults"),
        "per_page": page.get("perPage"),
        "total_pages": page.get("totalPages"),
        "next_cursor": page.get("nextCursor"),
        "next_page": page.get("nextPage"),
    }
    return {
        "success": True,
        "transactional_emails": emails,
        "pagination": pagination if page else None,
    }


# --- declarations -------------------------------------------------------------------------


def _lua(code: str) -> str:
    """An example's Lua source, written indented in a triple-quoted string."""
    return textwrap.dedent(code).strip()


_DIRECTORY = (
    "The Loops API cannot list contacts or fetch one by id, so this reads the contact "
    "directory: a local SQLite file in which this integration records, per account, every "
    "contact it creates, updates, finds, fetches or deletes."
)
_KEY_NOTE = (
    " Each call sends an Idempotency-Key (made once per call, reused on its retries, returned "
    "as idempotency_key), so a retry never sends twice; deduplicated = true means Loops had "
    "already received it."
)

ACTIONS: tuple[Action, ...] = (
    _action(
        "get_current_user",
        summary="Check the API key and get the name of the Loops team it belongs to.",
        description="Useful to verify that an account is configured and reachable.",
        input=GetCurrentUserInput,
        output=GetCurrentUserOutput,
        effect="read",
        endpoint="GET /api-key",
        examples=(
            Example(
                title="Which team does this key belong to?",
                code=_lua(
                    """
                    local me = app.integrations.loops.get_current_user()
                    print("team: " .. tostring(me.team_name))
                    """
                ),
            ),
        ),
        handler=_get_current_user,
    ),
    _action(
        "create_contact",
        summary="Create a new contact in Loops.",
        description="Fails with loops.conflict if a contact already has this email or user_id; "
        "use update_contact to create-or-update. The new contact is recorded in the contact "
        "directory.",
        input=CreateContactInput,
        output=CreateContactOutput,
        effect="write",
        endpoint="POST /contacts/create",
        examples=(
            Example(
                title="Create a contact",
                code=_lua(
                    """
                    local result = app.integrations.loops.create_contact({
                      email = "jane@example.com",
                      first_name = "Jane",
                      last_name = "Doe",
                    })
                    if result.success then
                      print(result.id)
                    else
                      print(result.code, result.error)
                    end
                    """
                ),
            ),
            Example(
                title="With custom properties and a mailing list",
                code=_lua(
                    """
                    local result = app.integrations.loops.create_contact({
                      email = "sam@example.com",
                      user_id = "user_sam",
                      properties = {plan = "free", seats = 1},
                      mailing_lists = {["clistnewsletter0000000001"] = true},
                    })
                    """
                ),
            ),
        ),
        handler=_create_contact,
        build=_build_create_contact,
    ),
    _action(
        "update_contact",
        summary="Update a contact, or create it when updating by an email that is not there.",
        description="Name the contact with contact_id (an id this integration has seen; it is "
        "resolved through the contact directory and checked with Loops first), or with email "
        "and/or user_id. Only the fields you pass change; app.null in properties clears one. "
        "To change an email, pass the contact's user_id (or its contact_id) with the new email.",
        input=UpdateContactInput,
        output=UpdateContactOutput,
        effect="write",
        endpoint="PUT /contacts/update",
        examples=(
            Example(
                title="Update a contact's custom properties by email",
                code=_lua(
                    """
                    local result = app.integrations.loops.update_contact({
                      email = "ada@example.com",
                      properties = {plan = "pro", company = "Analytical Engines"},
                    })
                    """
                ),
            ),
            Example(
                title="Update a contact by its id",
                code=_lua(
                    """
                    local found = app.integrations.loops.find_contact({email = "grace@example.com"})
                    local result = app.integrations.loops.update_contact({
                      contact_id = found.contact.id,
                      last_name = "Hopper",
                    })
                    """
                ),
            ),
        ),
        handler=_update_contact,
        build=_build_update_contact,
    ),
    _action(
        "find_contact",
        summary="Look a contact up in Loops by email or user_id.",
        description="Gives exactly one of email or user_id. contacts holds the match (or is "
        "empty) and contact is the match or nil. A found contact is recorded in the contact "
        "directory, so its id works with get_contact and update_contact afterwards.",
        input=FindContactInput,
        output=FindContactOutput,
        effect="read",
        endpoint="GET /contacts/find",
        examples=(
            Example(
                title="Find a contact by email",
                code=_lua(
                    """
                    local result = app.integrations.loops.find_contact({email = "ada@example.com"})
                    if result.contact then print(result.contact.id, result.contact.first_name) end
                    """
                ),
            ),
        ),
        handler=_find_contact,
    ),
    _action(
        "get_contact",
        summary="Get a contact by its id, fresh from Loops.",
        description="The id is resolved through the contact directory (Loops cannot look "
        "contacts up by id), then the contact is fetched from Loops by its email. An id the "
        "directory does not know gives loops.unknown_contact_id: call find_contact with email "
        "or user_id instead.",
        input=GetContactInput,
        output=GetContactOutput,
        effect="read",
        endpoint="contact directory, then GET /contacts/find",
        examples=(
            Example(
                title="Get a contact by id",
                code=_lua(
                    """
                    local found = app.integrations.loops.find_contact({user_id = "user_ada"})
                    local loops = app.integrations.loops
                    local result = loops.get_contact({contact_id = found.contact.id})
                    print(result.contact.email)
                    """
                ),
            ),
        ),
        handler=_get_contact,
    ),
    _action(
        "list_contacts",
        summary="List the contacts this integration has seen for the account, a page at a time.",
        description=f"{_DIRECTORY} It is not the whole Loops audience: contacts added in the "
        "Loops app, by forms or by other tools appear only once this integration has seen "
        "them (find_contact records one). Contacts come in the order they were first seen, "
        "as last seen.",
        input=ListContactsInput,
        output=ListContactsOutput,
        effect="read",
        endpoint="contact directory (no Loops request)",
        examples=(
            Example(
                title="First page",
                code=_lua(
                    """
                    local result = app.integrations.loops.list_contacts({})
                    """
                ),
            ),
            Example(
                title="Next page",
                code=_lua(
                    """
                    local result = app.integrations.loops.list_contacts({limit = 50, offset = 50})
                    """
                ),
            ),
        ),
        handler=_list_contacts,
    ),
    _action(
        "delete_contact",
        summary="Delete a contact from Loops.",
        description="Name it with exactly one of email, user_id or contact_id. It is removed "
        "from the contact directory too. Loops advises unsubscribing (update_contact with "
        "subscribed = false) rather than deleting people who opted out.",
        input=DeleteContactInput,
        output=DeleteContactOutput,
        effect="destructive",
        endpoint="POST /contacts/delete",
        examples=(
            Example(
                title="Delete a contact by email",
                code=_lua(
                    """
                    app.integrations.loops.create_contact({email = "leaving@example.com"})
                    local result = app.integrations.loops.delete_contact({
                      email = "leaving@example.com",
                    })
                    """
                ),
            ),
        ),
        handler=_delete_contact,
        build=_build_delete_contact,
    ),
    _action(
        "list_contact_properties",
        summary="List the contact properties of the team, built-in and custom.",
        description='Use list = "custom" for the team\'s own properties only. Keys are the '
        "names to use in properties tables.",
        input=ListContactPropertiesInput,
        output=ListContactPropertiesOutput,
        effect="read",
        endpoint="GET /contacts/properties",
        examples=(
            Example(
                title="List custom properties",
                code=_lua(
                    """
                    local result = app.integrations.loops.list_contact_properties({list = "custom"})
                    for _, p in ipairs(result.properties) do print(p.key, p.type) end
                    """
                ),
            ),
        ),
        handler=_list_contact_properties,
    ),
    _action(
        "create_contact_property",
        summary="Create a custom contact property.",
        description="Fails with loops.bad_request if the name is taken.",
        input=CreateContactPropertyInput,
        output=CreateContactPropertyOutput,
        effect="write",
        endpoint="POST /contacts/properties",
        examples=(
            Example(
                title="Add a string property",
                code=_lua(
                    """
                    local result = app.integrations.loops.create_contact_property({
                      name = "favoriteColor",
                      type = "string",
                    })
                    """
                ),
            ),
        ),
        handler=_create_contact_property,
        build=_build_create_contact_property,
    ),
    _action(
        "list_mailing_lists",
        summary="List the team's mailing lists.",
        description="The ids are what mailing_lists parameters take.",
        input=ListMailingListsInput,
        output=ListMailingListsOutput,
        effect="read",
        endpoint="GET /lists",
        examples=(
            Example(
                title="List mailing lists",
                code=_lua(
                    """
                    local result = app.integrations.loops.list_mailing_lists()
                    for _, list in ipairs(result.mailing_lists) do print(list.id, list.name) end
                    """
                ),
            ),
        ),
        handler=_list_mailing_lists,
    ),
    _action(
        "send_event",
        summary="Send an event for a contact, to trigger the loops (automations) it starts.",
        description="The contact is found by email or user_id (or both); a new one is created "
        "for an unknown email." + _KEY_NOTE,
        input=SendEventInput,
        output=SendEventOutput,
        effect="write",
        endpoint="POST /events/send",
        examples=(
            Example(
                title="Send a signup event",
                code=_lua(
                    """
                    local result = app.integrations.loops.send_event({
                      email = "ada@example.com",
                      event_name = "signup",
                    })
                    """
                ),
            ),
            Example(
                title="Send an event with properties",
                code=_lua(
                    """
                    local result = app.integrations.loops.send_event({
                      email = "ada@example.com",
                      event_name = "purchase",
                      properties = {product = "Pro Plan", amount = 99.00},
                    })
                    """
                ),
            ),
        ),
        handler=_send_event,
        build=_build_send_event,
    ),
    _action(
        "send_transactional_email",
        summary="Send a transactional email (a published Loops template) to one address.",
        description="Transactional emails reach unsubscribed contacts too. The template's "
        "required data variables must be given." + _KEY_NOTE,
        input=SendTransactionalEmailInput,
        output=SendTransactionalEmailOutput,
        effect="write",
        endpoint="POST /transactional",
        examples=(
            Example(
                title="Send a transactional email",
                code=_lua(
                    """
                    local result = app.integrations.loops.send_transactional_email({
                      transactional_id = "ctxwelcome000000000000002",
                      email = "ada@example.com",
                      data_variables = {first_name = "Ada"},
                    })
                    """
                ),
            ),
            Example(
                title="With required data variables",
                code=_lua(
                    """
                    local result = app.integrations.loops.send_transactional_email({
                      transactional_id = "ctxreceipt000000000000001",
                      email = "grace@example.com",
                      data_variables = {order_id = "A-1001", amount = 49.5},
                      add_to_audience = true,
                    })
                    -- keep result.idempotency_key to retry later without sending twice
                    """
                ),
            ),
        ),
        handler=_send_transactional_email,
        build=_build_send_transactional_email,
    ),
    _action(
        "list_transactional_emails",
        summary="List the published transactional emails, a page at a time.",
        description="Pass pagination.next_cursor as cursor to get the next page.",
        input=ListTransactionalEmailsInput,
        output=ListTransactionalEmailsOutput,
        effect="read",
        endpoint="GET /transactional",
        examples=(
            Example(
                title="List transactional emails",
                code=_lua(
                    """
                    local result = app.integrations.loops.list_transactional_emails({per_page = 20})
                    for _, t in ipairs(result.transactional_emails) do print(t.id, t.name) end
                    """
                ),
            ),
        ),
        handler=_list_transactional_emails,
    ),
    _action(
        "check_contact_suppression",
        summary="Check whether Loops suppresses email to a contact (bounces, complaints).",
        description="Give exactly one of email or user_id. removal_quota says how many "
        "suppressions can still be lifted this month.",
        input=CheckContactSuppressionInput,
        output=CheckContactSuppressionOutput,
        effect="read",
        endpoint="GET /contacts/suppression",
        examples=(
            Example(
                title="Is this contact suppressed?",
                code=_lua(
                    """
                    local result = app.integrations.loops.check_contact_suppression({
                      email = "barbara@example.com",
                    })
                    print(result.is_suppressed)
                    """
                ),
            ),
        ),
        handler=_suppression,
    ),
    _action(
        "remove_contact_suppression",
        summary="Lift the suppression of a contact so Loops emails it again.",
        description="Give exactly one of email or user_id. Each removal uses up the quota that "
        "check_contact_suppression reports; a contact that is not suppressed gives "
        "loops.bad_request.",
        input=RemoveContactSuppressionInput,
        output=RemoveContactSuppressionOutput,
        effect="write",
        endpoint="DELETE /contacts/suppression",
        examples=(
            Example(
                title="Lift a suppression when there is one",
                code=_lua(
                    """
                    local loops = app.integrations.loops
                    local who = {email = "barbara@example.com"}
                    if loops.check_contact_suppression(who).is_suppressed then
                      local result = loops.remove_contact_suppression(who)
                      print(result.removal_quota.remaining)
                    end
                    """
                ),
            ),
        ),
        handler=_remove_suppression,
        build=_build_remove_suppression,
    ),
    _action(
        "list_dedicated_sending_ips",
        summary="List the dedicated IP addresses Loops sends the team's email from.",
        description="Shared sending IPs are not included.",
        input=ListDedicatedSendingIpsInput,
        output=ListDedicatedSendingIpsOutput,
        effect="read",
        endpoint="GET /dedicated-sending-ips",
        examples=(
            Example(
                title="List sending IPs",
                code=_lua(
                    """
                    local result = app.integrations.loops.list_dedicated_sending_ips()
                    for _, ip in ipairs(result.ips) do print(ip) end
                    """
                ),
            ),
        ),
        handler=_list_dedicated_sending_ips,
    ),
)
