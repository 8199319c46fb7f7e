"""Every Loops action called from Lua the way a script calls it, against the emulator over HTTP.

A script writes ``app.integrations.loops.<action>({...})`` and gets a table back. These tests
check that table for each action's success case and for each documented remote failure, which
comes back as ``{success = false, error, code, status, retryable}`` rather than raising; that a
mistake in the script itself raises a Lua error that names the line; that accounts stay apart;
and that retries around faults keep one logical send one send (same Idempotency-Key).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from integrations.loops import integration
from integrations.loops.emulator import (
    ADA_CONTACT_ID,
    ADA_EMAIL,
    ADA_USER_ID,
    ALAN_EMAIL,
    BARBARA_CONTACT_ID,
    BARBARA_EMAIL,
    BETA_LIST_ID,
    DEMO_KEYS,
    GRACE_EMAIL,
    NEWSLETTER_LIST_ID,
    PASSWORD_RESET_TEMPLATE_ID,
    RECEIPT_TEMPLATE_ID,
    SENDING_IPS,
    WELCOME_TEMPLATE_ID,
)
from luabridge import Bridge, RunResult

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

#: What the ``loops_bridges`` fixture (conftest.py) hands out.
BridgeFactory = Callable[[Mapping[str, str]], Bridge]

ALL_EFFECTS = {"write", "destructive"}
#: A key no emulator team has: the ``revoked`` account stands for a key Loops no longer knows.
REVOKED_KEY = "loops_key_revoked_0f3c9a17d2"
UNKNOWN_CONTACT_ID = "cunknowncontact0000000009"
CUID = re.compile(r"c[a-z0-9]{24}")
#: A key derived from the execution, the call's place and its parameters.
DERIVED_KEY = re.compile(r"lb1-[0-9a-f]{48}")
FIND_ADA = f'app.integrations.loops.find_contact({{email = "{ADA_EMAIL}"}})'


#: The accounts of every bridge here: two demo teams, and ``revoked`` with a key no team has.
ACCOUNTS = {
    "default": DEMO_KEYS["default"],
    "marketing": DEMO_KEYS["marketing"],
    "revoked": REVOKED_KEY,
}


@pytest.fixture(scope="module")
def shared_bridge(loops_bridges: BridgeFactory) -> Bridge:
    return loops_bridges(ACCOUNTS)


@pytest.fixture
def bridge(shared_bridge: Bridge, emulator: EmulatorServer) -> Bridge:
    """The module's bridge, with the emulator reset to its seeded state for this test."""
    return shared_bridge


@pytest.fixture
def fresh_bridge(loops_bridges: BridgeFactory, emulator: EmulatorServer) -> Bridge:
    """A bridge of its own, for tests that count what the contact directory holds."""
    return loops_bridges(ACCOUNTS)


def run_lua(bridge: Bridge, source: str, **options: Any) -> RunResult:
    options.setdefault("allow", ALL_EFFECTS)
    return bridge.run(source, **options)


def value_of(result: RunResult) -> Any:
    """The script's return value, after checking that the script itself did not fail."""
    assert result.ok, result.error
    return result.value


def call_action(
    bridge: Bridge, action: str, params: str, *, account: str = "", setup: str = "", **options: Any
) -> dict[str, Any]:
    """``return app.integrations.loops[.account].<action>(<params>)`` after ``setup``."""
    namespace = "app.integrations.loops" + (f".{account}" if account else "")
    source = f"{setup}\nreturn {namespace}.{action}({params})"
    value = value_of(run_lua(bridge, source, **options))
    assert isinstance(value, dict), value
    return value


def pick(value: Any, path: str) -> Any:
    """The item at a dotted ``path`` (``contact.id``, ``mailing_lists.0.id``); list parts are
    zero-based indexes."""
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def check_fields(value: dict[str, Any], expected: dict[str, Any]) -> None:
    for path, want in expected.items():
        got = pick(value, path)
        if isinstance(want, re.Pattern):
            assert isinstance(got, str) and want.fullmatch(got), (path, got)
        else:
            assert got == want, (path, got)


# --- success, one case per action ---------------------------------------------------------


@dataclass(frozen=True)
class Success:
    action: str
    params: str = "{}"
    expected: dict[str, Any] = field(default_factory=dict)
    setup: str = ""
    #: Needs a bridge whose contact directory holds only what this case put there.
    fresh: bool = False


SUCCESSES = (
    Success("get_current_user", expected={"team_name": "default"}),
    Success(
        "create_contact",
        f"""{{email = "nia@example.com", first_name = "Nia", user_id = "user_nia",
             properties = {{plan = "trial"}},
             mailing_lists = {{["{NEWSLETTER_LIST_ID}"] = true}}}}""",
        {"id": CUID},
    ),
    Success(
        "update_contact",
        f'{{email = "{ADA_EMAIL}", first_name = "Augusta", properties = {{seats = 6}}}}',
        {"id": ADA_CONTACT_ID},
    ),
    Success(
        "find_contact",
        f'{{email = "{ADA_EMAIL}"}}',
        {
            "contact.id": ADA_CONTACT_ID,
            "contact.first_name": "Ada",
            "contact.user_id": ADA_USER_ID,
            "contact.properties.plan": "pro",
            "contact.mailing_lists": {NEWSLETTER_LIST_ID: True, BETA_LIST_ID: True},
            "contacts.0.id": ADA_CONTACT_ID,
        },
    ),
    Success(
        "get_contact",
        f"{{contact_id = {FIND_ADA}.contact.id}}",
        {"contact.id": ADA_CONTACT_ID, "contact.email": ADA_EMAIL, "contact.last_name": "Lovelace"},
    ),
    Success(
        "list_contacts",
        "{limit = 1}",
        {
            "contacts.0.email": ADA_EMAIL,
            "total": 2,
            "limit": 1,
            "offset": 0,
            "has_more": True,
            "next_offset": 1,
        },
        setup=f'{FIND_ADA}\napp.integrations.loops.find_contact({{email = "{GRACE_EMAIL}"}})',
        fresh=True,
    ),
    Success(
        "delete_contact",
        f'{{email = "{ALAN_EMAIL}"}}',
        {"message": "Contact deleted."},
    ),
    Success(
        "list_contact_properties",
        '{list = "custom"}',
        {"properties.0.key": "plan", "properties.0.type": "string", "properties.2.key": "seats"},
    ),
    Success("create_contact_property", '{name = "favoriteColor", type = "string"}'),
    Success(
        "list_mailing_lists",
        expected={
            "mailing_lists.0.id": NEWSLETTER_LIST_ID,
            "mailing_lists.0.name": "Newsletter",
            "mailing_lists.0.is_public": True,
            "mailing_lists.1.id": BETA_LIST_ID,
        },
    ),
    Success(
        "send_event",
        f'{{email = "{ADA_EMAIL}", event_name = "signup", properties = {{plan = "pro"}}}}',
        {"idempotency_key": DERIVED_KEY, "deduplicated": False},
    ),
    Success(
        "send_transactional_email",
        f"""{{transactional_id = "{RECEIPT_TEMPLATE_ID}", email = "{ADA_EMAIL}",
             data_variables = {{order_id = "A-1042", amount = 49.5}}}}""",
        {"idempotency_key": DERIVED_KEY, "deduplicated": False},
    ),
    Success(
        "list_transactional_emails",
        "{per_page = 10}",
        {
            "transactional_emails.0.id": RECEIPT_TEMPLATE_ID,
            "transactional_emails.0.data_variables": ["order_id", "amount"],
            "transactional_emails.1.id": WELCOME_TEMPLATE_ID,
            "pagination.total_results": 2,
            "pagination.per_page": 10,
        },
    ),
    Success(
        "check_contact_suppression",
        f'{{email = "{BARBARA_EMAIL}"}}',
        {"is_suppressed": True, "contact.id": BARBARA_CONTACT_ID, "removal_quota.limit": 100},
    ),
    Success(
        "remove_contact_suppression",
        f'{{email = "{BARBARA_EMAIL}"}}',
        {"removal_quota.limit": 100, "removal_quota.remaining": 99},
    ),
    Success("list_dedicated_sending_ips", expected={"ips": list(SENDING_IPS)}),
)


def test_success_table_covers_every_action() -> None:
    assert sorted(case.action for case in SUCCESSES) == sorted(integration.action_names)
    assert len(SUCCESSES) == 16


@pytest.mark.parametrize("case", SUCCESSES, ids=lambda case: case.action)
def test_action_from_lua_succeeds(request: pytest.FixtureRequest, case: Success) -> None:
    bridge = request.getfixturevalue("fresh_bridge" if case.fresh else "bridge")
    result = call_action(bridge, case.action, case.params, setup=case.setup)
    assert result["success"] is True, result
    assert "error" not in result
    check_fields(result, case.expected)


def test_create_contact_from_lua_reaches_the_team(bridge: Bridge, emulator: EmulatorServer) -> None:
    result = call_action(
        bridge,
        "create_contact",
        f"""{{email = "nia@example.com", user_id = "user_nia",
             custom_properties = {{plan = "trial"}},
             mailing_lists = {{["{NEWSLETTER_LIST_ID}"] = true}}}}""",
    )
    stored = [c for c in emulator.team("default").snapshot("contacts") if c["id"] == result["id"]]
    assert len(stored) == 1
    assert stored[0]["email"] == "nia@example.com"
    assert stored[0]["userId"] == "user_nia"
    assert stored[0]["plan"] == "trial"
    assert stored[0]["mailingLists"] == {NEWSLETTER_LIST_ID: True}


def test_send_event_from_lua_records_the_event(bridge: Bridge, emulator: EmulatorServer) -> None:
    result = call_action(
        bridge,
        "send_event",
        f"""{{user_id = "{ADA_USER_ID}", event_name = "purchase",
             event_properties = {{product = "Pro Plan", amount = 99}}}}""",
    )
    [event] = emulator.team("default").snapshot("events")
    assert event["eventName"] == "purchase"
    assert event["contactId"] == ADA_CONTACT_ID
    assert event["eventProperties"] == {"product": "Pro Plan", "amount": 99}
    assert event["idempotencyKey"] == result["idempotency_key"]


def test_delete_contact_from_lua_removes_it(bridge: Bridge, emulator: EmulatorServer) -> None:
    call_action(bridge, "delete_contact", f'{{email = "{ALAN_EMAIL}"}}')
    emails = {c["email"] for c in emulator.team("default").snapshot("contacts")}
    assert ALAN_EMAIL not in emails
    again = call_action(bridge, "find_contact", f'{{email = "{ALAN_EMAIL}"}}')
    assert again["success"] is True
    assert again.get("contact") is None


def test_property_and_suppression_writes_show_in_later_reads(bridge: Bridge) -> None:
    source = f"""
    local loops = app.integrations.loops
    assert(loops.create_contact_property({{name = "favoriteColor", type = "string"}}).success)
    assert(loops.remove_contact_suppression({{email = "{BARBARA_EMAIL}"}}).success)
    local keys = {{}}
    for _, p in ipairs(loops.list_contact_properties({{list = "custom"}}).properties) do
      keys[#keys + 1] = p.key
    end
    return {{keys, loops.check_contact_suppression({{email = "{BARBARA_EMAIL}"}}).is_suppressed}}
    """
    keys, suppressed = value_of(run_lua(bridge, source))
    assert "favoriteColor" in keys
    assert suppressed is False


def test_list_contacts_pages_over_the_contacts_seen(fresh_bridge: Bridge) -> None:
    source = """
    local loops = app.integrations.loops
    for _, email in ipairs({"p1@example.com", "p2@example.com", "p3@example.com"}) do
      assert(loops.create_contact({email = email}).success)
    end
    local first = loops.list_contacts({limit = 2})
    local second = loops.list_contacts({limit = 2, offset = first.next_offset})
    return {first = first, second = second}
    """
    pages = value_of(run_lua(fresh_bridge, source))
    first, second = pages["first"], pages["second"]
    assert [c["email"] for c in first["contacts"]] == ["p1@example.com", "p2@example.com"]
    assert (first["total"], first["has_more"], first["next_offset"]) == (3, True, 2)
    assert [c["email"] for c in second["contacts"]] == ["p3@example.com"]
    assert second["has_more"] is False
    assert second.get("next_offset") is None


def test_update_contact_by_contact_id_changes_that_contact(
    bridge: Bridge, emulator: EmulatorServer
) -> None:
    result = call_action(
        bridge,
        "update_contact",
        '{contact_id = found.contact.id, last_name = "Byron"}',
        setup=f"local found = {FIND_ADA}",
    )
    assert result == {"success": True, "id": ADA_CONTACT_ID}
    ada = next(c for c in emulator.team("default").snapshot("contacts") if c["email"] == ADA_EMAIL)
    assert ada["lastName"] == "Byron"


# --- remote failures are returned ---------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    name: str
    action: str
    params: str
    code: str
    status: int | None
    retryable: bool = False
    account: str = ""
    setup: str = ""


_SEND_EVENT_K1 = f'{{email = "{ADA_EMAIL}", event_name = "signup", idempotency_key = "order-1"}}'
_SEND_WELCOME_T1 = (
    f'{{transactional_id = "{WELCOME_TEMPLATE_ID}", email = "{ADA_EMAIL}", '
    'idempotency_key = "t-1"}'
)

FAILURES = (
    Failure("unknown-key", "get_current_user", "{}", "loops.unauthorized", 401, account="revoked"),
    Failure(
        "unknown-key-write",
        "create_contact",
        '{email = "nia@example.com"}',
        "loops.unauthorized",
        401,
        account="revoked",
    ),
    Failure(
        "unknown-key-list", "list_mailing_lists", "{}", "loops.unauthorized", 401, account="revoked"
    ),
    Failure("invalid-email", "create_contact", '{email = "nia@example"}', "loops.bad_request", 400),
    Failure(
        "unknown-mailing-list",
        "create_contact",
        '{email = "nia@example.com", mailing_lists = {clistdoesnotexist0000000x = true}}',
        "loops.bad_request",
        400,
    ),
    Failure(
        "duplicate-email", "create_contact", f'{{email = "{ADA_EMAIL}"}}', "loops.conflict", 409
    ),
    Failure(
        "duplicate-user-id",
        "create_contact",
        f'{{email = "nia@example.com", user_id = "{ADA_USER_ID}"}}',
        "loops.conflict",
        409,
    ),
    Failure(
        "update-unknown-user-id",
        "update_contact",
        '{user_id = "user_nobody", first_name = "X"}',
        "loops.bad_request",
        400,
    ),
    Failure(
        "update-unknown-contact-id",
        "update_contact",
        f'{{contact_id = "{UNKNOWN_CONTACT_ID}", first_name = "X"}}',
        "loops.unknown_contact_id",
        None,
    ),
    Failure(
        "get-unknown-contact-id",
        "get_contact",
        f'{{contact_id = "{UNKNOWN_CONTACT_ID}"}}',
        "loops.unknown_contact_id",
        None,
    ),
    Failure(
        "delete-missing-contact",
        "delete_contact",
        '{email = "ghost@example.com"}',
        "loops.not_found",
        404,
    ),
    Failure(
        "delete-unknown-contact-id",
        "delete_contact",
        f'{{contact_id = "{UNKNOWN_CONTACT_ID}"}}',
        "loops.unknown_contact_id",
        None,
    ),
    Failure(
        "property-exists",
        "create_contact_property",
        '{name = "plan", type = "string"}',
        "loops.bad_request",
        400,
    ),
    Failure(
        "event-unknown-user-id",
        "send_event",
        '{user_id = "user_nobody", event_name = "signup"}',
        "loops.bad_request",
        400,
    ),
    Failure(
        "unknown-transactional-id",
        "send_transactional_email",
        f'{{transactional_id = "ctxdoesnotexist000000009", email = "{ADA_EMAIL}"}}',
        "loops.not_found",
        404,
    ),
    Failure(
        "unpublished-template",
        "send_transactional_email",
        f"""{{transactional_id = "{PASSWORD_RESET_TEMPLATE_ID}", email = "{ADA_EMAIL}",
             data_variables = {{reset_url = "https://example.com/r/1"}}}}""",
        "loops.bad_request",
        400,
    ),
    Failure(
        "missing-data-variable",
        "send_transactional_email",
        f"""{{transactional_id = "{RECEIPT_TEMPLATE_ID}", email = "{ADA_EMAIL}",
             data_variables = {{order_id = "A-1042"}}}}""",
        "loops.bad_request",
        400,
    ),
    Failure(
        "suppression-unknown-contact",
        "check_contact_suppression",
        '{email = "ghost@example.com"}',
        "loops.not_found",
        404,
    ),
    Failure(
        "remove-suppression-not-suppressed",
        "remove_contact_suppression",
        f'{{email = "{ADA_EMAIL}"}}',
        "loops.bad_request",
        400,
    ),
)


@pytest.mark.parametrize(
    ("action", "params", "store"),
    [
        ("send_event", _SEND_EVENT_K1, "events"),
        ("send_transactional_email", _SEND_WELCOME_T1, "sends"),
    ],
)
def test_send_caller_key_reused_is_deduplicated(
    bridge: Bridge, emulator: EmulatorServer, action: str, params: str, store: str
) -> None:
    """A caller passes the key of an earlier send, as the docs advise: Loops answers 409 and
    the script sees the send as done (success, deduplicated), delivered once."""
    setup = f"assert(app.integrations.loops.{action}({params}).success)"
    result = call_action(bridge, action, params, setup=setup)
    assert result["success"] is True and result["deduplicated"] is True, result
    assert len(emulator.team("default").snapshot(store)) == 1


@pytest.mark.parametrize("case", FAILURES, ids=lambda case: case.name)
def test_action_from_lua_remote_failure_is_returned(bridge: Bridge, case: Failure) -> None:
    result = call_action(bridge, case.action, case.params, account=case.account, setup=case.setup)
    assert result["success"] is False, result
    assert isinstance(result["error"], str) and result["error"]
    assert result["code"] == case.code
    assert result.get("status") == case.status
    assert result["retryable"] is case.retryable


def test_failure_is_recorded_as_failed_call(bridge: Bridge) -> None:
    source = f'local r = app.integrations.loops.create_contact({{email = "{ADA_EMAIL}"}})\nreturn r'
    result = run_lua(bridge, source)
    assert result.ok
    [call] = result.calls
    assert (call.action, call.outcome, call.code, call.status) == (
        "create_contact",
        "failed",
        "loops.conflict",
        409,
    )


def test_get_contact_unknown_id_says_what_to_call_instead(bridge: Bridge) -> None:
    result = call_action(bridge, "get_contact", f'{{contact_id = "{UNKNOWN_CONTACT_ID}"}}')
    assert result["code"] == "loops.unknown_contact_id"
    assert UNKNOWN_CONTACT_ID in result["error"]
    assert "find_contact" in result["error"]


def test_get_contact_unknown_id_sends_no_request(bridge: Bridge, emulator: EmulatorServer) -> None:
    call_action(bridge, "get_contact", f'{{contact_id = "{UNKNOWN_CONTACT_ID}"}}')
    assert emulator.requests() == []


def test_failure_can_be_handled_by_the_script(bridge: Bridge) -> None:
    """A returned failure is ordinary data: the script branches on it and carries on."""
    source = f"""
    local loops = app.integrations.loops
    local r = loops.create_contact({{email = "{ADA_EMAIL}"}})
    if not r.success and r.code == "loops.conflict" then
      r = loops.update_contact({{email = "{ADA_EMAIL}", first_name = "Augusta"}})
    end
    return r
    """
    assert value_of(run_lua(bridge, source)) == {"success": True, "id": ADA_CONTACT_ID}


# --- accounts -----------------------------------------------------------------------------


def test_accounts_marketing_contact_is_not_found_via_default(
    bridge: Bridge, emulator: EmulatorServer
) -> None:
    source = """
    local loops = app.integrations.loops
    local created = loops.marketing.create_contact({email = "mia@example.com"})
    return {
      created = created,
      via_marketing = loops.marketing.find_contact({email = "mia@example.com"}),
      via_default = loops.default.find_contact({email = "mia@example.com"}),
      via_bare = loops.find_contact({email = "mia@example.com"}),
      by_id_via_default = loops.get_contact({contact_id = created.id}),
      by_id_via_marketing = loops.marketing.get_contact({contact_id = created.id}),
    }
    """
    seen = value_of(run_lua(bridge, source))
    contact_id = seen["created"]["id"]
    assert seen["via_marketing"]["contact"]["id"] == contact_id
    for key in ("via_default", "via_bare"):
        assert seen[key]["success"] is True
        assert seen[key].get("contact") is None
    assert seen["by_id_via_default"]["code"] == "loops.unknown_contact_id"
    assert seen["by_id_via_marketing"]["contact"]["email"] == "mia@example.com"
    marketing = {c["email"] for c in emulator.team("marketing").snapshot("contacts")}
    default = {c["email"] for c in emulator.team("default").snapshot("contacts")}
    assert "mia@example.com" in marketing
    assert "mia@example.com" not in default


def test_accounts_each_use_their_own_key(bridge: Bridge, emulator: EmulatorServer) -> None:
    source = """
    local loops = app.integrations.loops
    return {loops.get_current_user().team_name, loops.marketing.get_current_user().team_name}
    """
    assert value_of(run_lua(bridge, source)) == ["default", "marketing"]
    teams = [entry["team"] for entry in emulator.requests()]
    keys = {entry["key"] for entry in emulator.requests()}
    assert teams == ["default", "marketing"]
    assert len(keys) == 2


def test_namespace_default_is_the_bare_namespace(bridge: Bridge) -> None:
    names = ", ".join(f'"{name}"' for name in integration.action_names)
    source = f"""
    local loops = app.integrations.loops
    local different = {{}}
    for _, name in ipairs({{{names}}}) do
      if loops[name] ~= loops.default[name] then different[#different + 1] = name end
    end
    return {{#different, loops.default.get_current_user(), loops.get_current_user()}}
    """
    count, explicit, bare = value_of(run_lua(bridge, source))
    assert count == 0
    assert explicit == bare == {"success": True, "team_name": "default"}


# --- script mistakes raise ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error_type", "fragments"),
    [
        pytest.param(
            'loops.create_contact({emial = "nia@example.com"})',
            "ValidationError",
            ["loops.create_contact: unknown parameter 'emial'", "(did you mean 'email'?)"],
            id="unknown-parameter",
        ),
        pytest.param(
            "loops.create_contact({email = 5})",
            "ValidationError",
            ["loops.create_contact", "parameter 'email'", "valid string", "(got 5"],
            id="wrong-type",
        ),
        pytest.param(
            f'loops.send_transactional_email({{email = "{ADA_EMAIL}"}})',
            "ValidationError",
            ["loops.send_transactional_email", "'transactional_id' is required"],
            id="missing-required",
        ),
        pytest.param(
            "loops.list_contacts({limit = 51})",
            "ValidationError",
            ["loops.list_contacts", "parameter 'limit'", "51"],
            id="out-of-range",
        ),
        pytest.param(
            'loops.create_contact({email = "not-an-email"})',
            "ValidationError",
            ["loops.create_contact", "'not-an-email' is not an email address"],
            id="not-an-email",
        ),
        pytest.param(
            "loops.create_contacts({})",
            "RuntimeError",
            ["unknown action or account 'create_contacts'", "(did you mean 'create_contact'?)"],
            id="unknown-action",
        ),
        pytest.param(
            "loops.marketting.get_current_user()",
            "RuntimeError",
            ["'marketting'", "(did you mean 'marketing'?)"],
            id="unknown-account",
        ),
    ],
)
def test_script_mistake_raises_with_its_line(
    bridge: Bridge, emulator: EmulatorServer, call: str, error_type: str, fragments: list[str]
) -> None:
    source = f"local loops = app.integrations.loops\n\nlocal result = {call}\nreturn result"
    result = run_lua(bridge, source)
    assert not result.ok
    assert result.value is None
    assert result.error is not None
    assert result.error.type == error_type
    assert result.error.line == 3
    assert result.error.message.startswith("script.lua:3: ")
    for fragment in fragments:
        assert fragment in result.error.message
    assert emulator.requests() == []


def test_script_mistake_is_catchable_with_pcall(bridge: Bridge) -> None:
    source = """
    local ok, err = pcall(function()
      local r = app.integrations.loops.create_contact({emial = "nia@example.com"})
      return r
    end)
    return {ok, err}
    """
    ok, err = value_of(run_lua(bridge, source))
    assert ok is False
    assert err.startswith("script.lua:3: loops.create_contact: unknown parameter 'emial'")


def test_script_mistake_is_recorded_as_invalid_call(bridge: Bridge) -> None:
    result = run_lua(bridge, "local r = app.integrations.loops.create_contact({emial = 'x'})")
    assert not result.ok
    [call] = result.calls
    assert (call.action, call.outcome) == ("create_contact", "invalid")


# --- retries and idempotency through the action -------------------------------------------


def sends_to(emulator: EmulatorServer, path: str) -> list[dict[str, Any]]:
    return [entry for entry in emulator.requests() if entry["path"] == "/api/v1" + path]


@pytest.mark.parametrize(
    ("action", "path", "params", "store"),
    [
        pytest.param(
            "send_event",
            "/events/send",
            f'{{email = "{ADA_EMAIL}", event_name = "signup"}}',
            "events",
            id="send_event",
        ),
        pytest.param(
            "send_event",
            "/events/send",
            f'{{email = "{ADA_EMAIL}", event_name = "signup", idempotency_key = "signup-ada-1"}}',
            "events",
            id="send_event-explicit-key",
        ),
        pytest.param(
            "send_transactional_email",
            "/transactional",
            f"""{{transactional_id = "{RECEIPT_TEMPLATE_ID}", email = "{ADA_EMAIL}",
                 data_variables = {{order_id = "A-1042", amount = 49.5}}}}""",
            "sends",
            id="send_transactional_email",
        ),
    ],
)
def test_send_cut_after_processing_is_delivered_once(
    bridge: Bridge, emulator: EmulatorServer, action: str, path: str, params: str, store: str
) -> None:
    """The first answer is lost after the emulator stored the send; the retry carries the same
    Idempotency-Key, gets 409, and the script sees one deduplicated success."""
    emulator.add_fault("cut_after", path=path, method="POST")
    result = call_action(bridge, action, params)
    assert result["success"] is True, result
    assert result["deduplicated"] is True
    assert len(emulator.team("default").snapshot(store)) == 1
    attempts = sends_to(emulator, path)
    assert [(a["status"], a["fault"]) for a in attempts] == [(200, "cut_after"), (409, None)]
    keys = {a["headers"].get("idempotency-key") for a in attempts}
    assert keys == {result["idempotency_key"]}
    if "idempotency_key =" in params:
        assert result["idempotency_key"] == "signup-ada-1"


def test_send_event_rate_limit_burst_is_retried(bridge: Bridge, emulator: EmulatorServer) -> None:
    emulator.add_fault("429", count=2, path="/events/send")
    result = call_action(bridge, "send_event", f'{{email = "{ADA_EMAIL}", event_name = "signup"}}')
    assert result["success"] is True, result
    assert result["deduplicated"] is False
    attempts = sends_to(emulator, "/events/send")
    assert [a["status"] for a in attempts] == [429, 429, 200]
    assert {a["headers"].get("idempotency-key") for a in attempts} == {result["idempotency_key"]}
    assert len(emulator.team("default").snapshot("events")) == 1


def test_persistent_server_errors_end_retryable_within_the_timeout(
    bridge: Bridge, emulator: EmulatorServer
) -> None:
    """Every attempt gets a 500: the call gives up before the run's 2 s timeout, returns a
    retryable failure, and nothing was sent (all attempts carried one Idempotency-Key)."""
    emulator.add_fault("500", count=100, path="/events/send")
    started = time.monotonic()
    result = call_action(
        bridge,
        "send_event",
        f'{{email = "{ADA_EMAIL}", event_name = "signup"}}',
        limits={"timeout": 2},
    )
    elapsed = time.monotonic() - started
    assert result["success"] is False
    assert (result["code"], result["status"], result["retryable"]) == (
        "loops.server_error",
        500,
        True,
    )
    # The client never sleeps past the deadline; the margin covers the last answer and the run.
    assert elapsed < 2.5
    attempts = sends_to(emulator, "/events/send")
    assert len(attempts) >= 2
    assert {a["status"] for a in attempts} == {500}
    assert len({a["headers"].get("idempotency-key") for a in attempts}) == 1
    assert emulator.team("default").snapshot("events") == []


# --- dry-run plans that read ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "method", "path", "body"),
    [
        (
            "update_contact({contact_id = id, first_name = 'Ada'})",
            "PUT",
            "/contacts/update",
            {"email": ADA_EMAIL, "firstName": "Ada"},
        ),
        ("delete_contact({contact_id = id})", "POST", "/contacts/delete", {"email": ADA_EMAIL}),
    ],
)
def test_dry_run_resolves_a_contact_id_to_the_exact_request(
    fresh_bridge: Bridge,
    emulator: EmulatorServer,
    call: str,
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    """A plan may read (here: resolve the id through the directory and Loops), and shows the
    request the write would send; nothing is written."""
    source = f"local id = {FIND_ADA}.contacts[1].id\nreturn app.integrations.loops.{call}"
    result = run_lua(fresh_bridge, source, dry_run=True)
    assert result.ok, result.error
    assert result.value == {"success": True, "dry_run": True}
    planned = result.calls[-1]
    assert planned.outcome == "dry_run"
    assert planned.request is not None
    assert (planned.request["method"], planned.request["json"]) == (method, body)
    assert planned.request["url"].endswith(path)
    writes = [e for e in emulator.requests() if e["method"] in ("PUT", "POST")]
    assert writes == []


def test_dry_run_plan_that_cannot_be_made_fails_the_call(fresh_bridge: Bridge) -> None:
    source = (
        f"return app.integrations.loops.update_contact({{contact_id = '{UNKNOWN_CONTACT_ID}', "
        "first_name = 'X'})"
    )
    result = run_lua(fresh_bridge, source, dry_run=True)
    assert result.ok, result.error
    value = result.value
    assert value["success"] is False and value["dry_run"] is True
    assert value["code"] == "loops.unknown_contact_id"
    assert value["error"].startswith("loops.update_contact: could not plan the request:")
    assert "find_contact" in value["error"]
    assert [c.outcome for c in result.calls] == ["failed"]
    assert result.calls[0].request is None


def test_pairs_lists_the_namespace_actions_and_accounts(bridge: Bridge) -> None:
    """An agent discovering actions by iteration sees them: the integration lists its accounts,
    ``default`` and its actions; an account lists its actions; every listed action is callable."""
    src = """
    local L = app.integrations.loops
    local top, acc = {}, {}
    for k, v in pairs(L) do top[#top + 1] = k .. "=" .. type(v) end
    for k, v in pairs(L.marketing) do acc[#acc + 1] = k end
    table.sort(top) table.sort(acc)
    local me
    for k, f in pairs(L.default) do if k == "get_current_user" then me = f() end end
    return {top = top, acc = acc, team = me.team_name}
    """
    value = value_of(run_lua(bridge, src))
    actions = integration.action_names
    assert value["acc"] == sorted(actions)
    assert value["top"] == sorted(
        [f"{a}=function" for a in actions]
        + [f"{a}=table" for a in ("default", "marketing", "revoked")]
    )
    assert value["team"] == "default"
