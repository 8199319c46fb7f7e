"""The official Loops JS SDK, unchanged, against the emulator over real HTTP.

``tests/js`` pins the npm package ``loops`` at an exact version; ``sdk_check.mjs`` calls each
classic method once (plus the error cases) and prints one JSON document of outcomes, which the
tests below assert on. ``node_modules`` is installed with ``npm ci`` on first use. The module
is skipped only when node or npm is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from integrations.loops.emulator import (
    ADA_USER_ID,
    BARBARA_EMAIL,
    BETA_LIST_ID,
    DEMO_KEYS,
    NEWSLETTER_LIST_ID,
    PASSWORD_RESET_TEMPLATE_ID,
    RECEIPT_TEMPLATE_ID,
    SENDING_IPS,
    WELCOME_TEMPLATE_ID,
    EmulatorServer,
)

pytestmark = pytest.mark.node

JS_DIR = Path(__file__).resolve().parents[2] / "js"
LIMITED_KEY = "js_sdk_limited_key"


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = "node and npm are needed to run the official Loops JS SDK; install Node 18+"
        # CI sets this so that a machine without Node fails loudly instead of skipping.
        if os.environ.get("LUABRIDGE_REQUIRE_NODE"):
            pytest.fail(reason)
        pytest.skip(reason)
    return node, npm


def _install(npm: str) -> None:
    if (JS_DIR / "node_modules" / "loops" / "package.json").exists():
        return
    done = subprocess.run(
        [npm, "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"npm ci --prefix {JS_DIR} failed (exit {done.returncode}); it needs the npm "
            f"registry once to fetch the pinned SDK.\n{done.stdout}\n{done.stderr}"
        )


@pytest.fixture(scope="module")
def sdk_outcomes(loops_emulator: EmulatorServer) -> dict[str, Any]:
    """Run the SDK script once against a freshly reset emulator; its outcomes by step."""
    node, npm = _tools()
    _install(npm)
    emulator = loops_emulator
    emulator.reset()
    # The script makes about forty calls in well under a second, so the default team gets a
    # high limit; a separate team limited to 1/s exercises the SDK's 429 handling.
    with httpx.Client(base_url=emulator.admin_url) as admin:
        assert admin.patch("/teams/default", json={"rateLimit": 1000}).status_code == 200
        added = admin.post("/teams", json={"name": "js-limited", "keys": [LIMITED_KEY]})
        assert added.status_code == 200
        assert admin.patch("/teams/js-limited", json={"rateLimit": 1}).status_code == 200
    config = {
        "apiRoot": emulator.root_url + "/api/",
        "key": DEMO_KEYS["default"],
        "limitedKey": LIMITED_KEY,
        "newsletterListId": NEWSLETTER_LIST_ID,
        "betaListId": BETA_LIST_ID,
        "receiptTemplateId": RECEIPT_TEMPLATE_ID,
        "welcomeTemplateId": WELCOME_TEMPLATE_ID,
        "draftTemplateId": PASSWORD_RESET_TEMPLATE_ID,
        "suppressedEmail": BARBARA_EMAIL,
        "adaUserId": ADA_USER_ID,
    }
    done = subprocess.run(
        [node, str(JS_DIR / "sdk_check.mjs"), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=JS_DIR,
    )
    assert done.returncode == 0, f"sdk_check.mjs failed:\n{done.stdout}\n{done.stderr}"
    outcomes: dict[str, Any] = json.loads(done.stdout)
    outcomes["__requests"] = emulator.requests()
    outcomes["__contacts"] = emulator.state.team("default").snapshot("contacts")
    outcomes["__events"] = emulator.state.team("default").snapshot("events")
    outcomes["__sends"] = emulator.state.team("default").snapshot("sends")
    emulator.reset()
    return outcomes


def ok(outcomes: dict[str, Any], step: str) -> Any:
    outcome = outcomes[step]
    assert outcome["ok"], f"{step} failed: {outcome['error']}"
    return outcome["value"]


def api_error(outcomes: dict[str, Any], step: str, status: int) -> dict[str, Any]:
    outcome = outcomes[step]
    assert not outcome["ok"], f"{step} unexpectedly succeeded: {outcome['value']}"
    error: dict[str, Any] = outcome["error"]
    assert error["class"] == "APIError", error
    assert error["statusCode"] == status, error
    return error


def test_sdk_test_api_key(sdk_outcomes: dict[str, Any]) -> None:
    assert ok(sdk_outcomes, "testApiKey") == {"success": True, "teamName": "default"}


def test_sdk_requests_use_the_api_root(sdk_outcomes: dict[str, Any]) -> None:
    requests = sdk_outcomes["__requests"]
    steps = [name for name in sdk_outcomes if not name.startswith("__")]
    # One HTTP request per step: every call reached the emulator, none failed client-side.
    assert len(requests) == len(steps) == 34
    assert all(r["path"].startswith("/api/v1/") for r in requests)
    assert {r["headers"].get("content-type") for r in requests} == {"application/json"}


def test_sdk_create_contact(sdk_outcomes: dict[str, Any]) -> None:
    created = ok(sdk_outcomes, "createContact")
    assert created["success"] is True and len(created["id"]) == 25


def test_sdk_create_contact_duplicate_api_error_409(sdk_outcomes: dict[str, Any]) -> None:
    error = api_error(sdk_outcomes, "createContactDuplicate", 409)
    assert error["message"] == "409 - Email or userId is already on list."
    assert error["json"] == {"success": False, "message": "Email or userId is already on list."}


def test_sdk_update_contact(sdk_outcomes: dict[str, Any]) -> None:
    created_id = ok(sdk_outcomes, "createContact")["id"]
    assert ok(sdk_outcomes, "updateContact") == {"success": True, "id": created_id}
    assert ok(sdk_outcomes, "updateContactByUserId") == {"success": True, "id": created_id}


def test_sdk_update_contact_unknown_user_id_api_error_400(sdk_outcomes: dict[str, Any]) -> None:
    error = api_error(sdk_outcomes, "updateContactUnknownUserId", 400)
    assert error["message"] == "400 - Contact not found."


def test_sdk_find_contact(sdk_outcomes: dict[str, Any]) -> None:
    [found] = ok(sdk_outcomes, "findContact")
    assert found["email"] == "sdk@example.com"
    assert (found["firstName"], found["lastName"], found["userId"]) == (
        "Sdk",
        "Changed",
        "user_sdk",
    )
    assert found["seats"] == 3 and "plan" not in found
    assert found["mailingLists"] == {NEWSLETTER_LIST_ID: True}
    assert ok(sdk_outcomes, "findContactByUserId")[0]["userId"] == ADA_USER_ID
    assert ok(sdk_outcomes, "findContactMissing") == []


def test_sdk_contact_suppression(sdk_outcomes: dict[str, Any]) -> None:
    checked = ok(sdk_outcomes, "checkContactSuppression")
    assert checked["isSuppressed"] is True
    assert checked["contact"]["email"] == BARBARA_EMAIL
    removed = ok(sdk_outcomes, "removeContactSuppression")
    assert removed["message"] == "Email removed from suppression list."
    assert removed["removalQuota"] == {"limit": 100, "remaining": 99}
    again = api_error(sdk_outcomes, "removeContactSuppressionAgain", 400)
    assert again["message"] == "400 - This contact is not suppressed."
    missing = api_error(sdk_outcomes, "checkContactSuppressionMissing", 404)
    assert missing["message"] == "404 - This contact was not found."


def test_sdk_contact_properties(sdk_outcomes: dict[str, Any]) -> None:
    assert ok(sdk_outcomes, "createContactProperty") == {"success": True}
    duplicate = api_error(sdk_outcomes, "createContactPropertyDuplicate", 400)
    assert duplicate["message"] == "400 - Property already exists."
    every = ok(sdk_outcomes, "listContactProperties")
    assert every[0] == {"key": "firstName", "label": "First Name", "type": "string"}
    custom = ok(sdk_outcomes, "listContactPropertiesCustom")
    assert custom[-1] == {"key": "favoriteColor", "label": "Favorite color", "type": "string"}
    assert every[-len(custom) :] == custom


def test_sdk_list_mailing_lists(sdk_outcomes: dict[str, Any]) -> None:
    lists = ok(sdk_outcomes, "listMailingLists")
    assert [(m["id"], m["isPublic"]) for m in lists] == [
        (NEWSLETTER_LIST_ID, True),
        (BETA_LIST_ID, False),
    ]


def test_sdk_send_event(sdk_outcomes: dict[str, Any]) -> None:
    assert ok(sdk_outcomes, "sendEvent") == {"success": True}
    assert ok(sdk_outcomes, "sendEventEmptyKey") == {"success": True}
    signup, login = sdk_outcomes["__events"]
    assert signup["eventProperties"] == {"plan": "pro", "amount": 10}
    assert signup["contactProperties"] == {"company": "SDK Inc"}
    assert signup["mailingLists"] == {BETA_LIST_ID: True}
    assert signup["idempotencyKey"] == "sdk-event-1"
    # The SDK drops an empty Idempotency-Key header instead of sending it.
    assert login["idempotencyKey"] is None


def test_sdk_send_event_repeated_key_api_error_409(sdk_outcomes: dict[str, Any]) -> None:
    error = api_error(sdk_outcomes, "sendEventRepeated", 409)
    assert error["message"] == (
        "409 - Request with idempotency key sdk-event-1 has already been processed."
    )


def test_sdk_send_transactional_email(sdk_outcomes: dict[str, Any]) -> None:
    assert ok(sdk_outcomes, "sendTransactionalEmail") == {"success": True}
    assert ok(sdk_outcomes, "sendTransactionalEmailToNewAudience") == {"success": True}
    receipt, welcome = sdk_outcomes["__sends"]
    assert receipt["dataVariables"] == {"order_id": "A-1", "amount": 42}
    assert receipt["idempotencyKey"] == "sdk-tx-1"
    assert welcome["addToAudience"] is True
    assert "newcomer@example.com" in {c["email"] for c in sdk_outcomes["__contacts"]}


def test_sdk_send_transactional_missing_variable_api_error_400(
    sdk_outcomes: dict[str, Any],
) -> None:
    error = api_error(sdk_outcomes, "sendTransactionalEmailMissingVariable", 400)
    # The SDK prefers the nested error.message, so the shape of the body matters here.
    assert error["message"] == "400 - Missing required data variable(s): amount"
    assert error["json"]["error"]["path"] == "dataVariables"
    assert error["json"]["transactionalId"] == RECEIPT_TEMPLATE_ID


def test_sdk_send_transactional_unknown_and_draft(sdk_outcomes: dict[str, Any]) -> None:
    unknown = api_error(sdk_outcomes, "sendTransactionalEmailUnknown", 404)
    assert unknown["message"] == "404 - Transactional email not found."
    draft = api_error(sdk_outcomes, "sendTransactionalEmailDraft", 400)
    assert "not published" in draft["message"]


def test_sdk_list_transactional_emails(sdk_outcomes: dict[str, Any]) -> None:
    listed = ok(sdk_outcomes, "listTransactionalEmails")
    assert listed["pagination"]["perPage"] == 20
    assert [t["id"] for t in listed["data"]] == [
        PASSWORD_RESET_TEMPLATE_ID,
        WELCOME_TEMPLATE_ID,
        RECEIPT_TEMPLATE_ID,
    ]
    assert ok(sdk_outcomes, "listTransactionalEmailsPerPage")["pagination"]["perPage"] == 10


def test_sdk_list_dedicated_sending_ips(sdk_outcomes: dict[str, Any]) -> None:
    assert ok(sdk_outcomes, "listDedicatedSendingIps") == list(SENDING_IPS)


def test_sdk_delete_contact(sdk_outcomes: dict[str, Any]) -> None:
    assert ok(sdk_outcomes, "deleteContact") == {"success": True, "message": "Contact deleted."}
    error = api_error(sdk_outcomes, "deleteContactAgain", 404)
    assert error["message"] == "404 - Contact not found."


def test_sdk_rate_limit_error_carries_headers(sdk_outcomes: dict[str, Any]) -> None:
    assert ok(sdk_outcomes, "rateLimitFirst")["teamName"] == "js-limited"
    outcome = sdk_outcomes["rateLimitSecond"]
    assert not outcome["ok"]
    error = outcome["error"]
    assert error["class"] == "RateLimitExceededError"
    assert (error["limit"], error["remaining"]) == (1, 0)
    assert error["message"] == "Rate limit of 1 requests per second exceeded."


def test_sdk_invalid_key_api_error_401(sdk_outcomes: dict[str, Any]) -> None:
    error = api_error(sdk_outcomes, "invalidKey", 401)
    assert error["message"] == "401 - Invalid API key"
