"""Tests of the Loops API emulator over real HTTP on 127.0.0.1.

Each test gets the session's emulator reset to its seeded state (the ``emulator`` fixture). The
``api`` client speaks for the ``default`` demo team with a rate limit high enough never to trip,
so only the rate-limit tests see 429s; ``admin`` talks to the ``/__emulator`` admin API.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import integrations.loops.emulator as emulator_package
from integrations.loops.emulator import (
    ADA_CONTACT_ID,
    ADA_EMAIL,
    ADA_USER_ID,
    ALAN_EMAIL,
    API_ROUTES,
    BARBARA_EMAIL,
    BETA_LIST_ID,
    DEMO_KEYS,
    GRACE_EMAIL,
    NEWSLETTER_LIST_ID,
    PASSWORD_RESET_TEMPLATE_ID,
    RECEIPT_TEMPLATE_ID,
    SENDING_IPS,
    WELCOME_TEMPLATE_ID,
    EmulatorServer,
    EmulatorStartError,
    EmulatorState,
    Fault,
    FaultKind,
    key_fingerprint,
    serve_forever,
)
from integrations.loops.emulator.limits import IdempotencyStore, RateWindow
from integrations.loops.emulator.properties import label_for
from integrations.loops.emulator.records import make_id

KEY = DEMO_KEYS["default"]
OTHER_KEY = DEMO_KEYS["marketing"]
CUID = r"c[a-z0-9]{24}"
TRANSPORT_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def api(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    # A high limit keeps the rate-limit headers while letting a test make many calls quickly.
    emulator.state.set_rate_limit(1000)
    with httpx.Client(base_url=emulator.base_url, headers=bearer(KEY), timeout=5) as client:
        yield client


@pytest.fixture
def admin(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.admin_url, timeout=5) as client:
        yield client


def failure(response: httpx.Response, status: int) -> str:
    """The message of a Loops error body, after checking its status and ``success: false``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert isinstance(body["message"], str)
    return str(body["message"])


def find(api: httpx.Client, **query: str) -> list[dict[str, Any]]:
    response = api.get("/contacts/find", params=query)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def one(api: httpx.Client, **query: str) -> dict[str, Any]:
    found = find(api, **query)
    assert len(found) == 1, found
    return found[0]


def state_of(admin: httpx.Client, kind: str, team: str = "default") -> list[Any]:
    response = admin.get(f"/teams/{team}/{kind}")
    assert response.status_code == 200, response.text
    result: list[Any] = response.json()[kind]
    return result


# --- authentication -------------------------------------------------------------------------


def test_auth_missing_key_401_without_rate_headers(emulator: EmulatorServer) -> None:
    response = httpx.get(emulator.base_url + "/api-key")
    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "message": "Invalid API key",
        "error": "Invalid API key",
    }
    assert response.headers["content-type"] == "application/json"
    assert "x-ratelimit-limit" not in response.headers
    assert "x-ratelimit-remaining" not in response.headers


def test_auth_unknown_key_401(emulator: EmulatorServer) -> None:
    response = httpx.get(emulator.base_url + "/lists", headers=bearer("not-a-key"))
    assert failure(response, 401) == "Invalid API key"


def test_auth_non_bearer_scheme_401(emulator: EmulatorServer) -> None:
    response = httpx.get(emulator.base_url + "/api-key", headers={"Authorization": KEY})
    assert response.status_code == 401


def test_auth_checked_before_routing_401(emulator: EmulatorServer) -> None:
    response = httpx.delete(emulator.base_url + "/no/such/path")
    assert response.status_code == 401


def test_api_key_returns_team_name(api: httpx.Client) -> None:
    response = api.get("/api-key")
    assert response.status_code == 200
    assert response.json() == {"success": True, "teamName": "default"}
    assert response.headers["content-type"] == "application/json; charset=utf-8"


def test_keys_two_keys_are_two_teams(api: httpx.Client) -> None:
    assert api.post("/contacts/create", json={"email": "solo@example.com"}).status_code == 200
    other = bearer(OTHER_KEY)
    assert api.get("/api-key", headers=other).json()["teamName"] == "marketing"
    query = {"email": "solo@example.com"}
    assert api.get("/contacts/find", params=query, headers=other).json() == []
    assert one(api, email="solo@example.com")["email"] == "solo@example.com"
    # Both teams were seeded separately: the same demo contact exists in each.
    seeded = api.get("/contacts/find", params={"email": ADA_EMAIL}, headers=other).json()
    assert seeded[0]["id"] == ADA_CONTACT_ID


def test_keys_several_keys_share_one_team(api: httpx.Client, admin: httpx.Client) -> None:
    added = admin.post("/teams/default/keys", json={"key": "default_second_key"})
    assert added.status_code == 200
    assert added.json()["key"] == "default_second_key"
    second = bearer("default_second_key")
    assert api.get("/api-key", headers=second).json()["teamName"] == "default"
    api.post("/contacts/create", json={"email": "shared@example.com"}, headers=second)
    assert one(api, email="shared@example.com")["email"] == "shared@example.com"


def test_keys_duplicate_key_rejected_400(admin: httpx.Client) -> None:
    response = admin.post("/teams/marketing/keys", json={"key": KEY})
    assert "already used by team 'default'" in failure(response, 400)


# --- rate limiting --------------------------------------------------------------------------


def test_rate_limit_headers_count_down(emulator: EmulatorServer) -> None:
    with httpx.Client(base_url=emulator.base_url, headers=bearer(KEY)) as client:
        first, second = client.get("/api-key"), client.get("/lists")
    assert first.headers["x-ratelimit-limit"] == "10"
    assert first.headers["x-ratelimit-remaining"] == "9"
    assert second.headers["x-ratelimit-remaining"] == "8"


def test_rate_limit_exceeded_429_with_headers(
    emulator: EmulatorServer, admin: httpx.Client
) -> None:
    assert admin.patch("/teams/default", json={"rateLimit": 3}).status_code == 200
    with httpx.Client(base_url=emulator.base_url, headers=bearer(KEY)) as client:
        statuses = [client.get("/api-key").status_code for _ in range(3)]
        refused = client.get("/api-key")
    assert statuses == [200, 200, 200]
    assert failure(refused, 429) == "Rate limit exceeded."
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "0"


def test_rate_limit_counts_per_team(emulator: EmulatorServer) -> None:
    emulator.state.set_rate_limit(2)
    with httpx.Client(base_url=emulator.base_url) as client:
        for _ in range(2):
            client.get("/api-key", headers=bearer(KEY))
        assert client.get("/api-key", headers=bearer(KEY)).status_code == 429
        assert client.get("/api-key", headers=bearer(OTHER_KEY)).status_code == 200


def test_rate_limit_shared_by_keys_of_one_team(emulator: EmulatorServer) -> None:
    emulator.state.add_key("default", "default_other_key")
    emulator.state.set_rate_limit(2, team="default")
    with httpx.Client(base_url=emulator.base_url) as client:
        client.get("/api-key", headers=bearer(KEY))
        client.get("/api-key", headers=bearer("default_other_key"))
        assert client.get("/api-key", headers=bearer(KEY)).status_code == 429


def test_rate_limit_window_reopens_after_a_second(emulator: EmulatorServer) -> None:
    emulator.state.set_rate_limit(1)
    with httpx.Client(base_url=emulator.base_url, headers=bearer(KEY)) as client:
        assert client.get("/api-key").status_code == 200
        assert client.get("/api-key").status_code == 429
        time.sleep(1.05)
        assert client.get("/api-key").status_code == 200


def test_rate_limit_zero_turns_limiting_off(emulator: EmulatorServer) -> None:
    emulator.state.set_rate_limit(0)
    with httpx.Client(base_url=emulator.base_url, headers=bearer(KEY)) as client:
        responses = [client.get("/api-key") for _ in range(25)]
    assert {r.status_code for r in responses} == {200}
    assert "x-ratelimit-limit" not in responses[-1].headers


# --- routing and bodies ---------------------------------------------------------------------


def test_routing_unknown_path_404(api: httpx.Client) -> None:
    response = api.get("/contacts/list")
    assert "No Loops API endpoint at /api/v1/contacts/list" in failure(response, 404)
    assert "x-ratelimit-limit" in response.headers


def test_routing_wrong_method_405(api: httpx.Client) -> None:
    response = api.get("/contacts/create")
    assert response.status_code == 405
    assert response.json() == {"success": False, "message": "Method not allowed."}
    assert response.headers["allow"] == "POST"


def test_routing_outside_api_404(emulator: EmulatorServer) -> None:
    response = httpx.get(emulator.root_url + "/v1/api-key")
    assert "/api/v1/" in failure(response, 404)


def test_routing_table_covers_appendix_b() -> None:
    assert API_ROUTES == {
        "/api-key": {"GET"},
        "/contacts/create": {"POST"},
        "/contacts/update": {"PUT", "POST"},
        "/contacts/find": {"GET"},
        "/contacts/delete": {"POST"},
        "/contacts/suppression": {"GET", "DELETE"},
        "/contacts/properties": {"GET", "POST"},
        "/contacts/customFields": {"GET"},
        "/lists": {"GET"},
        "/events/send": {"POST"},
        "/transactional": {"GET", "POST"},
        "/transactional-emails": {"GET"},
        "/dedicated-sending-ips": {"GET"},
    }


def test_body_json_accepted_whatever_the_content_type(api: httpx.Client) -> None:
    response = api.post(
        "/contacts/create",
        content=json.dumps({"email": "plain@example.com"}),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200, response.text
    assert one(api, email="plain@example.com")["source"] == "API"


def test_body_not_json_400(api: httpx.Client) -> None:
    response = api.post("/contacts/create", content=b"email=x@example.com")
    assert "not valid JSON" in failure(response, 400)


def test_body_json_array_400(api: httpx.Client) -> None:
    response = api.post("/contacts/create", json=[{"email": "x@example.com"}])
    assert failure(response, 400) == "The request body must be a JSON object, not an array."


def test_body_nan_constant_400(api: httpx.Client) -> None:
    response = api.post("/contacts/create", content=b'{"email": "n@example.com", "seats": NaN}')
    assert "not valid JSON" in failure(response, 400)


# --- contacts: create -----------------------------------------------------------------------


def test_create_contact_defaults_and_find_shape(api: httpx.Client) -> None:
    response = api.post(
        "/contacts/create",
        json={
            "email": "New.Person@Example.com",
            "plan": "pro",
            "mailingLists": {NEWSLETTER_LIST_ID: True, BETA_LIST_ID: False},
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["id"].startswith("c") and len(body["id"]) == 25
    found = one(api, email="new.person@example.com")
    assert found == {
        "id": body["id"],
        "email": "New.Person@Example.com",
        "firstName": None,
        "lastName": None,
        "source": "API",
        "subscribed": True,
        "userGroup": "",
        "userId": None,
        "plan": "pro",
        "mailingLists": {NEWSLETTER_LIST_ID: True},
        "optInStatus": None,
    }
    assert list(found) == [
        "id", "email", "firstName", "lastName", "source", "subscribed", "userGroup", "userId",
        "plan", "mailingLists", "optInStatus",
    ]  # fmt: skip


def test_create_contact_all_fields_stored(api: httpx.Client) -> None:
    api.post(
        "/contacts/create",
        json={
            "email": "full@example.com",
            "firstName": "Full",
            "lastName": "Name",
            "source": "Import",
            "subscribed": False,
            "userGroup": "beta",
            "userId": "user_full",
            "seats": 3,
            "vip": False,
            "signupDate": "2025-01-02T03:04:05.678+02:00",
        },
    )
    found = one(api, userId="user_full")
    assert (found["firstName"], found["lastName"], found["source"]) == ("Full", "Name", "Import")
    assert (found["subscribed"], found["userGroup"], found["seats"]) == (False, "beta", 3)
    assert found["vip"] is False
    assert found["signupDate"] == "2025-01-02T03:04:05.678+02:00"


def test_create_contact_duplicate_email_409(api: httpx.Client) -> None:
    response = api.post("/contacts/create", json={"email": ADA_EMAIL.upper()})
    assert failure(response, 409) == "Email or userId is already on list."


def test_create_contact_duplicate_user_id_409(api: httpx.Client) -> None:
    response = api.post(
        "/contacts/create", json={"email": "new@example.com", "userId": ADA_USER_ID}
    )
    assert failure(response, 409) == "Email or userId is already on list."
    assert find(api, email="new@example.com") == []


def test_create_contact_invalid_email_400(api: httpx.Client) -> None:
    for email in ("not-an-email", "a@b", "two@@example.com", 42):
        response = api.post("/contacts/create", json={"email": email})
        assert failure(response, 400) == "Invalid email address."


def test_create_contact_missing_email_400(api: httpx.Client) -> None:
    response = api.post("/contacts/create", json={"firstName": "Nobody"})
    assert "`email` is required" in failure(response, 400)


def test_create_contact_string_over_500_chars_400(api: httpx.Client) -> None:
    response = api.post("/contacts/create", json={"email": "x@example.com", "firstName": "a" * 501})
    assert "limited to 500 characters" in failure(response, 400)
    assert api.post(
        "/contacts/create", json={"email": "x@example.com", "firstName": "a" * 500}
    ).is_success


def test_create_contact_unknown_list_400(api: httpx.Client) -> None:
    response = api.post(
        "/contacts/create", json={"email": "x@example.com", "mailingLists": {"cnolist": True}}
    )
    message = failure(response, 400)
    assert "`cnolist` does not exist" in message and NEWSLETTER_LIST_ID in message
    assert find(api, email="x@example.com") == []


def test_create_contact_list_value_not_boolean_400(api: httpx.Client) -> None:
    response = api.post(
        "/contacts/create",
        json={"email": "x@example.com", "mailingLists": {NEWSLETTER_LIST_ID: "yes"}},
    )
    assert "must be true or false" in failure(response, 400)


def test_create_contact_unknown_property_ignored(api: httpx.Client) -> None:
    response = api.post("/contacts/create", json={"email": "x@example.com", "favoriteFood": "x"})
    assert response.status_code == 200
    assert "favoriteFood" not in one(api, email="x@example.com")


def test_create_contact_unknown_property_rejected_when_configured(
    api: httpx.Client, admin: httpx.Client
) -> None:
    admin.patch("/teams/default", json={"rejectUnknownProperties": True})
    response = api.post("/contacts/create", json={"email": "x@example.com", "favoriteFood": "x"})
    message = failure(response, 400)
    assert "Unknown contact property `favoriteFood`" in message and "plan" in message


def test_create_contact_reserved_keys_ignored(api: httpx.Client, admin: httpx.Client) -> None:
    # A real create carrying "id": "" succeeded, so even strict mode lets reserved keys pass.
    admin.patch("/teams/default", json={"rejectUnknownProperties": True})
    response = api.post("/contacts/create", json={"email": "x@example.com", "id": ""})
    assert response.status_code == 200
    assert one(api, email="x@example.com")["id"] == response.json()["id"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("seats", "ten"),
        ("plan", 3),
        ("vip", "yes"),
        ("signupDate", "next tuesday"),
        ("signupDate", "2025-13-45"),
        ("subscribed", "true"),
        ("firstName", 7),
        ("userId", ["u"]),
    ],
)
def test_create_contact_wrong_value_type_400(api: httpx.Client, key: str, value: Any) -> None:
    response = api.post("/contacts/create", json={"email": "x@example.com", key: value})
    assert f"`{key}`" in failure(response, 400)


def test_create_contact_numeric_user_id_stored_as_text(api: httpx.Client) -> None:
    api.post("/contacts/create", json={"email": "x@example.com", "userId": 1234})
    assert one(api, userId="1234")["userId"] == "1234"


# --- contacts: update and identity rules ----------------------------------------------------


def test_update_contact_by_new_email_creates(api: httpx.Client) -> None:
    response = api.put("/contacts/update", json={"email": "fresh@example.com", "firstName": "F"})
    assert response.status_code == 200
    found = one(api, email="fresh@example.com")
    assert found["id"] == response.json()["id"]
    assert (found["firstName"], found["subscribed"], found["source"]) == ("F", True, "API")


def test_update_contact_by_email_updates_and_keeps_stored_case(api: httpx.Client) -> None:
    response = api.put("/contacts/update", json={"email": "ADA@EXAMPLE.COM", "seats": 9})
    assert response.json() == {"success": True, "id": ADA_CONTACT_ID}
    found = one(api, email=ADA_EMAIL)
    assert (found["email"], found["seats"], found["plan"]) == (ADA_EMAIL, 9, "pro")


def test_update_contact_by_unknown_user_id_400(api: httpx.Client) -> None:
    response = api.put("/contacts/update", json={"userId": "user_nobody", "firstName": "X"})
    assert failure(response, 400) == "Contact not found."
    assert find(api, userId="user_nobody") == []


def test_update_contact_by_user_id_changes_email(api: httpx.Client) -> None:
    response = api.put(
        "/contacts/update", json={"userId": ADA_USER_ID, "email": "ada.new@example.com"}
    )
    assert response.json()["id"] == ADA_CONTACT_ID
    assert find(api, email=ADA_EMAIL) == []
    assert one(api, email="ada.new@example.com")["id"] == ADA_CONTACT_ID


def test_update_contact_by_email_sets_user_id(api: httpx.Client) -> None:
    response = api.put("/contacts/update", json={"email": GRACE_EMAIL, "userId": "user_grace"})
    assert response.status_code == 200
    assert one(api, userId="user_grace")["email"] == GRACE_EMAIL


def test_update_contact_both_unknown_creates_with_both(api: httpx.Client) -> None:
    response = api.put("/contacts/update", json={"email": "b@example.com", "userId": "user_b"})
    assert response.status_code == 200
    assert one(api, userId="user_b")["email"] == "b@example.com"


def test_update_contact_split_match_400(api: httpx.Client) -> None:
    response = api.put("/contacts/update", json={"email": GRACE_EMAIL, "userId": ADA_USER_ID})
    assert failure(response, 400) == "Multiple contacts found for the given criteria"
    assert one(api, userId=ADA_USER_ID)["email"] == ADA_EMAIL


def test_update_contact_no_identifier_400(api: httpx.Client) -> None:
    response = api.put("/contacts/update", json={"firstName": "Nobody"})
    assert failure(response, 400) == "An email or userId is required."


def test_update_contact_invalid_email_400(api: httpx.Client) -> None:
    response = api.put("/contacts/update", json={"email": "nope"})
    assert failure(response, 400) == "Invalid email address."


def test_update_contact_null_clears_and_absent_keeps(api: httpx.Client) -> None:
    api.put("/contacts/update", json={"email": ADA_EMAIL, "company": None, "firstName": None})
    found = one(api, email=ADA_EMAIL)
    assert "company" not in found
    assert found["firstName"] is None
    assert (found["lastName"], found["plan"], found["seats"]) == ("Lovelace", "pro", 5)


def test_update_contact_unsubscribes_from_list(api: httpx.Client) -> None:
    api.put("/contacts/update", json={"email": ADA_EMAIL, "mailingLists": {BETA_LIST_ID: False}})
    assert one(api, email=ADA_EMAIL)["mailingLists"] == {NEWSLETTER_LIST_ID: True}


def test_update_contact_invalid_value_changes_nothing(api: httpx.Client) -> None:
    response = api.put("/contacts/update", json={"email": ADA_EMAIL, "plan": "x", "seats": "y"})
    assert response.status_code == 400
    assert one(api, email=ADA_EMAIL)["plan"] == "pro"


def test_update_contact_post_method_accepted(api: httpx.Client) -> None:
    response = api.post("/contacts/update", json={"email": ALAN_EMAIL, "plan": "pro"})
    assert response.status_code == 200
    assert one(api, email=ALAN_EMAIL)["plan"] == "pro"


# --- contacts: find and delete --------------------------------------------------------------


def test_find_contact_by_user_id(api: httpx.Client) -> None:
    found = one(api, userId=ADA_USER_ID)
    assert found["id"] == ADA_CONTACT_ID
    assert found["mailingLists"] == {NEWSLETTER_LIST_ID: True, BETA_LIST_ID: True}


def test_find_contact_missing_returns_empty_list(api: httpx.Client) -> None:
    assert find(api, email="ghost@example.com") == []
    assert find(api, userId="ghost") == []


def test_find_contact_both_params_400(api: httpx.Client) -> None:
    response = api.get("/contacts/find", params={"email": ADA_EMAIL, "userId": ADA_USER_ID})
    assert "Only one parameter is permitted" in failure(response, 400)


def test_find_contact_no_params_400(api: httpx.Client) -> None:
    assert failure(api.get("/contacts/find"), 400) == "An email or userId is required."


def test_find_contact_invalid_email_400(api: httpx.Client) -> None:
    response = api.get("/contacts/find", params={"email": "nope"})
    assert failure(response, 400) == "Invalid email address."


def test_find_contact_leaves_out_unset_custom_properties(api: httpx.Client) -> None:
    found = one(api, email=GRACE_EMAIL)
    assert "seats" not in found and "vip" not in found
    assert "notes" not in found and "createdAt" not in found


def test_delete_contact_by_email(api: httpx.Client) -> None:
    response = api.post("/contacts/delete", json={"email": GRACE_EMAIL})
    assert response.json() == {"success": True, "message": "Contact deleted."}
    assert find(api, email=GRACE_EMAIL) == []


def test_delete_contact_by_user_id(api: httpx.Client) -> None:
    assert api.post("/contacts/delete", json={"userId": ADA_USER_ID}).status_code == 200
    assert find(api, email=ADA_EMAIL) == []


def test_delete_contact_missing_404(api: httpx.Client) -> None:
    response = api.post("/contacts/delete", json={"email": "ghost@example.com"})
    assert failure(response, 404) == "Contact not found."


def test_delete_contact_both_identifiers_400(api: httpx.Client) -> None:
    response = api.post("/contacts/delete", json={"email": ADA_EMAIL, "userId": ADA_USER_ID})
    assert "Only one parameter is permitted" in failure(response, 400)
    assert find(api, email=ADA_EMAIL) != []


def test_delete_contact_no_identifier_400(api: httpx.Client) -> None:
    assert failure(api.post("/contacts/delete", json={}), 400) == "An email or userId is required."


# --- suppression ----------------------------------------------------------------------------


def test_suppression_check_suppressed_contact(api: httpx.Client) -> None:
    response = api.get("/contacts/suppression", params={"email": BARBARA_EMAIL})
    assert response.status_code == 200
    body = response.json()
    assert "success" not in body
    assert body["isSuppressed"] is True
    assert body["contact"]["email"] == BARBARA_EMAIL
    assert body["contact"]["userId"] is None
    assert body["removalQuota"] == {"limit": 100, "remaining": 100}


def test_suppression_check_by_user_id_not_suppressed(api: httpx.Client) -> None:
    body = api.get("/contacts/suppression", params={"userId": ADA_USER_ID}).json()
    assert body["isSuppressed"] is False
    assert body["contact"] == {"id": ADA_CONTACT_ID, "email": ADA_EMAIL, "userId": ADA_USER_ID}


def test_suppression_remove_spends_quota(api: httpx.Client) -> None:
    response = api.delete("/contacts/suppression", params={"email": BARBARA_EMAIL})
    assert response.json() == {
        "success": True,
        "message": "Email removed from suppression list.",
        "removalQuota": {"limit": 100, "remaining": 99},
    }
    again = api.get("/contacts/suppression", params={"email": BARBARA_EMAIL}).json()
    assert again["isSuppressed"] is False


def test_suppression_remove_not_suppressed_400(api: httpx.Client) -> None:
    response = api.delete("/contacts/suppression", params={"email": ADA_EMAIL})
    assert failure(response, 400) == "This contact is not suppressed."


def test_suppression_unknown_contact_404(api: httpx.Client) -> None:
    for method in ("GET", "DELETE"):
        response = api.request(method, "/contacts/suppression", params={"email": "g@example.com"})
        assert failure(response, 404) == "This contact was not found."


def test_suppression_no_identifier_400(api: httpx.Client) -> None:
    response = api.get("/contacts/suppression")
    assert failure(response, 400) == "An email or userId is required."


def test_suppression_quota_used_up_then_window_passes(
    api: httpx.Client, admin: httpx.Client
) -> None:
    admin.patch("/teams/default", json={"removalLimit": 1})
    assert api.delete("/contacts/suppression", params={"email": BARBARA_EMAIL}).is_success
    marked = admin.post("/teams/default/suppression", json={"email": BARBARA_EMAIL})
    assert marked.json()["contact"]["suppressed"] is True
    refused = api.delete("/contacts/suppression", params={"email": BARBARA_EMAIL})
    assert "quota used up" in failure(refused, 400)
    assert admin.post("/clock", json={"advance": 30 * 24 * 3600 + 1}).status_code == 200
    assert api.delete("/contacts/suppression", params={"email": BARBARA_EMAIL}).is_success


# --- properties and lists -------------------------------------------------------------------


def test_properties_list_all_builtins_then_custom(api: httpx.Client) -> None:
    properties = api.get("/contacts/properties").json()
    assert [p["key"] for p in properties] == [
        "firstName", "lastName", "email", "notes", "source", "userGroup", "userId",
        "subscribed", "createdAt", "plan", "company", "seats", "signupDate", "vip",
    ]  # fmt: skip
    assert properties[5] == {"key": "userGroup", "label": "User Group", "type": "string"}
    assert properties[11] == {"key": "seats", "label": "Seats", "type": "number"}


def test_properties_list_custom_only(api: httpx.Client) -> None:
    custom = api.get("/contacts/properties", params={"list": "custom"}).json()
    assert [p["key"] for p in custom] == ["plan", "company", "seats", "signupDate", "vip"]
    assert custom[3] == {"key": "signupDate", "label": "Signup date", "type": "date"}


def test_properties_list_invalid_choice_400(api: httpx.Client) -> None:
    response = api.get("/contacts/properties", params={"list": "some"})
    assert '"all" or "custom"' in failure(response, 400)


def test_properties_create_derives_sentence_case_label(api: httpx.Client) -> None:
    response = api.post("/contacts/properties", json={"name": "favoriteColor", "type": "string"})
    assert response.json() == {"success": True}
    custom = api.get("/contacts/properties", params={"list": "custom"}).json()
    assert custom[-1] == {"key": "favoriteColor", "label": "Favorite color", "type": "string"}
    api.post("/contacts/update", json={"email": ADA_EMAIL, "favoriteColor": "green"})
    assert one(api, email=ADA_EMAIL)["favoriteColor"] == "green"


def test_properties_create_duplicate_400(api: httpx.Client) -> None:
    for name in ("plan", "Plan"):
        response = api.post("/contacts/properties", json={"name": name, "type": "string"})
        assert failure(response, 400) == "Property already exists."


@pytest.mark.parametrize("name", ["id", "teamId", "email", "createdAt", "mailingLists"])
def test_properties_create_reserved_name_400(api: httpx.Client, name: str) -> None:
    response = api.post("/contacts/properties", json={"name": name, "type": "string"})
    assert "reserved property name" in failure(response, 400)


def test_properties_create_invalid_type_400(api: httpx.Client) -> None:
    response = api.post("/contacts/properties", json={"name": "score", "type": "integer"})
    assert "string, number, boolean, date" in failure(response, 400)


def test_properties_create_invalid_name_400(api: httpx.Client) -> None:
    for name in ("plan name", "1st", ""):
        response = api.post("/contacts/properties", json={"name": name, "type": "string"})
        assert failure(response, 400)


def test_custom_fields_legacy_lists_custom_only(api: httpx.Client) -> None:
    fields = api.get("/contacts/customFields").json()
    assert fields == api.get("/contacts/properties", params={"list": "custom"}).json()


def test_lists_returns_seeded_lists(api: httpx.Client) -> None:
    assert api.get("/lists").json() == [
        {
            "id": NEWSLETTER_LIST_ID,
            "name": "Newsletter",
            "description": "Monthly product news.",
            "isPublic": True,
        },
        {"id": BETA_LIST_ID, "name": "Beta testers", "description": None, "isPublic": False},
    ]


def test_sending_ips_listed(api: httpx.Client) -> None:
    assert api.get("/dedicated-sending-ips").json() == list(SENDING_IPS)


# --- events ---------------------------------------------------------------------------------


def test_event_send_creates_contact_and_records(api: httpx.Client, admin: httpx.Client) -> None:
    response = api.post(
        "/events/send",
        json={
            "email": "eve@example.com",
            "eventName": "signup",
            "eventProperties": {"product": "Pro Plan", "amount": 99.0, "trial": True},
            "plan": "pro",
            "mailingLists": {NEWSLETTER_LIST_ID: True},
        },
    )
    assert response.json() == {"success": True}
    contact = one(api, email="eve@example.com")
    assert contact["plan"] == "pro"
    assert contact["mailingLists"] == {NEWSLETTER_LIST_ID: True}
    [event] = state_of(admin, "events")
    assert event["eventName"] == "signup"
    assert event["contactId"] == contact["id"]
    assert event["eventProperties"] == {"product": "Pro Plan", "amount": 99.0, "trial": True}
    assert event["contactProperties"] == {"plan": "pro"}
    assert event["createdContact"] is True


def test_event_send_by_user_id_existing(api: httpx.Client, admin: httpx.Client) -> None:
    response = api.post("/events/send", json={"userId": ADA_USER_ID, "eventName": "login"})
    assert response.status_code == 200
    [event] = state_of(admin, "events")
    assert (event["contactId"], event["createdContact"]) == (ADA_CONTACT_ID, False)


def test_event_send_missing_event_name_400(api: httpx.Client) -> None:
    response = api.post("/events/send", json={"email": ADA_EMAIL})
    assert "`eventName` is required" in failure(response, 400)


def test_event_send_no_identifier_400(api: httpx.Client) -> None:
    response = api.post("/events/send", json={"eventName": "signup"})
    assert failure(response, 400) == "An email or userId is required."


def test_event_send_unknown_user_id_400(api: httpx.Client, admin: httpx.Client) -> None:
    response = api.post("/events/send", json={"userId": "user_ghost", "eventName": "signup"})
    assert failure(response, 400) == "Contact not found."
    assert state_of(admin, "events") == []


def test_event_send_split_match_400(api: httpx.Client) -> None:
    response = api.post(
        "/events/send", json={"email": GRACE_EMAIL, "userId": ADA_USER_ID, "eventName": "x"}
    )
    assert failure(response, 400) == "Multiple contacts found for the given criteria"


@pytest.mark.parametrize("value", [None, {"nested": 1}, [1, 2]])
def test_event_send_bad_event_property_400(api: httpx.Client, value: Any) -> None:
    response = api.post(
        "/events/send",
        json={"email": ADA_EMAIL, "eventName": "x", "eventProperties": {"bad": value}},
    )
    assert "Event property `bad`" in failure(response, 400)


# --- idempotency ----------------------------------------------------------------------------


def test_idempotency_reused_key_409(api: httpx.Client, admin: httpx.Client) -> None:
    body = {"email": ADA_EMAIL, "eventName": "purchase"}
    headers = {"Idempotency-Key": "order-1001"}
    assert api.post("/events/send", json=body, headers=headers).status_code == 200
    again = api.post("/events/send", json={**body, "eventName": "other"}, headers=headers)
    assert failure(again, 409) == (
        "Request with idempotency key order-1001 has already been processed."
    )
    assert len(state_of(admin, "events")) == 1
    assert state_of(admin, "idempotencyKeys") == ["order-1001"]


def test_idempotency_shared_by_both_sending_endpoints(api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    api.post("/events/send", json={"email": ADA_EMAIL, "eventName": "x"}, headers=headers)
    response = api.post(
        "/transactional",
        json={"transactionalId": WELCOME_TEMPLATE_ID, "email": ADA_EMAIL},
        headers=headers,
    )
    assert response.status_code == 409


def test_idempotency_keys_are_per_team(api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "k-1"}
    body = {"email": ADA_EMAIL, "eventName": "x"}
    assert api.post("/events/send", json=body, headers=headers).status_code == 200
    other = {**headers, **bearer(OTHER_KEY)}
    assert api.post("/events/send", json=body, headers=other).status_code == 200


def test_idempotency_failed_request_keeps_key_free(api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    assert api.post("/events/send", json={"eventName": "x"}, headers=headers).status_code == 400
    body = {"email": ADA_EMAIL, "eventName": "x"}
    assert api.post("/events/send", json=body, headers=headers).status_code == 200


def test_idempotency_key_over_100_chars_400(api: httpx.Client) -> None:
    body = {"email": ADA_EMAIL, "eventName": "x"}
    response = api.post("/events/send", json=body, headers={"Idempotency-Key": "k" * 101})
    assert "too long (101 characters)" in failure(response, 400)
    ok = api.post("/events/send", json=body, headers={"Idempotency-Key": "k" * 100})
    assert ok.status_code == 200


def test_idempotency_expires_after_24_hours(api: httpx.Client, admin: httpx.Client) -> None:
    body, headers = {"email": ADA_EMAIL, "eventName": "x"}, {"Idempotency-Key": "daily"}
    api.post("/events/send", json=body, headers=headers)
    admin.post("/clock", json={"advance": 23 * 3600})
    assert api.post("/events/send", json=body, headers=headers).status_code == 409
    admin.post("/clock", json={"advance": 3600 + 1})
    assert api.post("/events/send", json=body, headers=headers).status_code == 200


def test_idempotency_ignored_on_other_endpoints(api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "not-here"}
    for _ in range(2):
        response = api.put("/contacts/update", json={"email": ADA_EMAIL}, headers=headers)
        assert response.status_code == 200


# --- transactional --------------------------------------------------------------------------


def test_transactional_send_records(api: httpx.Client, admin: httpx.Client) -> None:
    response = api.post(
        "/transactional",
        json={
            "transactionalId": RECEIPT_TEMPLATE_ID,
            "email": GRACE_EMAIL,
            "dataVariables": {"order_id": "A-1001", "amount": 49.5},
        },
        headers={"Idempotency-Key": "receipt-1"},
    )
    assert response.json() == {"success": True}
    [sent] = state_of(admin, "sends")
    assert sent["transactionalId"] == RECEIPT_TEMPLATE_ID
    assert sent["email"] == GRACE_EMAIL
    assert sent["dataVariables"] == {"order_id": "A-1001", "amount": 49.5}
    assert sent["idempotencyKey"] == "receipt-1"
    assert sent["contactId"] is not None


def test_transactional_missing_data_variables_400_flat_path(api: httpx.Client) -> None:
    response = api.post(
        "/transactional", json={"transactionalId": RECEIPT_TEMPLATE_ID, "email": ADA_EMAIL}
    )
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "path": "dataVariables",
        "message": "There are required fields for this email. You need to include a "
        "'dataVariables' object with the required fields.",
    }


def test_transactional_missing_variable_400_nested_with_id(api: httpx.Client) -> None:
    response = api.post(
        "/transactional",
        json={
            "transactionalId": RECEIPT_TEMPLATE_ID,
            "email": ADA_EMAIL,
            "dataVariables": {"order_id": "A-1", "amount": ""},
        },
    )
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "message": "Missing required data variable(s): amount",
        "error": {"path": "dataVariables", "message": "Missing required data variable(s): amount"},
        "transactionalId": RECEIPT_TEMPLATE_ID,
    }


def test_transactional_unknown_id_404_nested(api: httpx.Client) -> None:
    response = api.post("/transactional", json={"transactionalId": "cnope", "email": ADA_EMAIL})
    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "message": "Transactional email not found.",
        "error": {"path": "transactionalId", "message": "Transactional email not found."},
    }


def test_transactional_unpublished_400_with_reason(api: httpx.Client) -> None:
    response = api.post(
        "/transactional",
        json={
            "transactionalId": PASSWORD_RESET_TEMPLATE_ID,
            "email": ADA_EMAIL,
            "dataVariables": {"reset_url": "https://example.com/r"},
        },
    )
    assert "not published" in failure(response, 400)
    assert response.json()["error"]["path"] == "transactionalId"
    assert "reason" in response.json()["error"]


def test_transactional_missing_transactional_id_400(api: httpx.Client) -> None:
    response = api.post("/transactional", json={"email": ADA_EMAIL})
    assert "`transactionalId` is required" in failure(response, 400)
    assert response.json()["path"] == "transactionalId"


def test_transactional_missing_or_invalid_email_400(api: httpx.Client) -> None:
    missing = api.post("/transactional", json={"transactionalId": WELCOME_TEMPLATE_ID})
    assert "`email` is required" in failure(missing, 400)
    invalid = api.post(
        "/transactional", json={"transactionalId": WELCOME_TEMPLATE_ID, "email": "nope"}
    )
    assert failure(invalid, 400) == "Invalid email address."
    assert invalid.json()["path"] == "email"


def test_transactional_optional_variable_may_be_left_out(api: httpx.Client) -> None:
    body = {"transactionalId": WELCOME_TEMPLATE_ID, "email": ADA_EMAIL}
    assert api.post("/transactional", json=body).status_code == 200
    blank = {**body, "dataVariables": {"first_name": ""}}
    assert api.post("/transactional", json=blank).status_code == 200


def test_transactional_bad_variable_type_400(api: httpx.Client) -> None:
    response = api.post(
        "/transactional",
        json={
            "transactionalId": WELCOME_TEMPLATE_ID,
            "email": ADA_EMAIL,
            "dataVariables": {"first_name": {"nested": "no"}},
        },
    )
    failure(response, 400)
    assert response.json()["error"]["path"] == "dataVariables.first_name"


def test_transactional_array_variable_accepted(api: httpx.Client) -> None:
    response = api.post(
        "/transactional",
        json={
            "transactionalId": RECEIPT_TEMPLATE_ID,
            "email": ADA_EMAIL,
            "dataVariables": {"order_id": "A", "amount": 3, "items": [{"name": "x", "qty": 1}]},
        },
    )
    assert response.status_code == 200


def test_transactional_attachments_not_enabled_400(api: httpx.Client) -> None:
    attachment = {"filename": "a.txt", "contentType": "text/plain", "data": "aGk="}
    response = api.post(
        "/transactional",
        json={
            "transactionalId": WELCOME_TEMPLATE_ID,
            "email": ADA_EMAIL,
            "attachments": [attachment],
        },
    )
    assert "Attachments are not enabled" in failure(response, 400)
    assert response.json()["path"] == "attachments"


def test_transactional_attachments_recorded_when_enabled(
    api: httpx.Client, admin: httpx.Client
) -> None:
    data = base64.b64encode(b"%PDF-1.4 receipt").decode()
    response = api.post(
        "/transactional",
        json={
            "transactionalId": RECEIPT_TEMPLATE_ID,
            "email": ADA_EMAIL,
            "dataVariables": {"order_id": "A", "amount": 1},
            "attachments": [
                {"filename": "receipt.pdf", "contentType": "application/pdf", "data": data}
            ],
        },
    )
    assert response.status_code == 200
    [sent] = state_of(admin, "sends")
    assert sent["attachments"] == [
        {"filename": "receipt.pdf", "contentType": "application/pdf", "size": 16}
    ]


def test_transactional_attachment_bad_base64_400(api: httpx.Client) -> None:
    response = api.post(
        "/transactional",
        json={
            "transactionalId": RECEIPT_TEMPLATE_ID,
            "email": ADA_EMAIL,
            "dataVariables": {"order_id": "A", "amount": 1},
            "attachments": [{"filename": "a", "contentType": "text/plain", "data": "%%%"}],
        },
    )
    failure(response, 400)
    assert response.json()["error"]["path"] == "attachments[0].data"


def test_transactional_add_to_audience_creates_contact(api: httpx.Client) -> None:
    body = {"transactionalId": WELCOME_TEMPLATE_ID, "email": "guest@example.com"}
    assert api.post("/transactional", json=body).status_code == 200
    assert find(api, email="guest@example.com") == []
    assert api.post("/transactional", json={**body, "addToAudience": True}).status_code == 200
    assert one(api, email="guest@example.com")["source"] == "API"


# --- transactional listings -----------------------------------------------------------------


def add_templates(admin: httpx.Client, published: int, drafts: int) -> None:
    for index in range(published + drafts):
        response = admin.post(
            "/teams/default/templates",
            json={
                "id": f"ctxextra{index:017d}",
                "name": f"Extra {index}",
                "published": index < published,
                "dataVariables": ["name"],
                "createdAt": f"2025-06-01T00:00:{index:02d}.000Z",
            },
        )
        assert response.status_code == 200, response.text


def test_transactional_legacy_list_published_only_oldest_first(api: httpx.Client) -> None:
    body = api.get("/transactional").json()
    assert body["pagination"] == {
        "totalResults": 2,
        "returnedResults": 2,
        "perPage": 20,
        "totalPages": 1,
        "nextCursor": None,
        "nextPage": None,
    }
    assert [t["id"] for t in body["data"]] == [RECEIPT_TEMPLATE_ID, WELCOME_TEMPLATE_ID]
    assert body["data"][0] == {
        "id": RECEIPT_TEMPLATE_ID,
        "name": "Order receipt",
        "lastUpdated": "2025-01-12T16:30:00.000Z",
        "dataVariables": ["order_id", "amount"],
    }


def test_transactional_legacy_pagination_follows_cursor(
    api: httpx.Client, admin: httpx.Client, emulator: EmulatorServer
) -> None:
    add_templates(admin, published=25, drafts=3)
    seen: list[str] = []
    page = api.get("/transactional", params={"perPage": "10"}).json()
    pages = [page]
    while page["pagination"]["nextPage"]:
        next_page = page["pagination"]["nextPage"]
        cursor = page["pagination"]["nextCursor"]
        assert next_page == f"{emulator.base_url}/transactional?cursor={cursor}&perPage=10"
        page = api.get(next_page).json()
        assert page["data"][0]["id"] == cursor
        pages.append(page)
    for each in pages:
        seen.extend(t["id"] for t in each["data"])
    assert [p["pagination"]["returnedResults"] for p in pages] == [10, 10, 7]
    assert {p["pagination"]["totalPages"] for p in pages} == {3}
    assert seen[:2] == [RECEIPT_TEMPLATE_ID, WELCOME_TEMPLATE_ID]
    assert len(seen) == len(set(seen)) == 27
    assert PASSWORD_RESET_TEMPLATE_ID not in seen


@pytest.mark.parametrize("per_page", ["9", "51", "ten", "-5"])
def test_transactional_legacy_per_page_out_of_range_400(api: httpx.Client, per_page: str) -> None:
    response = api.get("/transactional", params={"perPage": per_page})
    assert "Invalid `perPage` value" in failure(response, 400)


def test_transactional_legacy_unknown_cursor_400(api: httpx.Client) -> None:
    response = api.get("/transactional", params={"cursor": "cnotacursor"})
    assert "Invalid cursor" in failure(response, 400)


def test_transactional_emails_newest_first_with_drafts(
    api: httpx.Client, admin: httpx.Client, emulator: EmulatorServer
) -> None:
    add_templates(admin, published=10, drafts=2)
    body = api.get("/transactional-emails", params={"perPage": "10"}).json()
    assert body["pagination"]["totalResults"] == 15
    assert body["pagination"]["nextPage"].startswith(emulator.base_url + "/transactional-emails?")
    first = body["data"][0]
    assert first["id"] == f"ctxextra{11:017d}"
    assert first["draftEmailMessageId"] is not None and first["publishedEmailMessageId"] is None
    assert set(first) == {
        "id", "url", "name", "draftEmailMessageId", "publishedEmailMessageId",
        "transactionalGroupId", "createdAt", "updatedAt", "dataVariables",
    }  # fmt: skip
    rest = api.get(body["pagination"]["nextPage"]).json()
    assert [t["id"] for t in rest["data"]][-3:] == [
        PASSWORD_RESET_TEMPLATE_ID,
        WELCOME_TEMPLATE_ID,
        RECEIPT_TEMPLATE_ID,
    ]


def test_transactional_emails_bad_per_page_400_without_success(api: httpx.Client) -> None:
    response = api.get("/transactional-emails", params={"perPage": "100"})
    assert response.status_code == 400
    assert set(response.json()) == {"message"}


# --- faults ---------------------------------------------------------------------------------


def test_fault_429_answers_rate_limited(api: httpx.Client, admin: httpx.Client) -> None:
    planned = admin.post("/faults", json={"kind": "429", "count": 2})
    assert planned.json()["fault"]["kind"] == "429"
    first, second, third = (api.get("/api-key") for _ in range(3))
    assert failure(first, 429) == "Rate limit exceeded."
    assert first.headers["x-ratelimit-remaining"] == "0"
    assert second.status_code == 429
    assert third.status_code == 200


def test_fault_500_answers_server_error(api: httpx.Client, admin: httpx.Client) -> None:
    admin.post("/faults", json={"kind": "500", "path": "/contacts/create"})
    response = api.post("/contacts/create", json={"email": "x@example.com"})
    assert "Internal server error" in failure(response, 500)
    assert find(api, email="x@example.com") == []


def test_fault_slow_delays_then_answers(api: httpx.Client, admin: httpx.Client) -> None:
    admin.post("/faults", json={"kind": "slow", "delay": 0.3})
    started = time.perf_counter()
    response = api.get("/api-key")
    assert time.perf_counter() - started >= 0.3
    assert response.status_code == 200


def test_fault_slow_trips_client_timeout(emulator: EmulatorServer, admin: httpx.Client) -> None:
    admin.post("/faults", json={"kind": "slow", "delay": 0.5})
    with httpx.Client(base_url=emulator.base_url, headers=bearer(KEY), timeout=0.1) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/api-key")
    # The server still answers once the delay is over; we wait for that so the late request
    # does not land in the next test's request log.
    deadline = time.monotonic() + 5
    while not emulator.requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator.requests()[0]["status"] == 200


def test_fault_cut_drops_connection_before_handling(
    api: httpx.Client, admin: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    admin.post("/faults", json={"kind": "cut", "path": "/api/v1/contacts/create"})
    with pytest.raises(TRANSPORT_ERRORS):
        api.post("/contacts/create", json={"email": "cut@example.com"})
    assert find(api, email="cut@example.com") == []
    assert api.post("/contacts/create", json={"email": "cut@example.com"}).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_fault_cut_after_handles_then_drops(
    api: httpx.Client, admin: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    admin.post("/faults", json={"kind": "cut_after", "method": "POST"})
    with pytest.raises(TRANSPORT_ERRORS):
        api.post("/contacts/create", json={"email": "half@example.com"})
    # The create happened even though no answer arrived, so a blind retry conflicts.
    assert one(api, email="half@example.com")["email"] == "half@example.com"
    assert api.post("/contacts/create", json={"email": "half@example.com"}).status_code == 409
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_fault_filters_by_path_and_method(api: httpx.Client, admin: httpx.Client) -> None:
    admin.post("/faults", json={"kind": "500", "path": "/lists", "method": "get"})
    assert api.get("/api-key").status_code == 200
    assert api.get("/lists").status_code == 500
    assert api.get("/lists").status_code == 200


def test_fault_list_and_clear(admin: httpx.Client, api: httpx.Client) -> None:
    admin.post("/faults", json={"kind": "500", "count": 3, "path": "lists"})
    assert admin.get("/faults").json()["faults"] == [
        {"kind": "500", "count": 3, "delay": 1.0, "path": "/api/v1/lists", "method": None}
    ]
    assert admin.delete("/faults").status_code == 200
    assert admin.get("/faults").json()["faults"] == []
    assert api.get("/lists").status_code == 200


@pytest.mark.parametrize(
    "fault",
    [{"kind": "404"}, {"kind": "500", "count": 0}, {"kind": "slow", "delay": "1"}, {"x": 1}],
)
def test_fault_invalid_plan_400(admin: httpx.Client, fault: dict[str, Any]) -> None:
    assert failure(admin.post("/faults", json=fault), 400)


def test_fault_python_api_plans_fault(emulator: EmulatorServer, api: httpx.Client) -> None:
    emulator.add_fault(FaultKind.SERVER_ERROR, path="/api-key")
    assert api.get("/api-key").status_code == 500
    assert api.get("/api-key").status_code == 200


# --- request log ----------------------------------------------------------------------------


def test_request_log_records_requests_without_keys(
    emulator: EmulatorServer, api: httpx.Client, admin: httpx.Client
) -> None:
    api.post("/contacts/create", json={"email": "log@example.com"})
    api.get("/contacts/find", params={"email": "log@example.com"})
    httpx.get(emulator.base_url + "/lists", headers=bearer("wrong-key"))
    entries = admin.get("/requests").json()["requests"]
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("POST", "/api/v1/contacts/create", 200),
        ("GET", "/api/v1/contacts/find", 200),
        ("GET", "/api/v1/lists", 401),
    ]
    created, found, denied = entries
    assert created["body"] == {"email": "log@example.com"}
    assert created["team"] == "default"
    assert created["key"] == key_fingerprint(KEY)
    assert "authorization" not in created["headers"]
    assert KEY not in json.dumps(entries)
    assert found["query"] == "email=log%40example.com"
    assert (denied["team"], denied["key"]) == (None, key_fingerprint("wrong-key"))


def test_request_log_marks_faults(api: httpx.Client, admin: httpx.Client) -> None:
    admin.post("/faults", json={"kind": "cut"})
    with pytest.raises(TRANSPORT_ERRORS):
        api.get("/api-key")
    [entry] = admin.get("/requests").json()["requests"]
    assert (entry["fault"], entry["status"]) == ("cut", None)


def test_request_log_filters_and_clears(api: httpx.Client, admin: httpx.Client) -> None:
    api.get("/api-key")
    api.get("/lists", headers=bearer(OTHER_KEY))
    by_team = admin.get("/requests", params={"team": "marketing"}).json()["requests"]
    assert [e["path"] for e in by_team] == ["/api/v1/lists"]
    by_path = admin.get("/requests", params={"path": "/api/v1/api-key"}).json()["requests"]
    assert [e["team"] for e in by_path] == ["default"]
    assert admin.delete("/requests").status_code == 200
    assert admin.get("/requests").json()["requests"] == []


def test_request_log_python_api_matches_http(emulator: EmulatorServer, api: httpx.Client) -> None:
    api.get("/api-key")
    [entry] = emulator.requests()
    assert entry["path"] == "/api/v1/api-key"


# --- reset and admin state ------------------------------------------------------------------


def test_reset_restores_seed_and_clears_everything(
    emulator: EmulatorServer, api: httpx.Client, admin: httpx.Client
) -> None:
    api.post("/contacts/delete", json={"email": ADA_EMAIL})
    api.post("/events/send", json={"email": GRACE_EMAIL, "eventName": "x"})
    admin.post("/faults", json={"kind": "500", "path": "/nothing"})
    admin.post("/teams", json={"name": "temporary", "keys": ["temporary_key"]})
    assert admin.post("/reset").json() == {"success": True}
    assert admin.get("/faults").json()["faults"] == []
    assert admin.get("/requests").json()["requests"] == []
    assert [t["name"] for t in admin.get("/teams").json()["teams"]] == list(DEMO_KEYS)
    assert state_of(admin, "events") == []
    assert {c["email"] for c in state_of(admin, "contacts")} == {
        ADA_EMAIL,
        GRACE_EMAIL,
        ALAN_EMAIL,
        BARBARA_EMAIL,
    }
    assert emulator.state.team("default").rate_limit == 10


def test_admin_state_inspection_views(admin: httpx.Client) -> None:
    contacts = state_of(admin, "contacts")
    barbara = next(c for c in contacts if c["email"] == BARBARA_EMAIL)
    assert barbara["suppressed"] is True
    assert barbara["createdAt"] == "2024-09-02T17:45:00.000Z"
    assert [p["key"] for p in state_of(admin, "properties")][:3] == ["plan", "company", "seats"]
    assert [m["id"] for m in state_of(admin, "lists")] == [NEWSLETTER_LIST_ID, BETA_LIST_ID]
    templates = {t["id"]: t for t in state_of(admin, "templates")}
    assert templates[RECEIPT_TEMPLATE_ID]["requiredVariables"] == ["order_id", "amount"]
    assert templates[PASSWORD_RESET_TEMPLATE_ID]["published"] is False
    assert state_of(admin, "sends") == []


def test_admin_unknown_team_or_view_404(admin: httpx.Client) -> None:
    assert "no team named 'nobody'" in failure(admin.get("/teams/nobody/contacts"), 404)
    assert "no state called 'widgets'" in failure(admin.get("/teams/default/widgets"), 404)
    assert failure(admin.get("/nothing-here"), 404)
    assert failure(admin.put("/reset"), 405) == "Method not allowed."


def test_admin_add_team_makes_key_and_seeds(emulator: EmulatorServer, admin: httpx.Client) -> None:
    response = admin.post("/teams", json={"name": "acme", "rateLimit": 0, "seed": False})
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert response.json()["team"]["keys"] == [key_fingerprint(key)]
    with httpx.Client(base_url=emulator.base_url, headers=bearer(key)) as client:
        assert client.get("/api-key").json()["teamName"] == "acme"
        assert client.get("/lists").json() == []
        assert "x-ratelimit-limit" not in client.get("/lists").headers
    listed = admin.get("/teams").json()["teams"]
    assert KEY not in json.dumps(listed)


def test_admin_add_team_invalid_400(admin: httpx.Client) -> None:
    assert "already exists" in failure(admin.post("/teams", json={"name": "default"}), 400)
    assert "team names" in failure(admin.post("/teams", json={"name": "a b"}), 400)
    assert failure(admin.post("/teams", json={"name": "z", "keys": "k"}), 400)
    assert failure(admin.post("/teams", content=b"{"), 400)


def test_admin_show_and_change_team(admin: httpx.Client) -> None:
    shown = admin.get("/teams/marketing").json()
    assert (shown["name"], shown["rateLimit"], shown["contacts"]) == ("marketing", 10, 4)
    changed = admin.patch("/teams/marketing", json={"rateLimit": 5, "removalLimit": 2})
    assert (changed.json()["team"]["rateLimit"], changed.json()["team"]["removalLimit"]) == (5, 2)
    assert "unknown setting" in failure(admin.patch("/teams/marketing", json={"speed": 1}), 400)
    assert failure(admin.patch("/teams/marketing", json={"rateLimit": -1}), 400)


def test_admin_suppression_marks_and_clears(api: httpx.Client, admin: httpx.Client) -> None:
    admin.post("/teams/default/suppression", json={"userId": ADA_USER_ID})
    check = api.get("/contacts/suppression", params={"email": ADA_EMAIL}).json()
    assert check["isSuppressed"] is True
    admin.post("/teams/default/suppression", json={"email": ADA_EMAIL, "suppressed": False})
    check = api.get("/contacts/suppression", params={"email": ADA_EMAIL}).json()
    assert check["isSuppressed"] is False
    missing = admin.post("/teams/default/suppression", json={"email": "g@example.com"})
    assert failure(missing, 404)
    assert failure(admin.post("/teams/default/suppression", json={}), 400)


def test_admin_template_invalid_400(admin: httpx.Client) -> None:
    assert failure(admin.post("/teams/default/templates", json={}), 400)
    duplicate = {"id": RECEIPT_TEMPLATE_ID, "name": "Again"}
    assert "already exists" in failure(admin.post("/teams/default/templates", json=duplicate), 400)


def test_admin_clock_rejects_going_back(admin: httpx.Client) -> None:
    assert failure(admin.post("/clock", json={"advance": -5}), 400)


def test_admin_health(admin: httpx.Client) -> None:
    assert admin.get("/health").json() == {"ok": True, "teams": 3}


# --- server lifecycle and Python API --------------------------------------------------------


def test_server_starts_and_stops_quickly() -> None:
    started = time.perf_counter()
    server = EmulatorServer(keys=["quick_key"], rate_limit=0).start()
    startup = time.perf_counter() - started
    try:
        assert server.running
        assert server.base_url == f"http://127.0.0.1:{server.port}/api/v1"
        assert server.port != 0
        response = httpx.get(server.base_url + "/api-key", headers=bearer("quick_key"))
        assert response.json()["teamName"] == "team-1"
    finally:
        stopping = time.perf_counter()
        server.stop()
    assert startup < 1.0
    assert time.perf_counter() - stopping < 1.0
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/api-key")


def test_server_answers_without_delayed_ack(api: httpx.Client) -> None:
    """Small answers must not wait for the client's delayed ACK (~40 ms each, Nagle)."""
    api.get("/api-key")
    started = time.perf_counter()
    for _ in range(50):
        api.get("/api-key")
    assert time.perf_counter() - started < 1.0


def test_server_lifecycle_misuse_raises() -> None:
    server = EmulatorServer(keys={"solo": "solo_key"}, seed=False)
    with pytest.raises(RuntimeError, match="call start"):
        server.base_url  # noqa: B018
    with server:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    server.stop()
    with pytest.raises(RuntimeError, match="cannot be started again"):
        server.start()


def test_server_busy_port_start_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EmulatorStartError, match=f"cannot listen on 127.0.0.1:{port}"):
            EmulatorServer(port=port).start()


def test_server_keys_forms() -> None:
    assert EmulatorServer().keys == list(DEMO_KEYS.values())
    assert EmulatorServer(keys="k").keys == ["k"]
    many = EmulatorServer(keys={"a": ["a1", "a2"], "b": "b1"})
    assert many.keys == ["a1", "a2", "b1"]
    assert many.team_for_key("a2").name == "a"
    with pytest.raises(KeyError):
        many.team_for_key("zzz")
    with pytest.raises(ValueError, match="already used"):
        EmulatorServer(keys={"a": "same", "b": "same"})


def test_server_python_api_adds_team(emulator: EmulatorServer) -> None:
    team = emulator.add_team("py-team", ["py_key"], rate_limit=0)
    assert emulator.team("py-team") is team
    response = httpx.get(emulator.base_url + "/api-key", headers=bearer("py_key"))
    assert response.json()["teamName"] == "py-team"
    emulator.reset()
    with pytest.raises(KeyError, match="no team named 'py-team'"):
        emulator.team("py-team")


def test_serve_forever_prints_url_then_keys() -> None:
    out, err, stop = io.StringIO(), io.StringIO(), threading.Event()
    worker = threading.Thread(
        target=serve_forever,
        kwargs={"keys": ["cli_key_1", "cli_key_2"], "out": out, "err": err, "stop": stop},
    )
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while out.getvalue().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        url, *keys = out.getvalue().splitlines()
        assert keys == ["cli_key_1", "cli_key_2"]
        response = httpx.get(url + "/api-key", headers=bearer("cli_key_2"))
        assert response.json()["teamName"] == "team-2"
        assert "Press Ctrl+C" in err.getvalue()
    finally:
        stop.set()
        worker.join(5)
    assert not worker.is_alive()


def test_state_python_api_direct() -> None:
    state = EmulatorState({"acme": ["k1", "k2"]}, seed=False, rate_limit=0)
    team = state.team_for_key("k2")
    assert team is not None and team.name == "acme"
    assert state.team_for_key("nope") is None and state.team_for_key(None) is None
    assert team.create_contact({"email": "a@example.com"})["success"] is True
    with pytest.raises(ValueError, match="team names"):
        state.add_team("")
    with pytest.raises(ValueError, match="non-empty string without spaces"):
        state.add_team("b", ["has space"])
    state.reset()
    assert len(state.team("acme").contacts) == 0


# --- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("planName", "Plan name"),
        ("favoriteColor", "Favorite color"),
        ("plan", "Plan"),
        ("apiURL", "Api URL"),
        ("seats2Max", "Seats 2 max"),
    ],
)
def test_label_for_camel_case_to_sentence(key: str, label: str) -> None:
    assert label_for(key) == label


def test_make_id_cuid_like_and_unique() -> None:
    ids = {make_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        assert len(value) == 25 and value[0] == "c"
        assert value.isalnum() and value == value.lower()


def test_seed_ids_cuid_like() -> None:
    ids = [
        value
        for name, value in vars(emulator_package).items()
        if name.endswith("_ID") and name != "ADA_USER_ID"
    ]
    assert len(ids) == 9
    for value in ids:
        assert len(value) == 25 and value[0] == "c" and value.isalnum() and value.islower()


def test_idempotency_store_expires_keys() -> None:
    now = [1000.0]
    store = IdempotencyStore(clock=lambda: now[0], ttl=10)
    store.remember("a")
    now[0] += 5
    store.remember("b")
    assert "a" in store and "b" in store and len(store) == 2
    now[0] += 6
    assert "a" not in store and "b" in store
    assert store.keys() == ["b"]


def test_rate_window_fixed_second() -> None:
    now = [0.0]
    window = RateWindow(clock=lambda: now[0])
    assert [window.take(2) for _ in range(3)] == [(True, 1), (True, 0), (False, 0)]
    now[0] = 0.99
    assert window.take(2) == (False, 0)
    now[0] = 1.0
    assert window.take(2) == (True, 1)


def test_fault_path_is_normalised() -> None:
    assert Fault(FaultKind.CUT, path="lists").path == "/api/v1/lists"
    assert Fault(FaultKind.CUT, path="/api/v1/lists").path == "/api/v1/lists"
    with pytest.raises(ValueError, match="at least 1"):
        Fault(FaultKind.CUT, count=0)


def test_exports_sorted_and_complete() -> None:
    exported = emulator_package.__all__
    assert len(exported) == len(set(exported))
    assert all(hasattr(emulator_package, name) for name in exported)

    def order(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert exported == sorted(exported, key=order)
    public = {
        name
        for name, value in vars(emulator_package).items()
        if not name.startswith("_") and not isinstance(value, type(emulator_package))
    } - {"annotations"}
    assert public == set(exported)


def test_fault_slow_counts_against_the_rate_limit_on_arrival(
    emulator: EmulatorServer, admin: httpx.Client
) -> None:
    """A slow answer's request takes its place in the rate window when it arrives: with a
    limit of 2, a slow request then two quick ones leave the second quick one refused."""
    emulator.state.set_rate_limit(2)
    admin.post("/faults", json={"kind": "slow", "delay": 0.5})
    statuses: list[int] = []
    with httpx.Client(base_url=emulator.base_url, headers=bearer(KEY)) as client:
        slow = threading.Thread(target=lambda: statuses.append(client.get("/api-key").status_code))
        slow.start()
        deadline = time.monotonic() + 2
        while len(emulator.state.faults) and time.monotonic() < deadline:
            time.sleep(0.01)
        quick = [client.get("/api-key").status_code for _ in range(2)]
        slow.join()
    assert statuses == [200]
    assert quick == [200, 429]
