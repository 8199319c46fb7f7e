"""Tests of ``integrations.loops.models``: parameter rules, aliases, limits and output shapes.

Parameters are validated as the runtime does it (``strict=True``); the plans of the write
actions show how each model becomes the request Loops receives.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pydantic import ValidationError

import integrations.loops as pack
from integrations.loops import account as account_module, actions as actions_module, models
from integrations.loops.actions import LoopsAccount, open_account
from integrations.loops.emulator.seed import (
    ADA_CONTACT_ID,
    ADA_EMAIL,
    ADA_USER_ID,
    BARBARA_CONTACT_ID,
    BARBARA_EMAIL,
    BETA_LIST_ID,
    DEMO_KEYS,
    GRACE_EMAIL,
    NEWSLETTER_LIST_ID,
    RECEIPT_TEMPLATE_ID,
    SENDING_IPS,
    WELCOME_TEMPLATE_ID,
)
from luabridge.accounts import AccountSettings
from luabridge.action import ActionInput, ActionResult, CallContext
from luabridge.errors import IntegrationError

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

ACTIONS = {action.name: action for action in pack.integration.actions}


def parse(action: str, **params: Any) -> Any:
    return ACTIONS[action].input.model_validate(params, strict=True)


def refusal(action: str, **params: Any) -> str:
    with pytest.raises(ValidationError) as info:
        parse(action, **params)
    return str(info.value)


@pytest.fixture
def account(tmp_path: Path) -> Iterator[LoopsAccount]:
    def offline(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a plan must not send {request.method} {request.url}")

    settings = AccountSettings(name="default", api_key="k", base_url="http://loops.test/api/v1")
    opened = open_account(
        settings,
        directory_path=tmp_path / "contacts.sqlite3",
        transport=httpx.MockTransport(offline),
    )
    yield opened
    opened.close()


def context(client: Any) -> CallContext:
    return CallContext("loops", "default", client, time.monotonic() + 30, "run-1")


# --- declarations ---------------------------------------------------------------------------


def test_integration_declares_every_action() -> None:
    assert set(ACTIONS) == {
        "get_current_user",
        "create_contact",
        "update_contact",
        "find_contact",
        "get_contact",
        "list_contacts",
        "delete_contact",
        "list_contact_properties",
        "create_contact_property",
        "list_mailing_lists",
        "send_event",
        "send_transactional_email",
        "list_transactional_emails",
        "check_contact_suppression",
        "remove_contact_suppression",
        "list_dedicated_sending_ips",
    }
    assert pack.integration.name == "loops"
    assert pack.integration.env_prefix == "LOOPS"
    assert "contact directory" in pack.integration.docs_notes
    assert "LUABRIDGE_LOOPS_DIRECTORY" in pack.integration.docs_notes


@pytest.mark.parametrize(
    ("name", "effect"),
    [
        ("create_contact", "write"),
        ("update_contact", "write"),
        ("delete_contact", "destructive"),
        ("create_contact_property", "write"),
        ("send_event", "write"),
        ("send_transactional_email", "write"),
        ("remove_contact_suppression", "write"),
        ("find_contact", "read"),
        ("list_contacts", "read"),
        ("check_contact_suppression", "read"),
    ],
)
def test_action_effect_tags(name: str, effect: str) -> None:
    assert ACTIONS[name].effect == effect


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_action_metadata_complete(name: str) -> None:
    action = ACTIONS[name]
    assert action.summary.endswith(".") and action.description and action.endpoint
    assert issubclass(action.input, ActionInput) and issubclass(action.output, ActionResult)
    for example in action.examples:
        assert "app.integrations.loops" in example.code and f".{name}(" in example.code
        assert example.title and not example.code.startswith((" ", "\n"))
    assert (action.plan is None) == (action.effect == "read")
    for model in (action.input, action.output):
        for field_name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{field_name} has no description"


def test_directory_backed_actions_say_so() -> None:
    assert "contact directory" in ACTIONS["list_contacts"].description
    assert "contact directory" in ACTIONS["list_contacts"].endpoint
    assert ACTIONS["get_contact"].endpoint.startswith("contact directory")


@pytest.mark.parametrize("module", [pack, models, actions_module, account_module])
def test_all_sorted_and_complete(module: Any) -> None:
    exported = module.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(module, name) for name in exported)


# --- aliases --------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["create_contact", "update_contact"])
@pytest.mark.parametrize("spelling", ["properties", "custom_properties"])
def test_contact_properties_alias_accepted(action: str, spelling: str) -> None:
    params = parse(action, email="jane@example.com", **{spelling: {"plan": "pro", "seats": 3}})
    assert params.properties == {"plan": "pro", "seats": 3}


def test_contact_properties_both_spellings_refused() -> None:
    message = refusal("create_contact", email="a@b.co", properties={}, custom_properties={})
    assert "give properties or its alias custom_properties, not both" in message


@pytest.mark.parametrize("spelling", ["properties", "event_properties"])
def test_event_properties_alias_accepted(spelling: str) -> None:
    params = parse("send_event", email="a@b.co", event_name="purchase", **{spelling: {"n": 9.5}})
    assert params.properties == {"n": 9.5}


def test_event_properties_null_refused() -> None:
    message = refusal("send_event", email="a@b.co", event_name="e", event_properties={"x": None})
    assert "event properties cannot be null (got null for x)" in message


def test_contact_property_null_accepted_to_clear() -> None:
    assert parse("update_contact", email="a@b.co", properties={"plan": None}).properties == {
        "plan": None
    }


def test_attachment_content_type_alias_accepted() -> None:
    params = parse(
        "send_transactional_email",
        transactional_id="t1",
        email="a@b.co",
        attachments=[{"filename": "a.txt", "contentType": "text/plain", "data": "aGk="}],
    )
    assert params.attachments[0].content_type == "text/plain"


# --- refusals and limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "params", "field"),
    [
        ("create_contact", {"email": "a@b.co", "emial": "x"}, "emial"),
        ("list_contacts", {"page": 2}, "page"),
        ("send_event", {"email": "a@b.co", "event_name": "e", "eventName": "e"}, "eventName"),
        ("get_current_user", {"verbose": True}, "verbose"),
    ],
)
def test_unknown_fields_refused(action: str, params: dict[str, Any], field: str) -> None:
    message = refusal(action, **params)
    assert field in message and "Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("params", "ok"),
    [
        ({}, True),
        ({"limit": 1}, True),
        ({"limit": 50, "offset": 500}, True),
        ({"limit": 0}, False),
        ({"limit": 51}, False),
        ({"offset": -1}, False),
        ({"limit": 10.5}, False),
    ],
)
def test_list_contacts_limits(params: dict[str, Any], ok: bool) -> None:
    if ok:
        parsed = parse("list_contacts", **params)
        assert (parsed.limit, parsed.offset) == (params.get("limit", 50), params.get("offset", 0))
    else:
        refusal("list_contacts", **params)


@pytest.mark.parametrize(("per_page", "ok"), [(10, True), (50, True), ("20", True), (9, False)])
def test_list_transactional_emails_per_page_limits(per_page: Any, ok: bool) -> None:
    if ok:
        assert parse("list_transactional_emails", per_page=per_page).per_page == int(per_page)
    else:
        refusal("list_transactional_emails", per_page=per_page)


def test_list_transactional_emails_defaults() -> None:
    params = parse("list_transactional_emails")
    assert (params.per_page, params.cursor) == (20, None)


def test_update_contact_without_identity_refused() -> None:
    message = refusal("update_contact", first_name="Jane")
    assert "needs contact_id, email or user_id" in message


@pytest.mark.parametrize(
    "identity",
    [
        {"contact_id": "c1"},
        {"email": "a@b.co"},
        {"user_id": "u1"},
        {"email": "a@b.co", "user_id": "u1"},
    ],
)
def test_update_contact_any_identity_accepted(identity: dict[str, str]) -> None:
    parse("update_contact", first_name="Jane", **identity)


@pytest.mark.parametrize(
    "action", ["find_contact", "check_contact_suppression", "remove_contact_suppression"]
)
def test_lookup_needs_exactly_one_identifier(action: str) -> None:
    assert "exactly one of email or user_id" in refusal(action)
    assert "exactly one of email or user_id" in refusal(action, email="a@b.co", user_id="u")
    parse(action, user_id="u")


def test_delete_contact_needs_exactly_one_identifier() -> None:
    assert "exactly one of email, user_id or contact_id" in refusal("delete_contact")
    refusal("delete_contact", email="a@b.co", contact_id="c1")
    parse("delete_contact", contact_id="c1")


def test_send_event_needs_a_contact() -> None:
    assert "needs email or user_id" in refusal("send_event", event_name="signup")
    parse("send_event", event_name="signup", user_id="u1")


def test_email_typo_refused() -> None:
    assert "is not an email address" in refusal("create_contact", email="jane.example.com")


def test_standard_field_in_properties_refused_with_parameter_name() -> None:
    message = refusal("create_contact", email="a@b.co", properties={"firstName": "Jane"})
    assert "pass it as the first_name parameter" in message


def test_property_value_table_refused() -> None:
    refusal("create_contact", email="a@b.co", properties={"plan": {"nested": True}})


def test_create_contact_property_name_suggests_camel_case() -> None:
    message = refusal("create_contact_property", name="favorite_color", type="string")
    assert "try 'favoriteColor'" in message
    refusal("create_contact_property", name="plan", type="text")


def test_data_variables_shapes() -> None:
    params = parse(
        "send_transactional_email",
        transactional_id="t1",
        email="a@b.co",
        data_variables={"name": "Ada", "total": 9.5, "items": [{"sku": "A", "qty": 2}]},
    )
    assert params.data_variables["items"] == [{"sku": "A", "qty": 2}]
    refusal(
        "send_transactional_email", transactional_id="t", email="a@b.co", data_variables={"x": None}
    )


def test_attachment_not_base64_refused() -> None:
    message = refusal(
        "send_transactional_email",
        transactional_id="t1",
        email="a@b.co",
        attachments=[{"filename": "a", "content_type": "text/plain", "data": "not base64!"}],
    )
    assert "base64" in message


def test_idempotency_key_length_limited() -> None:
    refusal("send_event", email="a@b.co", event_name="e", idempotency_key="k" * 101)


# --- outputs --------------------------------------------------------------------------------


def test_contact_from_wire_snake_case_and_properties() -> None:
    wire = {
        "id": "c1",
        "email": "ada@example.com",
        "firstName": "Ada",
        "lastName": None,
        "source": "API",
        "subscribed": True,
        "userGroup": "",
        "userId": "user_ada",
        "plan": "pro",
        "seats": 5,
        "mailingLists": {"l1": True},
        "optInStatus": None,
    }
    contact = models.Contact.model_validate(models.contact_from_wire(wire))
    assert contact.first_name == "Ada" and contact.user_id == "user_ada"
    assert contact.properties == {"plan": "pro", "seats": 5}
    assert contact.mailing_lists == {"l1": True}


def test_output_models_tolerate_new_fields() -> None:
    result = models.FindContactOutput.model_validate(
        {"success": True, "newTopLevel": 1, "contacts": [{"id": "c1", "brandNew": "x"}]}
    )
    assert result.contacts[0].id == "c1"


# --- plans ----------------------------------------------------------------------------------


def plan(account: Any, action: str, **params: Any) -> dict[str, Any]:
    spec = ACTIONS[action]
    assert spec.plan is not None
    return dict(spec.plan(context(account), parse(action, **params)))


def test_plan_create_contact_exact_request(account: LoopsAccount) -> None:
    # The team's properties are cached (a fresh account would read them, as a plan may).
    account.remember_properties(frozenset({"plan", "vip"}))
    request = plan(
        account,
        "create_contact",
        email="jane@example.com",
        first_name="Jane",
        user_group="trial",
        mailing_lists={"l1": True},
        custom_properties={"plan": "pro", "vip": None},
    )
    assert request == {
        "method": "POST",
        "url": "http://loops.test/api/v1/contacts/create",
        "params": None,
        "json": {
            "email": "jane@example.com",
            "firstName": "Jane",
            "userGroup": "trial",
            "plan": "pro",
            "vip": None,
            "mailingLists": {"l1": True},
        },
        "headers": {"Accept": "application/json", "Content-Type": "application/json"},
    }


def test_plan_send_event_has_idempotency_key(account: LoopsAccount) -> None:
    params = parse(
        "send_event", email="a@b.co", event_name="purchase", event_properties={"amount": 99.0}
    )
    spec = ACTIONS["send_event"]
    assert spec.plan is not None
    first = spec.plan(context(account), params)
    again = spec.plan(context(account), params)
    key = first["headers"]["Idempotency-Key"]
    assert len(key) == 36 and again["headers"]["Idempotency-Key"] == key
    assert first["json"] == {
        "eventName": "purchase",
        "email": "a@b.co",
        "eventProperties": {"amount": 99.0},
    }
    other = plan(account, "send_event", email="a@b.co", event_name="purchase")
    assert other["headers"]["Idempotency-Key"] != key


def test_plan_send_transactional_email_given_key(account: LoopsAccount) -> None:
    request = plan(
        account,
        "send_transactional_email",
        transactional_id="t1",
        email="a@b.co",
        add_to_audience=True,
        data_variables={"name": "Ada"},
        attachments=[{"filename": "a.txt", "content_type": "text/plain", "data": "aGk="}],
        idempotency_key="order-1001",
    )
    assert request["url"] == "http://loops.test/api/v1/transactional"
    assert request["headers"]["Idempotency-Key"] == "order-1001"
    assert request["json"] == {
        "transactionalId": "t1",
        "email": "a@b.co",
        "addToAudience": True,
        "dataVariables": {"name": "Ada"},
        "attachments": [{"filename": "a.txt", "contentType": "text/plain", "data": "aGk="}],
    }


def test_plan_delete_and_suppression_removal(account: LoopsAccount) -> None:
    delete = plan(account, "delete_contact", user_id="u1")
    assert (delete["method"], delete["json"]) == ("POST", {"userId": "u1"})
    removal = plan(account, "remove_contact_suppression", email="a@b.co")
    assert (removal["method"], removal["params"], removal["json"]) == (
        "DELETE",
        {"email": "a@b.co"},
        None,
    )


def test_plan_never_carries_authorization(account: LoopsAccount) -> None:
    for name, action in ACTIONS.items():
        if action.effect == "read":
            continue
        request = plan(account, name, **_minimal[name])
        assert "Authorization" not in request["headers"]
        assert "k" not in request["headers"].values()


def test_plan_without_client_uses_path(account: LoopsAccount) -> None:
    request = plan(None, "create_contact_property", name="favoriteColor", type="string")
    assert request["url"] == "/contacts/properties"
    assert request["json"] == {"name": "favoriteColor", "type": "string"}


_minimal: dict[str, dict[str, Any]] = {
    "create_contact": {"email": "a@b.co"},
    "update_contact": {"email": "a@b.co"},
    "delete_contact": {"email": "a@b.co"},
    "create_contact_property": {"name": "plan", "type": "string"},
    "send_event": {"email": "a@b.co", "event_name": "e"},
    "send_transactional_email": {"transactional_id": "t", "email": "a@b.co"},
    "remove_contact_suppression": {"email": "a@b.co"},
}


# --- outputs from real answers (emulator over HTTP) -----------------------------------------


@pytest.fixture
def loops(emulator: EmulatorServer, tmp_path: Path) -> Iterator[LoopsAccount]:
    settings = AccountSettings(
        name="default", api_key=DEMO_KEYS["default"], base_url=emulator.base_url
    )
    account = open_account(settings, directory_path=tmp_path / "contacts.sqlite3")
    yield account
    account.close()


def call(account: LoopsAccount, action: str, **params: Any) -> dict[str, Any]:
    """Run one action as the runtime does: validate, handle, shape by the output model."""
    spec = ACTIONS[action]
    try:
        produced = spec.handler(context(account), parse(action, **params))
        assert isinstance(produced, Mapping)
        data: dict[str, Any] = {"success": True, **produced}
    except IntegrationError as exc:
        data = exc.to_result()
    return spec.output.model_validate(data).model_dump(mode="json", exclude_none=True)


def test_output_get_current_user(loops: LoopsAccount) -> None:
    assert call(loops, "get_current_user") == {"success": True, "team_name": "default"}


def test_output_find_contact_snake_case(loops: LoopsAccount) -> None:
    result = call(loops, "find_contact", email=ADA_EMAIL)
    contact = result["contact"]
    assert result["contacts"] == [contact]
    assert contact["id"] == ADA_CONTACT_ID
    assert (contact["first_name"], contact["last_name"]) == ("Ada", "Lovelace")
    assert (contact["user_id"], contact["user_group"]) == ("user_ada", "founders")
    assert contact["mailing_lists"] == {NEWSLETTER_LIST_ID: True, BETA_LIST_ID: True}
    assert contact["properties"]["vip"] is True and contact["properties"]["seats"] == 5
    assert not {"firstName", "userId", "mailingLists"} & set(contact)


def test_output_find_contact_none(loops: LoopsAccount) -> None:
    assert call(loops, "find_contact", email="nobody@example.com") == {
        "success": True,
        "contacts": [],
    }


def test_output_create_contact_with_lists_and_properties(
    emulator: EmulatorServer, loops: LoopsAccount
) -> None:
    result = call(
        loops,
        "create_contact",
        email="jane@example.com",
        first_name="Jane",
        user_id="user_jane",
        custom_properties={"plan": "free", "seats": 2},
        mailing_lists={NEWSLETTER_LIST_ID: True},
    )
    found = call(loops, "find_contact", user_id="user_jane")["contact"]
    assert found["id"] == result["id"]
    assert found["properties"] == {"plan": "free", "seats": 2}
    assert found["mailing_lists"] == {NEWSLETTER_LIST_ID: True}


def test_output_update_contact_clears_property(loops: LoopsAccount) -> None:
    call(loops, "update_contact", user_id=ADA_USER_ID, properties={"company": None})
    assert "company" not in call(loops, "find_contact", email=ADA_EMAIL)["contact"]["properties"]


def test_output_list_contact_properties(loops: LoopsAccount) -> None:
    every = call(loops, "list_contact_properties")["properties"]
    custom = call(loops, "list_contact_properties", list="custom")["properties"]
    assert every[0] == {"key": "firstName", "label": "First Name", "type": "string"}
    assert {"key": "seats", "label": "Seats", "type": "number"} in custom
    assert len(custom) < len(every)


def test_output_create_contact_property_then_taken(loops: LoopsAccount) -> None:
    assert call(loops, "create_contact_property", name="favoriteColor", type="string") == {
        "success": True
    }
    again = call(loops, "create_contact_property", name="favoriteColor", type="string")
    assert (again["success"], again["code"], again["status"]) == (False, "loops.bad_request", 400)


def test_output_list_mailing_lists(loops: LoopsAccount) -> None:
    lists = call(loops, "list_mailing_lists")["mailing_lists"]
    assert lists[0] == {
        "id": NEWSLETTER_LIST_ID,
        "name": "Newsletter",
        "description": "Monthly product news.",
        "is_public": True,
    }
    assert lists[1]["is_public"] is False and "description" not in lists[1]


def test_output_send_event_recorded_once(emulator: EmulatorServer, loops: LoopsAccount) -> None:
    result = call(
        loops,
        "send_event",
        email=ADA_EMAIL,
        event_name="purchase",
        event_properties={"amount": 99.5},
        contact_properties={"plan": "team"},
        mailing_lists={BETA_LIST_ID: False},
    )
    assert result["success"] is True and result["deduplicated"] is False
    (event,) = emulator.team("default").snapshot("events")
    assert event["idempotencyKey"] == result["idempotency_key"]
    assert (event["eventProperties"], event["contactProperties"]) == (
        {"amount": 99.5},
        {"plan": "team"},
    )


def test_output_send_event_same_key_later_deduplicated(
    emulator: EmulatorServer, loops: LoopsAccount
) -> None:
    """The caller's key from an earlier result, as the docs advise: delivered once, and the
    repeat says so (success, deduplicated)."""
    first = call(loops, "send_event", email=ADA_EMAIL, event_name="signup", idempotency_key="s-1")
    assert first["idempotency_key"] == "s-1"
    again = call(loops, "send_event", email=ADA_EMAIL, event_name="signup", idempotency_key="s-1")
    assert again == {"success": True, "idempotency_key": "s-1", "deduplicated": True}
    assert len(emulator.team("default").snapshot("events")) == 1


def test_output_send_transactional_email(emulator: EmulatorServer, loops: LoopsAccount) -> None:
    result = call(
        loops,
        "send_transactional_email",
        transactional_id=RECEIPT_TEMPLATE_ID,
        email=GRACE_EMAIL,
        data_variables={"order_id": "A-1", "amount": 49.5},
        attachments=[{"filename": "r.txt", "content_type": "text/plain", "data": "aGk="}],
    )
    assert result["success"] is True
    (send,) = emulator.team("default").snapshot("sends")
    assert send["idempotencyKey"] == result["idempotency_key"]


def test_output_send_transactional_email_missing_variable(loops: LoopsAccount) -> None:
    result = call(
        loops, "send_transactional_email", transactional_id=RECEIPT_TEMPLATE_ID, email=GRACE_EMAIL
    )
    assert (result["success"], result["code"], result["status"]) == (
        False,
        "loops.bad_request",
        400,
    )
    assert "dataVariables" in result["error"] or "order_id" in result["error"]


def test_output_send_transactional_email_unknown_template(loops: LoopsAccount) -> None:
    result = call(loops, "send_transactional_email", transactional_id="cnope", email=ADA_EMAIL)
    assert (result["code"], result["status"]) == ("loops.not_found", 404)


def test_output_list_transactional_emails_pages(loops: LoopsAccount) -> None:
    result = call(loops, "list_transactional_emails", per_page=10)
    assert [t["id"] for t in result["transactional_emails"]] == [
        RECEIPT_TEMPLATE_ID,
        WELCOME_TEMPLATE_ID,
    ]
    assert result["transactional_emails"][0]["data_variables"] == ["order_id", "amount"]
    assert result["pagination"]["total_results"] == 2
    assert result["pagination"]["per_page"] == 10
    assert "next_cursor" not in result["pagination"]


def test_output_suppression_check_and_removal(loops: LoopsAccount) -> None:
    check = call(loops, "check_contact_suppression", email=BARBARA_EMAIL)
    assert check["is_suppressed"] is True
    assert check["contact"] == {"id": BARBARA_CONTACT_ID, "email": BARBARA_EMAIL}
    quota = check["removal_quota"]["remaining"]
    removed = call(loops, "remove_contact_suppression", email=BARBARA_EMAIL)
    assert removed["success"] is True and removed["removal_quota"]["remaining"] == quota - 1
    assert call(loops, "check_contact_suppression", email=BARBARA_EMAIL)["is_suppressed"] is False
    again = call(loops, "remove_contact_suppression", email=BARBARA_EMAIL)
    assert (again["code"], again["status"]) == ("loops.bad_request", 400)


def test_output_list_dedicated_sending_ips(loops: LoopsAccount) -> None:
    assert call(loops, "list_dedicated_sending_ips") == {"success": True, "ips": list(SENDING_IPS)}


def test_account_property_cache_expires(account: LoopsAccount) -> None:
    account.remember_properties(frozenset({"plan"}))
    assert account.cached_properties() == frozenset({"plan"})
    account.properties_ttl = 0.0
    time.sleep(0.01)
    assert account.cached_properties() is None
