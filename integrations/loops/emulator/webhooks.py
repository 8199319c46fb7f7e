"""Signed Loops webhooks sent by the emulator: the contact events a team's changes cause.

A team given a URL and a signing secret (``EmulatorServer.set_webhook``, or ``PATCH
/__emulator/teams/<team>`` with ``webhookUrl`` and ``webhookSecret``) posts each event as Loops
does: the body of reference section 11 (``eventName``, ``eventTime``,
``webhookSchemaVersion``, ``contactIdentity`` ...) with the Standard Webhooks headers, signed
with the ``standardwebhooks`` library. Deliveries leave in order from one background thread per
team, so an API request never waits for the receiver; each outcome is kept in ``deliveries``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import httpx

__all__ = ["SCHEMA_VERSION", "WebhookSender"]

SCHEMA_VERSION: Final = "1.0.0"
_STOP: Final = object()


class WebhookSender:
    """Posts one team's webhook events to ``url``, signed with ``secret`` (``whsec_...``).

    - ``clock``: wall-clock seconds for ``eventTime`` and ``webhook-timestamp``
    - ``timeout``: seconds per delivery (default 5.0); a failed delivery is recorded, not retried
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 5.0,
    ) -> None:
        from standardwebhooks.webhooks import Webhook

        self.url = url
        self._signer = Webhook(secret)
        self._clock = clock
        self._timeout = timeout
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self.deliveries: list[dict[str, Any]] = []
        self._thread = threading.Thread(
            target=self._run, name="loops-emulator-webhooks", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"WebhookSender(url={self.url!r})"

    def emit(self, event_name: str, fields: Mapping[str, Any]) -> None:
        """Queue one event: ``eventName``, ``eventTime`` and the schema version, then ``fields``."""
        body = {
            "eventName": event_name,
            "eventTime": int(self._clock()),
            "webhookSchemaVersion": SCHEMA_VERSION,
            **fields,
        }
        self._queue.put(body)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event has been delivered (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Stop after the events already queued; calling it again does nothing."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(self._timeout + 1)

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while True:
                body = self._queue.get()
                try:
                    if body is _STOP:
                        return
                    self._deliver(client, body)
                finally:
                    self._queue.task_done()

    def _deliver(self, client: httpx.Client, body: dict[str, Any]) -> None:
        text = json.dumps(body)
        msg_id = f"msg_{uuid.uuid4().hex}"
        now = self._clock()
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": self._signer.sign(
                msg_id, datetime.fromtimestamp(int(now), tz=UTC), text
            ),
        }
        record: dict[str, Any] = {"id": msg_id, "eventName": body["eventName"]}
        try:
            response = client.post(self.url, content=text.encode(), headers=headers)
            record["status"] = response.status_code
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.deliveries.append(record)
