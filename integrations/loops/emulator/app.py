"""The ASGI app: the emulated Loops API under ``/api/v1``, the admin API under ``/__emulator``.

Every API request goes through the same steps, in the order the real service appears to use:
read the body, apply a planned fault (``faults.py``), authenticate the bearer key (401 without
rate-limit headers), count it against the team's rate limit (429), route it (404 unknown path,
405 wrong method), then run the team's rule for the endpoint (``team.py``). The answer is
logged before it is sent, so a test that reads the log after a response always finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from .admin import ADMIN_PREFIX, create_admin_app
from .connections import ConnectionRegistry
from .errors import ApiError, api_error
from .faults import API_PREFIX, FaultKind
from .records import format_timestamp
from .request_log import RequestRecord, key_fingerprint
from .state import EmulatorState
from .team import Team

__all__ = [
    "API_ROUTES",
    "ApiRequest",
    "ConnectionCutError",
    "EmulatorApp",
    "LoopsApi",
    "create_app",
]

_JSON_UTF8: Final = b"application/json; charset=utf-8"
# Real 401s came back as plain application/json, without the charset.
_JSON_PLAIN: Final = b"application/json"
_INVALID_KEY: Final = {"success": False, "message": "Invalid API key", "error": "Invalid API key"}
_RATE_LIMITED: Final = {"success": False, "message": "Rate limit exceeded."}
_NOT_ALLOWED: Final = {"success": False, "message": "Method not allowed."}
_SERVER_ERROR: Final = {
    "success": False,
    "message": "Internal server error (a planned emulator fault). Retry the request.",
}
# How long a cut waits for the server to notice the closed socket before giving up.
_CUT_GRACE: Final = 5.0


class ConnectionCutError(RuntimeError):
    """A ``cut`` fault hit a request on a server that cannot drop connections.

    Only the emulator's own server (``EmulatorServer``) tracks connections; under any other
    ASGI server the fault surfaces as this exception instead.
    """


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@dataclass(slots=True)
class ApiRequest:
    """One API request as the endpoint rules see it (``path`` is below ``/api/v1``)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    raw_body: bytes
    base_url: str
    root_url: str
    _parsed: tuple[bool, Any] | None = field(default=None, repr=False)

    def parsed(self) -> tuple[bool, Any]:
        """``(True, value)`` for a JSON body (``None`` when empty), ``(False, text)`` otherwise."""
        if self._parsed is None:
            if not self.raw_body.strip():
                self._parsed = (True, None)
            else:
                try:
                    self._parsed = (
                        True,
                        json.loads(self.raw_body, parse_constant=_reject_constant),
                    )
                except ValueError as exc:
                    self._parsed = (False, f"{exc}")
        return self._parsed

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, whatever the Content-Type says; an empty body is ``{}``.

        Anything else is the 400 a client needs to fix its request.
        """
        ok, value = self.parsed()
        if not ok:
            raise api_error(
                400,
                f"The request body is not valid JSON ({value}). Send a JSON object, e.g. "
                '{"email": "ada@example.com"}.',
            )
        if value is None:
            return {}
        if not isinstance(value, dict):
            kind = "an array" if isinstance(value, list) else f"a {type(value).__name__}"
            raise api_error(400, f"The request body must be a JSON object, not {kind}.")
        return value


Handler = Callable[[Team, ApiRequest], Any]


def _update_contact(team: Team, request: ApiRequest) -> Any:
    return team.update_contact(request.json_object())


def _find_contact(team: Team, request: ApiRequest) -> Any:
    return team.find_contacts(email=request.query.get("email"), user_id=request.query.get("userId"))


def _check_suppression(team: Team, request: ApiRequest) -> Any:
    return team.check_suppression(
        email=request.query.get("email"), user_id=request.query.get("userId")
    )


def _remove_suppression(team: Team, request: ApiRequest) -> Any:
    return team.remove_suppression(
        email=request.query.get("email"), user_id=request.query.get("userId")
    )


def _send_event(team: Team, request: ApiRequest) -> Any:
    return team.send_event(request.json_object(), request.headers.get("idempotency-key"))


def _send_transactional(team: Team, request: ApiRequest) -> Any:
    return team.send_transactional(request.json_object(), request.headers.get("idempotency-key"))


def _list_transactional(team: Team, request: ApiRequest) -> Any:
    return team.list_transactional(
        per_page=request.query.get("perPage"),
        cursor=request.query.get("cursor"),
        base_url=request.base_url,
    )


def _list_transactional_emails(team: Team, request: ApiRequest) -> Any:
    return team.list_transactional_emails(
        per_page=request.query.get("perPage"),
        cursor=request.query.get("cursor"),
        base_url=request.base_url,
        root_url=request.root_url,
    )


_ROUTES: Final[dict[str, dict[str, Handler]]] = {
    "/api-key": {"GET": lambda team, _: team.api_key()},
    "/contacts/create": {"POST": lambda team, r: team.create_contact(r.json_object())},
    # PUT is documented; a long-lived production client uses POST, so we accept both.
    "/contacts/update": {"PUT": _update_contact, "POST": _update_contact},
    "/contacts/find": {"GET": _find_contact},
    "/contacts/delete": {"POST": lambda team, r: team.delete_contact(r.json_object())},
    "/contacts/suppression": {"GET": _check_suppression, "DELETE": _remove_suppression},
    "/contacts/properties": {
        "GET": lambda team, r: team.list_properties(r.query.get("list")),
        "POST": lambda team, r: team.create_property(r.json_object()),
    },
    "/contacts/customFields": {"GET": lambda team, _: team.list_custom_fields()},
    "/lists": {"GET": lambda team, _: team.list_mailing_lists()},
    "/events/send": {"POST": _send_event},
    "/transactional": {"GET": _list_transactional, "POST": _send_transactional},
    "/transactional-emails": {"GET": _list_transactional_emails},
    "/dedicated-sending-ips": {"GET": lambda team, _: team.list_sending_ips()},
}

#: Every emulated endpoint: path below ``/api/v1`` → the HTTP methods it answers.
API_ROUTES: Final[Mapping[str, frozenset[str]]] = {
    path: frozenset(methods) for path, methods in _ROUTES.items()
}


@dataclass(slots=True)
class _Answer:
    status: int
    body: Any
    headers: list[tuple[bytes, bytes]]
    team: Team | None
    content_type: bytes = _JSON_UTF8


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def _send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]], content_type: bytes
) -> None:
    payload = _encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return key.strip() or None


def _rate_headers(limit: int, remaining: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit", str(limit).encode()),
        (b"x-ratelimit-remaining", str(remaining).encode()),
    ]


class LoopsApi:
    """The ``/api/v1`` half of the emulator (see the module docstring for the pipeline)."""

    def __init__(self, state: EmulatorState, connections: ConnectionRegistry | None = None):
        self.state = state
        self.connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        raw_body = await _read_body(receive)
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with self.state.lock:
            fault = self.state.faults.take(method, path)
        kind = fault.kind if fault is not None else None
        slot: tuple[bool, int] | None = None
        if fault is not None and kind is FaultKind.SLOW:
            # A slow answer still counts against the rate limit when the request arrives, as
            # a server counts it, not when the delayed answer is made.
            with self.state.lock:
                team = self.state.team_for_key(_bearer(headers))
                slot = team.take_rate_slot() if team is not None else None
            await asyncio.sleep(fault.delay)

        host = headers.get("host") or "{}:{}".format(*scope.get("server") or ("127.0.0.1", 80))
        root_url = f"{scope.get('scheme', 'http')}://{host}"
        request = ApiRequest(
            method=method,
            path=path[len(API_PREFIX) :] or "/",
            query=dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)),
            headers=headers,
            raw_body=raw_body,
            base_url=root_url + API_PREFIX,
            root_url=root_url,
        )
        if kind is FaultKind.CUT:
            self._log(scope, request, None, None, kind, started)
            await self._cut(scope, receive, send, None)
            return
        answer = self._answer(request, kind, slot)
        self._log(scope, request, answer, answer.team, kind, started)
        if kind is FaultKind.CUT_AFTER:
            await self._cut(scope, receive, send, answer)
            return
        await _send_json(send, answer.status, answer.body, answer.headers, answer.content_type)

    def _answer(
        self, request: ApiRequest, fault: FaultKind | None, slot: tuple[bool, int] | None = None
    ) -> _Answer:
        with self.state.lock:
            team = self.state.team_for_key(_bearer(request.headers))
            # Planned 429s and 500s hit before authentication, like a proxy in front of Loops.
            if fault is FaultKind.RATE_LIMITED:
                limit = team.rate_limit if team is not None else self.state.rate_limit
                return _Answer(429, _RATE_LIMITED, _rate_headers(limit, 0), team)
            if fault is FaultKind.SERVER_ERROR:
                return _Answer(500, _SERVER_ERROR, [], team)
            if team is None:
                return _Answer(401, _INVALID_KEY, [], None, _JSON_PLAIN)
            admitted, remaining = team.take_rate_slot() if slot is None else slot
            # With limiting off there is no limit to report, so we send no rate-limit headers.
            limits = _rate_headers(team.rate_limit, remaining) if team.rate_limit > 0 else []
            if not admitted:
                return _Answer(429, _RATE_LIMITED, limits, team)
            methods = _ROUTES.get(request.path)
            if methods is None:
                message = (
                    f"No Loops API endpoint at {API_PREFIX}{request.path}. The emulator serves: "
                    + ", ".join(API_PREFIX + p for p in _ROUTES)
                    + "."
                )
                return _Answer(404, {"success": False, "message": message}, limits, team)
            handler = methods.get(request.method)
            if handler is None:
                allow = (b"allow", ", ".join(sorted(methods)).encode())
                return _Answer(405, _NOT_ALLOWED, [*limits, allow], team)
            try:
                return _Answer(200, handler(team, request), limits, team)
            except ApiError as error:
                return _Answer(error.status, error.body, limits, team)

    def _log(
        self,
        scope: Scope,
        request: ApiRequest,
        answer: _Answer | None,
        team: Team | None,
        fault: FaultKind | None,
        started: float,
    ) -> None:
        key = _bearer(request.headers)
        ok, body = request.parsed()
        with self.state.lock:
            log = self.state.requests
            log.append(
                RequestRecord(
                    seq=log.next_seq(),
                    at=format_timestamp(self.state.now()),
                    method=request.method,
                    path=scope["path"],
                    query=scope["query_string"].decode("latin-1"),
                    headers={k: v for k, v in request.headers.items() if k != "authorization"},
                    team=team.name if team is not None else None,
                    key=key_fingerprint(key) if key else None,
                    body=body if ok else request.raw_body.decode("utf-8", "replace"),
                    status=answer.status if answer is not None else None,
                    fault=fault.value if fault is not None else None,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )
            )

    async def _cut(
        self, scope: Scope, receive: Receive, send: Send, answer: _Answer | None
    ) -> None:
        """Drop the connection: at once, or (``cut_after``) halfway through ``answer``."""
        if answer is not None:
            payload = _encode(answer.body)
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [
                        (b"content-type", answer.content_type),
                        (b"content-length", str(len(payload)).encode()),
                        *answer.headers,
                    ],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": payload[: len(payload) // 2],
                    "more_body": True,
                }
            )
        if self.connections is None or not self.connections.close(scope):
            raise ConnectionCutError(
                "a planned 'cut' fault needs the emulator's own server (EmulatorServer) to drop "
                "the connection; this ASGI server does not expose it"
            )
        # We wait until the server has seen the socket close; returning earlier would make it
        # answer with its own 500 on our behalf.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CUT_GRACE):
                while (await receive())["type"] != "http.disconnect":
                    pass


async def _not_found(scope: Scope, send: Send) -> None:
    message = (
        f"Nothing at {scope['path']}. The Loops API is under {API_PREFIX}/ and the emulator's "
        f"admin API under {ADMIN_PREFIX}/."
    )
    await _send_json(send, 404, {"success": False, "message": message}, [], _JSON_UTF8)


class EmulatorApp:
    """The whole emulator as one ASGI app: API, admin API, and a JSON 404 for anything else."""

    def __init__(self, state: EmulatorState, connections: ConnectionRegistry | None = None):
        self.state = state
        self.api = LoopsApi(state, connections)
        self.admin = create_admin_app(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003})
            return
        path: str = scope["path"]
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            await self.api(scope, receive, send)
        elif path.startswith(ADMIN_PREFIX + "/"):
            await self.admin(scope, receive, send)
        else:
            await _read_body(receive)
            await _not_found(scope, send)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        # Nothing to set up or tear down; we answer so servers that insist on lifespan work.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(state: EmulatorState, connections: ConnectionRegistry | None = None) -> EmulatorApp:
    """The emulator's ASGI app over ``state``.

    ``connections`` lets ``cut`` faults drop sockets; ``EmulatorServer`` passes its own.
    """
    return EmulatorApp(state, connections)
