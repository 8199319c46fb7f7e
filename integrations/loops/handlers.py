"""The functions behind the Loops actions, and the request each write action sends.

A ``build_<action>`` function describes the request of a write as a ``Request``; the handler
sends it and the action's plan previews it (see ``actions.py``), so a dry run shows exactly what
the handler would send.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from luabridge.action import CallContext
from luabridge.errors import APIError, IntegrationError, NotFoundError

from .account import (
    Request,
    account_of,
    as_items,
    as_object,
    compact,
    directory_of,
    forget,
    idempotency_key,
    noted,
    record,
    resolve,
    send_request,
)
from .directory import DirectoryError
from .wire import CONTACT_KEYS, contact_from_wire

if TYPE_CHECKING:
    from .models import (
        CheckContactSuppressionInput,
        CreateContactInput,
        CreateContactPropertyInput,
        DeleteContactInput,
        FindContactInput,
        GetContactInput,
        GetCurrentUserInput,
        ListContactPropertiesInput,
        ListContactsInput,
        ListDedicatedSendingIpsInput,
        ListMailingListsInput,
        ListTransactionalEmailsInput,
        RemoveContactSuppressionInput,
        SendEventInput,
        SendTransactionalEmailInput,
        UpdateContactInput,
    )

# --- contacts -----------------------------------------------------------------------------


__all__ = [
    "build_create_contact",
    "build_create_contact_property",
    "build_delete_contact",
    "build_remove_suppression",
    "build_send_event",
    "build_send_transactional_email",
    "build_update_contact",
    "check_properties",
    "contact_body",
    "create_contact",
    "create_contact_property",
    "delete_contact",
    "find_contact",
    "get_contact",
    "get_current_user",
    "list_contact_properties",
    "list_contacts",
    "list_dedicated_sending_ips",
    "list_mailing_lists",
    "list_transactional_emails",
    "lookup_params",
    "remove_suppression",
    "send_event",
    "send_transactional_email",
    "sent",
    "suppression",
    "update_contact",
    "update_identity",
]


def contact_body(
    params: CreateContactInput | UpdateContactInput, identity: Mapping[str, Any]
) -> dict[str, Any]:
    body = dict(identity)
    body.update(
        compact(
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


def _team_properties(ctx: CallContext, *, fresh: bool) -> frozenset[str]:
    """The keys of every contact property the team has (built-in and custom), cached per
    account for ``LoopsAccount.properties_ttl`` seconds; ``fresh`` asks Loops again."""
    account = account_of(ctx)
    keys = None if fresh else account.cached_properties()
    if keys is None:
        data = send_request(ctx, Request("GET", "/contacts/properties", params={"list": "all"}))
        keys = frozenset(str(p.get("key")) for p in as_items(data) if p.get("key"))
        account.remember_properties(keys)
    return keys


def _property_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def check_properties(ctx: CallContext, action: str, properties: Mapping[str, Any] | None) -> None:
    """Refuse custom properties the team has not defined: Loops accepts the request and drops
    their values without a word. A key missing from the cached list is looked up again before
    it is refused, so a property created a moment ago (in Loops' app or by this run) passes."""
    wanted = [k for k, v in (properties or {}).items() if v is not None and k not in CONTACT_KEYS]
    if not wanted:
        return
    known = _team_properties(ctx, fresh=False)
    if any(k not in known for k in wanted):
        known = _team_properties(ctx, fresh=True)
    unknown = [k for k in wanted if k not in known]
    if not unknown:
        return
    assert properties is not None
    fixes = "; ".join(
        f'create_contact_property{{name = "{k}", type = "{_property_type(properties[k])}"}}'
        for k in unknown
    )
    names = ", ".join(f"'{k}'" for k in unknown)
    custom = sorted(k for k in known if k not in CONTACT_KEYS)
    raise IntegrationError(
        f"loops.{action}: the team has no contact propert{'ies' if len(unknown) > 1 else 'y'} "
        f"{names}, so Loops would drop {'their values' if len(unknown) > 1 else 'its value'}; "
        f"nothing was sent. Create it first with {fixes} (types: string, number, boolean, "
        f"date), or use a property the team has: {', '.join(custom) or 'none yet'}",
        code="loops.unknown_property",
        retryable=False,
    )


def build_create_contact(ctx: CallContext, params: CreateContactInput) -> Request:
    check_properties(ctx, "create_contact", params.properties)
    identity = compact({"email": params.email, "userId": params.user_id})
    return Request("POST", "/contacts/create", json=contact_body(params, identity))


def create_contact(ctx: CallContext, params: CreateContactInput) -> dict[str, Any]:
    request = build_create_contact(ctx, params)
    data = as_object(send_request(ctx, request))
    contact_id = data.get("id")
    note = record(ctx, {**request.json, "id": contact_id}) if isinstance(contact_id, str) else None
    return noted({"success": True, "id": contact_id}, note)


def update_identity(ctx: CallContext, params: UpdateContactInput) -> dict[str, Any]:
    """The email/userId to send: as given, or worked out from the contact behind contact_id."""
    if params.contact_id is None:
        return compact({"email": params.email, "userId": params.user_id})
    current = resolve(ctx, params.contact_id)
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


def build_update_contact(ctx: CallContext, params: UpdateContactInput) -> Request:
    check_properties(ctx, "update_contact", params.properties)
    body = contact_body(params, update_identity(ctx, params))
    return Request("PUT", "/contacts/update", json=body)


def update_contact(ctx: CallContext, params: UpdateContactInput) -> dict[str, Any]:
    request = build_update_contact(ctx, params)
    data = as_object(send_request(ctx, request))
    contact_id = data.get("id")
    note = record(ctx, {**request.json, "id": contact_id}) if isinstance(contact_id, str) else None
    return noted({"success": True, "id": contact_id}, note)


def lookup_params(
    params: FindContactInput | CheckContactSuppressionInput | RemoveContactSuppressionInput,
) -> dict[str, Any]:
    return compact({"email": params.email, "userId": params.user_id})


def find_contact(ctx: CallContext, params: FindContactInput) -> dict[str, Any]:
    found = as_items(
        send_request(ctx, Request("GET", "/contacts/find", params=lookup_params(params)))
    )
    notes = [record(ctx, contact, replace=True) for contact in found]
    contacts = [contact_from_wire(contact) for contact in found]
    result = {"success": True, "contacts": contacts, "contact": contacts[0] if contacts else None}
    return noted(result, *notes)


def get_contact(ctx: CallContext, params: GetContactInput) -> dict[str, Any]:
    return {"success": True, "contact": contact_from_wire(resolve(ctx, params.contact_id))}


def list_contacts(ctx: CallContext, params: ListContactsInput) -> dict[str, Any]:
    account = account_of(ctx)
    try:
        directory = directory_of(ctx)
        rows, total = directory.page(account.account_id, params.limit, params.offset)
        synced = directory.sync_state(account.account_id)
    except DirectoryError as exc:
        raise IntegrationError(exc.args[0], code="loops.directory_unavailable") from exc
    end = params.offset + len(rows)
    freshness: dict[str, Any] = {"source": "seen", "synced_at": None}
    if synced is not None:
        when = datetime.fromtimestamp(synced[1], tz=UTC)
        freshness = {"source": synced[0], "synced_at": when.isoformat(timespec="seconds")}
    return {
        **freshness,
        "success": True,
        "contacts": [contact_from_wire(row) for row in rows],
        "total": total,
        "limit": params.limit,
        "offset": params.offset,
        "has_more": end < total,
        "next_offset": end if end < total else None,
    }


def build_delete_contact(ctx: CallContext, params: DeleteContactInput) -> Request:
    if params.contact_id is not None:
        current = resolve(ctx, params.contact_id)
        identity = (
            {"email": current["email"]} if current.get("email") else {"userId": current["userId"]}
        )
    else:
        identity = compact({"email": params.email, "userId": params.user_id})
    return Request("POST", "/contacts/delete", json=identity)


def delete_contact(ctx: CallContext, params: DeleteContactInput) -> dict[str, Any]:
    request = build_delete_contact(ctx, params)
    identity = {"email": request.json.get("email"), "user_id": request.json.get("userId")}
    try:
        data = as_object(send_request(ctx, request))
    except NotFoundError:
        forget(ctx, contact_id=params.contact_id, **identity)  # gone either way
        raise
    note = forget(ctx, contact_id=params.contact_id, **identity)
    return noted({"success": True, "message": data.get("message")}, note)


def suppression(ctx: CallContext, params: CheckContactSuppressionInput) -> dict[str, Any]:
    request = Request("GET", "/contacts/suppression", params=lookup_params(params))
    data = as_object(send_request(ctx, request))
    contact = as_object(data.get("contact"))
    note = record(ctx, compact(dict(contact))) if contact.get("id") else None
    quota = as_object(data.get("removalQuota"))
    result = {
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
    return noted(result, note)


def build_remove_suppression(ctx: CallContext, params: RemoveContactSuppressionInput) -> Request:
    return Request("DELETE", "/contacts/suppression", params=lookup_params(params))


def remove_suppression(ctx: CallContext, params: RemoveContactSuppressionInput) -> dict[str, Any]:
    data = as_object(send_request(ctx, build_remove_suppression(ctx, params)))
    quota = as_object(data.get("removalQuota"))
    return {
        "success": True,
        "message": data.get("message"),
        "removal_quota": dict(quota) if quota else None,
    }


# --- properties, lists, account -----------------------------------------------------------


#: The request of get_current_user, made once (a Request is immutable).
_API_KEY = Request("GET", "/api-key")


def get_current_user(ctx: CallContext, params: GetCurrentUserInput) -> dict[str, Any]:
    data = as_object(send_request(ctx, _API_KEY))
    return {"success": True, "team_name": data.get("teamName")}


def list_contact_properties(ctx: CallContext, params: ListContactPropertiesInput) -> dict[str, Any]:
    data = send_request(ctx, Request("GET", "/contacts/properties", params={"list": params.list}))
    properties = [
        {"key": p.get("key"), "label": p.get("label"), "type": p.get("type")}
        for p in as_items(data)
    ]
    return {"success": True, "properties": properties}


def build_create_contact_property(ctx: CallContext, params: CreateContactPropertyInput) -> Request:
    return Request("POST", "/contacts/properties", json={"name": params.name, "type": params.type})


def create_contact_property(ctx: CallContext, params: CreateContactPropertyInput) -> dict[str, Any]:
    send_request(ctx, build_create_contact_property(ctx, params))
    return {"success": True}


def list_mailing_lists(ctx: CallContext, params: ListMailingListsInput) -> dict[str, Any]:
    lists = [
        {
            "id": item.get("id"),
            "name": item.get("name"),
            "description": item.get("description"),
            "is_public": item.get("isPublic"),
        }
        for item in as_items(send_request(ctx, Request("GET", "/lists")))
    ]
    return {"success": True, "mailing_lists": lists}


def list_dedicated_sending_ips(
    ctx: CallContext, params: ListDedicatedSendingIpsInput
) -> dict[str, Any]:
    data = send_request(ctx, Request("GET", "/dedicated-sending-ips"))
    ips = [ip for ip in data if isinstance(ip, str)] if isinstance(data, list) else []
    return {"success": True, "ips": ips}


# --- sending ------------------------------------------------------------------------------


def build_send_event(ctx: CallContext, params: SendEventInput) -> Request:
    body: dict[str, Any] = {"eventName": params.event_name}
    body.update(compact({"email": params.email, "userId": params.user_id}))
    body.update(params.contact_properties or {})
    if params.properties is not None:
        body["eventProperties"] = dict(params.properties)
    if params.mailing_lists is not None:
        body["mailingLists"] = dict(params.mailing_lists)
    return Request("POST", "/events/send", json=body, idempotency_key=idempotency_key(params))


def sent(ctx: CallContext, request: Request) -> dict[str, Any]:
    data = as_object(send_request(ctx, request))
    return {
        "success": True,
        "idempotency_key": request.idempotency_key,
        "deduplicated": bool(data.get("deduplicated")),
    }


def send_event(ctx: CallContext, params: SendEventInput) -> dict[str, Any]:
    return sent(ctx, build_send_event(ctx, params))


def build_send_transactional_email(
    ctx: CallContext, params: SendTransactionalEmailInput
) -> Request:
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
    return Request("POST", "/transactional", json=body, idempotency_key=idempotency_key(params))


def send_transactional_email(
    ctx: CallContext, params: SendTransactionalEmailInput
) -> dict[str, Any]:
    return sent(ctx, build_send_transactional_email(ctx, params))


def list_transactional_emails(
    ctx: CallContext, params: ListTransactionalEmailsInput
) -> dict[str, Any]:
    query = compact({"perPage": str(params.per_page), "cursor": params.cursor})
    data = as_object(send_request(ctx, Request("GET", "/transactional", params=query)))
    emails = [
        {
            "id": item.get("id"),
            "name": item.get("name"),
            "last_updated": item.get("lastUpdated"),
            "data_variables": [v for v in item.get("dataVariables") or [] if isinstance(v, str)],
        }
        for item in as_items(data.get("data"))
    ]
    page = as_object(data.get("pagination"))
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
