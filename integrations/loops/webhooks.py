"""The Loops webhooks receiver: signed contact events that keep the contact directory current.

``webhooks(account, settings)`` is the pack's ``Integration.webhooks``: an ASGI app that
``luabridge serve`` mounts at ``/webhooks/loops/<account>``, one URL (and one signing secret) per
account. Each delivery is verified with the ``standardwebhooks`` library (the Standard Webhooks
headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``, HMAC-SHA256 over
``"{id}.{timestamp}.{body}"``, five minutes of timestamp tolerance), applied to the directory
exactly once by its ``webhook-id``, and answered:

- 200 ``{"ok": true, "applied": <eventName>}``: applied (or ``"ignored"`` for an event that does
  not concern contacts);
- 400 a body that is not a Loops event; 401 a missing or bad signature, or a timestamp outside
  the tolerance; 405 not a POST; 409 a ``webhook-id`` applied before (a replay); 413 a body over
  1 MiB; 503 no signing secret configured for the account.

Nothing is changed unless the answer is 200.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Final

from luabridge.accounts import AccountSettings

from .client import DEFAULT_BASE_URL
from .directory import ContactDirectory, DirectoryError, account_identity, default_directory_path

__all__ = [
    "CONTACT_EVENTS",
    "SECRET_ENV",
    "EventError",
    "WebhookReceiver",
    "changes_from_event",
    "secret_variable",
    "webhooks",
]

#: The environment variable holding the ``default`` account's signing secret; account
#: ``<name>`` reads ``LOOPS_WEBHOOK_SECRET_<NAME>``.
SECRET_ENV: Final = "LOOPS_WEBHOOK_SECRET"
#: The events that change the directory.
CONTACT_EVENTS: Final = (
    "contact.created",
    "contact.deleted",
    "contact.unsubscribed",
    "contact.mailingList.subscribed",
    "contact.mailingList.unsubscribed",
)
_MAX_BODY: Final = 1024 * 1024

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class EventError(ValueError):
    """A verified body that is not a Loops event the receiver understands."""


def secret_variable(account: str) -> str:
    """The variable that holds ``account``'s signing secret (``LOOPS_WEBHOOK_SECRET_MARKETING``)."""
    return SECRET_ENV if account == "default" else f"{SECRET_ENV}_{account.upper()}"


def _identity(payload: Mapping[str, Any]) -> dict[str, Any]:
    identity = payload.get("contactIdentity")
    if not isinstance(identity, Mapping) or not isinstance(identity.get("id"), str):
        raise EventError("a contact event needs contactIdentity with a string id")
    out: dict[str, Any] = {"id": identity["id"]}
    for key in ("email", "userId"):
        if isinstance(identity.get(key), str):
            out[key] = identity[key]
    return out


def changes_from_event(
    payload: Any,
) -> tuple[str, dict[str, Any] | None, dict[str, str | None] | None]:
    """``(eventName, upsert, remove)`` for one Loops webhook body; both None for an event that
    does not concern contacts. Raises ``EventError`` for a body that is not an event."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("eventName"), str):
        raise EventError("the body is not a Loops event (no eventName)")
    name = str(payload["eventName"])
    if name not in CONTACT_EVENTS:
        return name, None, None
    identity = _identity(payload)
    if name == "contact.created":
        contact = payload.get("contact")
        data = dict(contact) if isinstance(contact, Mapping) else {}
        return name, {**data, **identity}, None
    if name == "contact.deleted":
        remove = {
            "contact_id": identity["id"],
            "email": identity.get("email"),
            "user_id": identity.get("userId"),
        }
        return name, None, remove
    if name == "contact.unsubscribed":
        return name, {**identity, "subscribed": False}, None
    mailing_list = payload.get("mailingList")
    if not isinstance(mailing_list, Mapping) or not isinstance(mailing_list.get("id"), str):
        raise EventError(f"{name} needs mailingList with a string id")
    subscribed = name == "contact.mailingList.subscribed"
    return name, {**identity, "mailingLists": {mailing_list["id"]: subscribed}}, None


class WebhookReceiver:
    """The ASGI app receiving one Loops account's webhooks (see the module docstring).

    - ``account``: the account name, for messages
    - ``secret``: the endpoint's signing secret (``whsec_...``); None answers every delivery
      with 503 and says which variable to set
    - ``directory`` / ``account_id``: where the account's contacts are kept (``account_identity``)
    """

    def __init__(
        self,
        account: str,
        *,
        secret: str | None,
        directory: ContactDirectory,
        account_id: str,
    ) -> None:
        from standardwebhooks.webhooks import Webhook

        self.account = account
        self.directory = directory
        self.account_id = account_id
        self._verifier = Webhook(secret) if secret else None

    def __repr__(self) -> str:
        return f"WebhookReceiver(account={self.account!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": "webhooks are delivered with POST"})
            return
        body = bytearray()
        while True:
            message = await receive()
            body.extend(message.get("body", b""))
            if len(body) > _MAX_BODY:
                await _answer(send, 413, {"error": f"body over {_MAX_BODY} bytes"})
                return
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status, answer = self.handle(bytes(body), headers)
        await _answer(send, status, answer)

    def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Verify and apply one delivery; returns the HTTP status and the JSON answer."""
        from standardwebhooks.webhooks import WebhookVerificationError

        if self._verifier is None:
            return 503, {
                "error": f"no signing secret for Loops account {self.account!r}: set "
                f"{secret_variable(self.account)} to the endpoint's secret from the Loops "
                "dashboard (Settings, Webhooks)"
            }
        try:
            text = body.decode("utf-8")
            self._verifier.verify(text, dict(headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError: a signature or secret that is not base64, or not "v1,<sig>".
            return 401, {"error": f"signature refused: {exc or type(exc).__name__}"}
        webhook_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        try:
            name, upsert, remove = changes_from_event(json.loads(text))
        except (EventError, ValueError) as exc:
            return 400, {"error": str(exc)}
        if upsert is None and remove is None:
            return 200, {"ok": True, "ignored": name}
        try:
            applied = self.directory.apply_webhook(
                self.account_id, webhook_id, upsert=upsert, remove=remove
            )
        except DirectoryError as exc:
            return 503, {"error": str(exc)}
        if not applied:
            return 409, {"error": f"webhook-id {webhook_id!r} was applied before (a replay)"}
        return 200, {"ok": True, "applied": name}


async def _answer(send: Send, status: int, answer: Mapping[str, Any]) -> None:
    body = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def webhooks(
    account: str,
    settings: AccountSettings,
    *,
    environ: Mapping[str, str] | None = None,
    directory_path: str | Path | None = None,
) -> WebhookReceiver:
    """The pack's ``Integration.webhooks``: the receiver of ``account``, writing to the
    directory rows of that account (the same rows its actions use)."""
    env = os.environ if environ is None else environ
    base_url = settings.base_url or DEFAULT_BASE_URL
    path = Path(directory_path) if directory_path else default_directory_path(env)
    return WebhookReceiver(
        account,
        secret=env.get(secret_variable(account)) or None,
        directory=ContactDirectory(path),
        account_id=account_identity(settings.name, base_url, settings.api_key or ""),
    )
