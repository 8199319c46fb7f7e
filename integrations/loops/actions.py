"""The Loops actions, declared once: metadata, models, effect, examples and handler.

Each action is a ``luabridge.action.Action`` built from the models in ``models.py`` (named, so
that they are imported on first use) and a handler in ``handlers.py``; write and destructive
actions get a ``plan`` that previews the same ``Request`` their handler sends, so a dry run
shows exactly what would be sent.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from typing import Any

from luabridge.action import Action, CallContext, Example, model_ref

from . import handlers as h
from .account import LoopsAccount, Request, open_account, preview

__all__ = ["ACTIONS", "LoopsAccount", "open_account"]

#: Where the actions' models live: imported on the first use of one (see ``model_ref``).
_MODELS = f"{__package__}.models"


def _action(
    name: str,
    *,
    summary: str,
    description: str,
    input: str,
    output: str,
    effect: str,
    endpoint: str,
    examples: tuple[Example, ...],
    handler: Callable[[CallContext, Any], Mapping[str, Any]],
    build: Callable[[CallContext, Any], Request] | None = None,
    idempotency_param: str | None = None,
) -> Action:
    """An ``Action`` whose plan (for writes) previews the request ``build`` describes.

    ``input`` and ``output`` name classes of ``models.py``.
    """

    def plan(ctx: CallContext, params: Any) -> Mapping[str, Any]:
        assert build is not None
        return preview(ctx, build(ctx, params))

    return Action(
        name=name,
        summary=summary,
        description=description,
        input=model_ref(f"{_MODELS}:{input}"),
        output=model_ref(f"{_MODELS}:{output}"),
        effect=effect,  # type: ignore[arg-type]
        endpoint=endpoint,
        examples=examples,
        handler=handler,
        plan=plan if build is not None else None,
        idempotency_param=idempotency_param,
    )


# --- declarations -------------------------------------------------------------------------


def _lua(code: str) -> str:
    """An example's Lua source, written indented in a triple-quoted string."""
    return textwrap.dedent(code).strip()


_PROPERTIES_RULE = (
    "A custom property in properties must exist in the team first: Loops would silently drop "
    "the value of one it does not know, so the call fails with loops.unknown_property, naming "
    "it and the create_contact_property call that adds it, and sends nothing (the team's "
    "properties are looked up once a minute, and again when a name is missing)."
)
_DIRECTORY = (
    "The Loops API cannot list contacts or fetch one by id, so this reads the contact "
    "directory: a local SQLite file in which this integration records, per account, every "
    "contact it creates, updates, finds, fetches or deletes."
)
_KEY_NOTE = (
    " Each call sends an Idempotency-Key, returned as idempotency_key: yours, or one derived "
    "from the execution id, the call's place in the run and its parameters, so a retry or a "
    "resumed run never sends twice; deduplicated = true means Loops had already received it. "
    'A failure with delivered = "unknown" may have been delivered: send it again with the '
    "same idempotency_key."
)

ACTIONS: tuple[Action, ...] = (
    _action(
        "get_current_user",
        summary="Check the API key and get the name of the Loops team it belongs to.",
        description="Useful to verify that an account is configured and reachable.",
        input="GetCurrentUserInput",
        output="GetCurrentUserOutput",
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
        handler=h.get_current_user,
    ),
    _action(
        "create_contact",
        summary="Create a new contact in Loops.",
        description="Fails with loops.conflict if a contact already has this email or user_id; "
        "use update_contact to create-or-update. The new contact is recorded in the contact "
        f"directory. {_PROPERTIES_RULE}",
        input="CreateContactInput",
        output="CreateContactOutput",
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
        handler=h.create_contact,
        build=h.build_create_contact,
    ),
    _action(
        "update_contact",
        summary="Update a contact, or create it when updating by an email that is not there.",
        description="Name the contact with contact_id (an id this integration has seen; it is "
        "resolved through the contact directory and checked with Loops first), or with email "
        "and/or user_id. Only the fields you pass change; app.null in properties clears one. "
        "To change an email, pass the contact's user_id (or its contact_id) with the new email. "
        f"{_PROPERTIES_RULE}",
        input="UpdateContactInput",
        output="UpdateContactOutput",
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
        handler=h.update_contact,
        build=h.build_update_contact,
    ),
    _action(
        "find_contact",
        summary="Look a contact up in Loops by email or user_id.",
        description="Gives exactly one of email or user_id. contacts holds the match (or is "
        "empty) and contact is the match or nil. A found contact is recorded in the contact "
        "directory, so its id works with get_contact and update_contact afterwards.",
        input="FindContactInput",
        output="FindContactOutput",
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
        handler=h.find_contact,
    ),
    _action(
        "get_contact",
        summary="Get a contact by its id, fresh from Loops.",
        description="The id is resolved through the contact directory (Loops cannot look "
        "contacts up by id), then the contact is fetched from Loops by its email. An id the "
        "directory does not know gives loops.unknown_contact_id: call find_contact with email "
        "or user_id instead.",
        input="GetContactInput",
        output="GetContactOutput",
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
        handler=h.get_contact,
    ),
    _action(
        "list_contacts",
        summary="List the contacts this integration has seen for the account, a page at a time.",
        description=f"{_DIRECTORY} The directory lists the whole team once it is filled from "
        "Loops: by the signed Loops webhooks luabridge serve receives (contacts created, "
        "deleted, unsubscribed, mailing-list changes), by an audience CSV export imported with "
        "luabridge loops import-contacts, and, in --emulator runs, from the emulator's audience "
        "before the script starts. source and synced_at say which filled it last and when; "
        'source = "seen" means only contacts this integration touched are there. Contacts come '
        "in the order they were first seen, as last seen.",
        input="ListContactsInput",
        output="ListContactsOutput",
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
        handler=h.list_contacts,
    ),
    _action(
        "delete_contact",
        summary="Delete a contact from Loops.",
        description="Name it with exactly one of email, user_id or contact_id. It is removed "
        "from the contact directory too. Loops advises unsubscribing (update_contact with "
        "subscribed = false) rather than deleting people who opted out.",
        input="DeleteContactInput",
        output="DeleteContactOutput",
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
        handler=h.delete_contact,
        build=h.build_delete_contact,
    ),
    _action(
        "list_contact_properties",
        summary="List the contact properties of the team, built-in and custom.",
        description='Use list = "custom" for the team\'s own properties only. Keys are the '
        "names to use in properties tables.",
        input="ListContactPropertiesInput",
        output="ListContactPropertiesOutput",
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
        handler=h.list_contact_properties,
    ),
    _action(
        "create_contact_property",
        summary="Create a custom contact property.",
        description="Fails with loops.bad_request if the name is taken.",
        input="CreateContactPropertyInput",
        output="CreateContactPropertyOutput",
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
        handler=h.create_contact_property,
        build=h.build_create_contact_property,
    ),
    _action(
        "list_mailing_lists",
        summary="List the team's mailing lists.",
        description="The ids are what mailing_lists parameters take.",
        input="ListMailingListsInput",
        output="ListMailingListsOutput",
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
        handler=h.list_mailing_lists,
    ),
    _action(
        "send_event",
        summary="Send an event for a contact, to trigger the loops (automations) it starts.",
        description="The contact is found by email or user_id (or both); a new one is created "
        "for an unknown email." + _KEY_NOTE,
        input="SendEventInput",
        output="SendEventOutput",
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
        handler=h.send_event,
        build=h.build_send_event,
        idempotency_param="idempotency_key",
    ),
    _action(
        "send_transactional_email",
        summary="Send a transactional email (a published Loops template) to one address.",
        description="Transactional emails reach unsubscribed contacts too. The template's "
        "required data variables must be given." + _KEY_NOTE,
        input="SendTransactionalEmailInput",
        output="SendTransactionalEmailOutput",
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
        handler=h.send_transactional_email,
        build=h.build_send_transactional_email,
        idempotency_param="idempotency_key",
    ),
    _action(
        "list_transactional_emails",
        summary="List the published transactional emails, a page at a time.",
        description="Pass pagination.next_cursor as cursor to get the next page.",
        input="ListTransactionalEmailsInput",
        output="ListTransactionalEmailsOutput",
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
        handler=h.list_transactional_emails,
    ),
    _action(
        "check_contact_suppression",
        summary="Check whether Loops suppresses email to a contact (bounces, complaints).",
        description="Give exactly one of email or user_id. removal_quota says how many "
        "suppressions can still be lifted this month.",
        input="CheckContactSuppressionInput",
        output="CheckContactSuppressionOutput",
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
        handler=h.suppression,
    ),
    _action(
        "remove_contact_suppression",
        summary="Lift the suppression of a contact so Loops emails it again.",
        description="Give exactly one of email or user_id. Each removal uses up the quota that "
        "check_contact_suppression reports; a contact that is not suppressed gives "
        "loops.bad_request.",
        input="RemoveContactSuppressionInput",
        output="RemoveContactSuppressionOutput",
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
        handler=h.remove_suppression,
        build=h.build_remove_suppression,
    ),
    _action(
        "list_dedicated_sending_ips",
        summary="List the dedicated IP addresses Loops sends the team's email from.",
        description="Shared sending IPs are not included.",
        input="ListDedicatedSendingIpsInput",
        output="ListDedicatedSendingIpsOutput",
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
        handler=h.list_dedicated_sending_ips,
    ),
)
