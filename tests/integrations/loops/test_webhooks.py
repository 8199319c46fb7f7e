"""The Loops webhooks receiver over real HTTP: signed deliveries move the contact directory.

The receiver (``integrations.loops.webhooks``) is served on its own by uvicorn on 127.0.0.1,
as ``luabridge serve`` would mount it. Deliveries are signed here with the ``standardwebhooks``
library in the Loops format (reference section 11), or sent by the emulator when its contacts
change; the directory is then read back through ``list_contacts`` in Lua.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from standardwebhooks.webhooks import Webhook

from integrations.loops import integration, open_account
from integrations.loops.emulator import ADA_CONTACT_ID, ADA_EMAIL, DEMO_KEYS, NEWSLETTER_LIST_ID
from integrations.loops.webhooks import WebhookReceiver, webhooks
from luabridge import Bridge
from luabridge.accounts import AccountSettings

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

SECRET = "whsec_" + base64.b64encode(b"luabridge-test-signing-secret-32b").decode()


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


@dataclasses.dataclass
class Setup:
    """A bridge and a receiver sharing one account's directory rows."""

    bridge: Bridge
    receiver: WebhookReceiver
    url: str

    def contacts(self) -> dict[str, Any]:
        result = self.bridge.run("return app.integrations.loops.list_contacts{}")
        assert result.ok, result.error
        assert isinstance(result.value, dict)
        return result.value


@pytest.fixture
def setup(loops_emulator: EmulatorServer, tmp_path: Path) -> Iterator[Setup]:
    loops_emulator.reset()
    directory = tmp_path / "contacts.sqlite3"
    environ = {"LOOPS_BASE_URL": loops_emulator.base_url, "LOOPS_API_KEY": DEMO_KEYS["default"]}
    config = tmp_path / "luabridge.toml"
    config.write_text("[loops.accounts.default]\nrate_limit = 0\n", encoding="utf-8")
    opener = functools.partial(open_account, directory_path=directory)
    loops = dataclasses.replace(integration, open_client=opener)
    bridge = Bridge.from_config(
        config, environ=environ, integrations=[loops], isolation="inprocess"
    )
    settings = bridge.accounts["loops"]["default"]
    receiver = webhooks(
        "default",
        settings,
        environ={"LOOPS_WEBHOOK_SECRET": SECRET},
        directory_path=directory,
    )
    with serve(receiver) as url:
        yield Setup(bridge, receiver, url)
    bridge.close()


def signed(
    body: dict[str, Any],
    *,
    msg_id: str | None = None,
    at: float | None = None,
    secret: str = SECRET,
) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(body)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(int(time.time() if at is None else at), tz=UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, text),
    }
    return text.encode(), headers


def event(name: str, contact_id: str, email: str, **extra: Any) -> dict[str, Any]:
    return {
        "eventName": name,
        "eventTime": int(time.time()),
        "webhookSchemaVersion": "1.0.0",
        "contactIdentity": {"id": contact_id, "email": email, "userId": None},
        **extra,
    }


def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=5)


NEW_ID = "cwebhookcontact0000000001"
NEW_EMAIL = "lin@example.com"
NEWSLETTER = {"id": NEWSLETTER_LIST_ID, "name": "Newsletter", "description": None, "isPublic": True}


def test_webhooks_signed_events_move_the_directory(setup: Setup) -> None:
    """created, list subscribed/unsubscribed, unsubscribed and deleted, each applied in turn."""
    before = setup.contacts()
    assert (before["total"], before["source"], before.get("synced_at")) == (0, "seen", None)
    created = event(
        "contact.created",
        NEW_ID,
        NEW_EMAIL,
        contact={
            "id": NEW_ID,
            "email": NEW_EMAIL,
            "firstName": "Lin",
            "subscribed": True,
            "mailingLists": {},
            "plan": "pro",
            "optInStatus": None,
        },
    )
    assert post(setup.url, *signed(created)).json() == {"ok": True, "applied": "contact.created"}
    listing = setup.contacts()
    assert listing["source"] == "webhooks" and listing["synced_at"].endswith("+00:00")
    [contact] = listing["contacts"]
    assert (contact["id"], contact["first_name"], contact["properties"]) == (
        NEW_ID,
        "Lin",
        {"plan": "pro"},
    )

    joined = event("contact.mailingList.subscribed", NEW_ID, NEW_EMAIL, mailingList=NEWSLETTER)
    assert post(setup.url, *signed(joined)).status_code == 200
    assert setup.contacts()["contacts"][0]["mailing_lists"] == {NEWSLETTER_LIST_ID: True}

    left = event("contact.mailingList.unsubscribed", NEW_ID, NEW_EMAIL, mailingList=NEWSLETTER)
    assert post(setup.url, *signed(left)).status_code == 200
    assert setup.contacts()["contacts"][0]["mailing_lists"] == {}

    gone = event("contact.unsubscribed", NEW_ID, NEW_EMAIL)
    assert post(setup.url, *signed(gone)).status_code == 200
    assert setup.contacts()["contacts"][0]["subscribed"] is False

    deleted = event("contact.deleted", NEW_ID, NEW_EMAIL)
    assert post(setup.url, *signed(deleted)).status_code == 200
    assert setup.contacts()["total"] == 0


def test_webhooks_other_events_are_acknowledged_and_ignored(setup: Setup) -> None:
    body = {
        "eventName": "email.opened",
        "eventTime": int(time.time()),
        "webhookSchemaVersion": "1.0.0",
    }
    answer = post(setup.url, *signed(body))
    assert answer.status_code == 200 and answer.json() == {"ok": True, "ignored": "email.opened"}
    assert setup.contacts()["source"] == "seen"


def _created() -> dict[str, Any]:
    return event("contact.created", NEW_ID, NEW_EMAIL, contact={"id": NEW_ID, "email": NEW_EMAIL})


@pytest.mark.parametrize(
    "tamper",
    [
        "bad_signature",
        "other_secret",
        "old_timestamp",
        "future_timestamp",
        "no_signature",
        "garbled_signature",
        "body_changed",
    ],
)
def test_webhooks_refused_delivery_changes_nothing(setup: Setup, tamper: str) -> None:
    body, headers = signed(_created())
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    if tamper == "bad_signature":
        headers["webhook-signature"] = "v1," + base64.b64encode(b"x" * 32).decode()
    elif tamper == "other_secret":
        body, headers = signed(_created(), secret=other)
    elif tamper == "old_timestamp":
        body, headers = signed(_created(), at=time.time() - 600)
    elif tamper == "future_timestamp":
        body, headers = signed(_created(), at=time.time() + 600)
    elif tamper == "no_signature":
        del headers["webhook-signature"]
    elif tamper == "garbled_signature":
        headers["webhook-signature"] = "not-a-signature"
    elif tamper == "body_changed":
        body = body.replace(NEW_EMAIL.encode(), b"eve@example.com")
    answer = post(setup.url, body, headers)
    assert answer.status_code == 401, answer.text
    assert "signature refused" in answer.json()["error"]
    assert setup.contacts()["total"] == 0
    assert setup.contacts()["source"] == "seen"


def test_webhooks_replayed_id_is_refused_and_changes_nothing(setup: Setup) -> None:
    body, headers = signed(_created(), msg_id="msg_replayed_1")
    assert post(setup.url, body, headers).status_code == 200
    deleted_body, deleted_headers = signed(
        event("contact.deleted", NEW_ID, NEW_EMAIL), msg_id="msg_replayed_2"
    )
    assert post(setup.url, deleted_body, deleted_headers).status_code == 200
    assert setup.contacts()["total"] == 0
    # The same delivery again (same id, body and signature): refused, the contact stays gone.
    again = post(setup.url, body, headers)
    assert again.status_code == 409 and "replay" in again.json()["error"]
    assert setup.contacts()["total"] == 0


def test_webhooks_signed_body_that_is_no_event_is_refused(setup: Setup) -> None:
    for body in ({"hello": 1}, {"eventName": "contact.created", "contactIdentity": {}}):
        answer = post(setup.url, *signed(body))
        assert answer.status_code == 400, answer.text
    assert setup.contacts()["total"] == 0


def test_webhooks_only_post(setup: Setup) -> None:
    assert httpx.get(setup.url, timeout=5).status_code == 405


def test_webhooks_without_secret_say_which_variable(tmp_path: Path) -> None:
    settings = AccountSettings(name="marketing", api_key="k", base_url="http://x")
    receiver = webhooks("marketing", settings, environ={}, directory_path=tmp_path / "d.sqlite3")
    with serve(receiver) as url:
        answer = post(url, *signed(_created()))
    assert answer.status_code == 503
    assert "LOOPS_WEBHOOK_SECRET_MARKETING" in answer.json()["error"]


def test_webhooks_body_over_the_limit_is_refused(setup: Setup) -> None:
    body, headers = signed({"eventName": "x", "pad": "p" * (1024 * 1024 + 10)})
    assert post(setup.url, body, headers).status_code == 413


# --- emulator -> receiver, end to end ---------------------------------------------------------


def test_emulator_webhooks_reach_the_receiver_end_to_end(
    setup: Setup, loops_emulator: EmulatorServer
) -> None:
    """Writes through the Lua surface make the emulator send signed webhooks to the receiver;
    the directory then holds what the team holds, including a change made outside the bridge."""
    loops_emulator.set_webhook("default", setup.url, SECRET)
    team = loops_emulator.team("default")
    # A contact created in the emulator directly (as the Loops app or a form would).
    team.create_contact({"email": "form@example.com", "firstName": "Form"})
    team.update_contact(
        {"email": ADA_EMAIL, "mailingLists": {NEWSLETTER_LIST_ID: False}, "subscribed": False}
    )
    assert team.webhooks is not None and team.webhooks.flush()
    deliveries = team.webhooks.deliveries
    assert [d["eventName"] for d in deliveries] == [
        "contact.created",
        "contact.unsubscribed",
        "contact.mailingList.unsubscribed",
    ]
    assert all(d.get("status") == 200 for d in deliveries), deliveries
    listing = setup.contacts()
    assert listing["source"] == "webhooks"
    emails = {c["email"]: c for c in listing["contacts"]}
    assert emails["form@example.com"]["first_name"] == "Form"
    assert emails[ADA_EMAIL]["id"] == ADA_CONTACT_ID and emails[ADA_EMAIL]["subscribed"] is False

    team.delete_contact({"email": "form@example.com"})
    assert team.webhooks.flush()
    assert "form@example.com" not in {c["email"] for c in setup.contacts()["contacts"]}


def test_emulator_webhook_configured_through_the_admin_api(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    received: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        received.append({"headers": dict(scope["headers"]), "body": json.loads(message["body"])})
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as url:
        admin = emulator.admin_url
        answer = httpx.patch(
            f"{admin}/teams/default", json={"webhookUrl": url, "webhookSecret": SECRET}
        )
        assert answer.status_code == 200, answer.text
        bad = httpx.patch(f"{admin}/teams/default", json={"webhookUrl": url})
        assert bad.status_code == 400
        team = emulator.team("default")
        team.create_contact({"email": "admin-hook@example.com"})
        assert team.webhooks is not None and team.webhooks.flush()
    [delivery] = received
    assert delivery["body"]["eventName"] == "contact.created"
    # The README and the module's docstring give the path this test used.
    import integrations.loops.emulator.webhooks as module

    assert admin.endswith("/__emulator")
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    assert "PATCH /__emulator/teams/<team>" in readme and "/_emulator/" not in readme
    assert module.__doc__ is not None and "/__emulator/teams/<team>" in module.__doc__
    headers = {k.decode(): v.decode() for k, v in delivery["headers"].items()}
    Webhook(SECRET).verify(json.dumps(delivery["body"]), headers)


# --- mounted by a real luabridge serve ---------------------------------------------------------


def test_serve_mounts_the_receiver_emulator_to_directory(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ``luabridge serve`` process receives the emulator's signed webhooks at
    /webhooks/loops/default, and list_contacts in another process lists the new contact."""
    directory = tmp_path / "contacts.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPS_", "LUABRIDGE_"))}
    env.update(
        LOOPS_API_KEY=DEMO_KEYS["default"],
        LOOPS_BASE_URL=emulator.base_url,
        LUABRIDGE_LOOPS_DIRECTORY=str(directory),
        LOOPS_WEBHOOK_SECRET=SECRET,
        LUABRIDGE_SERVE_TOKEN="test-token-0123456789abcdef",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "luabridge", "serve", "--port", "0"],
        env=env,
        cwd=str(tmp_path),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, f"serve did not start: {line}"
        base = f"http://127.0.0.1:{match.group(1)}"
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(base + "/health", timeout=1)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not answer /health"
            time.sleep(0.05)
        assert "/webhooks/loops/default" in health.json()["webhooks"]
        emulator.set_webhook("default", base + "/webhooks/loops/default", SECRET)
        team = emulator.team("default")
        team.create_contact({"email": "served@example.com", "firstName": "Served"})
        assert team.webhooks is not None and team.webhooks.flush()
        probe = post(base + "/webhooks/loops/default", *signed(_created()))
        assert probe.status_code == 200, probe.text
        assert [d.get("status") for d in team.webhooks.deliveries] == [200]
        # A replay of the same delivery through serve is refused.
        body, headers = signed(_created(), msg_id="msg_served_1")
        assert post(base + "/webhooks/loops/default", body, headers).status_code == 200
        assert post(base + "/webhooks/loops/default", body, headers).status_code == 409
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
    monkeypatch.setenv("LUABRIDGE_LOOPS_DIRECTORY", str(directory))
    with Bridge.from_config(
        environ={"LOOPS_API_KEY": DEMO_KEYS["default"], "LOOPS_BASE_URL": emulator.base_url},
        integrations=[integration],
        isolation="inprocess",
    ) as bridge:
        result = bridge.run("return app.integrations.loops.list_contacts{}")
    assert result.ok, result.error
    emails = {c["email"] for c in result.value["contacts"]}
    assert emails == {"served@example.com", NEW_EMAIL}
    assert result.value["source"] == "webhooks"
