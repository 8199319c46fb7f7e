"""The test-only admin API under ``/__emulator``: reset, faults, the request log, teams.

It exists for tests and local experiments and is never part of the Loops API, hence the
separate prefix. It needs no key (the emulator listens on 127.0.0.1). Teams are addressed by
name; to learn the name behind a key, call ``GET /api/v1/api-key`` with it (``teamName``).

Routes (below ``/__emulator``):

- ``GET /health``: ``{"ok": true}`` once the server answers
- ``POST /reset``: configured teams re-seeded; faults, request log and clock offset cleared
- ``GET /requests`` (optional ``?team=``, ``?path=``): the request log, oldest first;
  ``DELETE /requests`` empties it
- ``GET /faults``: faults still pending; ``POST /faults`` plans one (``{"kind", "count",
  "delay", "path", "method"}``); ``DELETE /faults`` drops them all
- ``POST /clock``: ``{"advance": seconds}`` moves the emulator's clock forward
- ``GET /teams``: every team, keys shown as fingerprints; ``POST /teams`` adds one
  (``{"name", "keys"?, "rateLimit"?, "seed"?}``; the answer shows the keys in full)
- ``GET /teams/{team}``: settings and counts; ``PATCH`` it with ``{"rateLimit"?,
  "rejectUnknownProperties"?, "removalLimit"?, "webhookUrl"?, "webhookSecret"?}`` (a URL and
  its signing secret make the team send signed contact webhooks there; a null URL stops them)
- ``POST /teams/{team}/keys``: another key (``{"key"?}``, made up when absent)
- ``POST /teams/{team}/suppression``: ``{"email"|"userId", "suppressed"?}``
- ``POST /teams/{team}/templates``: a transactional template (``{"name", "id"?,
  "published"?, "dataVariables"?, "optionalVariables"?, "attachmentsEnabled"?, "createdAt"?}``)
- ``GET /teams/{team}/{kind}``: ``contacts``, ``events``, ``sends``, ``properties``, ``lists``,
  ``templates`` or ``idempotencyKeys``
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .faults import Fault
from .records import Template, format_timestamp, make_id
from .request_log import key_fingerprint
from .team import Team

if TYPE_CHECKING:
    from .state import EmulatorState

__all__ = ["ADMIN_PREFIX", "create_admin_app"]

ADMIN_PREFIX: Final = "/__emulator"

_SNAPSHOTS: Final = ("contacts", "events", "sends", "properties", "lists", "templates")


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _ok(**payload: Any) -> JSONResponse:
    return JSONResponse({"success": True, **payload})


def _fail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _BadRequest(400, f"the body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(value, dict):
        raise _BadRequest(400, "the body must be a JSON object")
    return value


def _summary(team: Team) -> dict[str, Any]:
    with team.lock:
        return {
            "name": team.name,
            "keys": [key_fingerprint(k) for k in team.keys],
            "rateLimit": team.rate_limit,
            "rejectUnknownProperties": team.reject_unknown_properties,
            "removalLimit": team.removal_limit,
            "contacts": len(team.contacts),
            "events": len(team.events),
            "sends": len(team.sends),
        }


def _int_field(data: dict[str, Any], name: str, *, minimum: int = 0) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _BadRequest(400, f"`{name}` must be a whole number >= {minimum}, got {value!r}")
    return value


def _string_list(data: dict[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _BadRequest(400, f"`{name}` must be a list of strings, got {value!r}")
    return tuple(value)


def create_admin_app(state: EmulatorState) -> Starlette:
    """The admin API over ``state`` (see the module docstring for the routes)."""

    def team_of(request: Request) -> Team:
        try:
            return state.team(request.path_params["team"])
        except KeyError as exc:
            raise _BadRequest(404, str(exc.args[0])) from None

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "teams": len(state.teams)})

    async def reset(request: Request) -> Response:
        state.reset()
        return _ok()

    async def list_requests(request: Request) -> Response:
        entries = state.request_log()
        team, path = request.query_params.get("team"), request.query_params.get("path")
        entries = [
            e
            for e in entries
            if (team is None or e["team"] == team) and (path is None or e["path"] == path)
        ]
        return JSONResponse({"requests": entries})

    async def clear_requests(request: Request) -> Response:
        with state.lock:
            state.requests.clear()
        return _ok()

    async def list_faults(request: Request) -> Response:
        with state.lock:
            return JSONResponse({"faults": state.faults.pending()})

    async def add_fault(request: Request) -> Response:
        try:
            fault = Fault.from_json(await _body(request))
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None
        with state.lock:
            state.faults.add(fault)
        return _ok(fault=fault.to_json())

    async def clear_faults(request: Request) -> Response:
        with state.lock:
            state.faults.clear()
        return _ok()

    async def advance_clock(request: Request) -> Response:
        seconds = (await _body(request)).get("advance")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise _BadRequest(400, f"`advance` must be a number of seconds >= 0, got {seconds!r}")
        return _ok(offset=state.advance_clock(float(seconds)), now=format_timestamp(state.now()))

    async def list_teams(request: Request) -> Response:
        return JSONResponse({"teams": [_summary(t) for t in state.teams]})

    async def add_team(request: Request) -> Response:
        data = await _body(request)
        name = data.get("name")
        keys = _string_list(data, "keys") or (f"emu_{secrets.token_hex(16)}",)
        seed = data.get("seed")
        if seed is not None and not isinstance(seed, bool):
            raise _BadRequest(400, f"`seed` must be true or false, got {seed!r}")
        try:
            team = state.add_team(
                str(name) if name is not None else "",
                keys,
                rate_limit=_int_field(data, "rateLimit"),
                seed=seed,
            )
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None
        # The caller chose or needs these keys, so this one answer shows them in full.
        return _ok(team=_summary(team), keys=list(keys))

    async def show_team(request: Request) -> Response:
        return JSONResponse(_summary(team_of(request)))

    async def change_team(request: Request) -> Response:
        team, data = team_of(request), await _body(request)
        unknown = set(data) - {
            "rateLimit",
            "rejectUnknownProperties",
            "removalLimit",
            "webhookUrl",
            "webhookSecret",
        }
        if unknown:
            raise _BadRequest(
                400,
                f"unknown setting(s) {sorted(unknown)}; use rateLimit, "
                "rejectUnknownProperties, removalLimit, webhookUrl, webhookSecret",
            )
        if "webhookUrl" in data:
            url, secret = data.get("webhookUrl"), data.get("webhookSecret")
            if url is not None and (not isinstance(url, str) or not isinstance(secret, str)):
                raise _BadRequest(
                    400, "`webhookUrl` and `webhookSecret` must be strings (or webhookUrl null)"
                )
            try:
                team.set_webhook(url, secret)
            except ValueError as exc:
                raise _BadRequest(400, str(exc)) from exc
        rate_limit = _int_field(data, "rateLimit")
        removal_limit = _int_field(data, "removalLimit")
        reject = data.get("rejectUnknownProperties")
        if reject is not None and not isinstance(reject, bool):
            raise _BadRequest(
                400, f"`rejectUnknownProperties` must be true or false, got {reject!r}"
            )
        if rate_limit is not None:
            state.set_rate_limit(rate_limit, team.name)
        with team.lock:
            if removal_limit is not None:
                team.removal_limit = removal_limit
            if reject is not None:
                team.reject_unknown_properties = reject
        return _ok(team=_summary(team))

    async def add_key(request: Request) -> Response:
        team, data = team_of(request), await _body(request)
        key = data.get("key") or f"emu_{secrets.token_hex(16)}"
        try:
            state.add_key(team.name, key)
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None
        return _ok(key=key, team=_summary(team))

    async def set_suppression(request: Request) -> Response:
        team, data = team_of(request), await _body(request)
        suppressed = data.get("suppressed", True)
        if not isinstance(suppressed, bool):
            raise _BadRequest(400, f"`suppressed` must be true or false, got {suppressed!r}")
        email, user_id = data.get("email"), data.get("userId")
        if (email is None) == (user_id is None):
            raise _BadRequest(400, "give exactly one of `email` or `userId`")
        try:
            contact = team.set_suppressed(email=email, user_id=user_id, suppressed=suppressed)
        except LookupError as exc:
            raise _BadRequest(404, str(exc)) from None
        return _ok(contact={"id": contact.id, "email": contact.email, "suppressed": suppressed})

    async def add_template(request: Request) -> Response:
        team, data = team_of(request), await _body(request)
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise _BadRequest(400, "`name` is required: the template's display name")
        for flag in ("published", "attachmentsEnabled"):
            if not isinstance(data.get(flag, False), bool):
                raise _BadRequest(400, f"`{flag}` must be true or false")
        created = data.get("createdAt") or format_timestamp(state.now())
        if not isinstance(created, str):
            raise _BadRequest(400, "`createdAt` must be an ISO-8601 date string")
        template = Template(
            str(data.get("id") or make_id()),
            name,
            published=data.get("published", True),
            data_variables=_string_list(data, "dataVariables"),
            optional_variables=_string_list(data, "optionalVariables"),
            attachments_enabled=data.get("attachmentsEnabled", False),
            created_at=created,
            updated_at=created,
        )
        try:
            team.add_template(template)
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None
        return _ok(template=template.to_admin())

    async def snapshot(request: Request) -> Response:
        team, kind = team_of(request), request.path_params["kind"]
        if kind not in (*_SNAPSHOTS, "idempotencyKeys"):
            raise _BadRequest(
                404,
                f"no state called {kind!r}; choose one of: {', '.join(_SNAPSHOTS)}, "
                "idempotencyKeys",
            )
        return JSONResponse({kind: team.snapshot(kind)})

    def guarded(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await endpoint(request)
            except _BadRequest as exc:
                return _fail(exc.status, exc.message)

        return run

    def route(path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str) -> Route:
        return Route(ADMIN_PREFIX + path, guarded(endpoint), methods=[method])

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return _fail(405, "Method not allowed.")
        return _fail(exc.status_code, f"No admin endpoint at {request.url.path}.")

    return Starlette(
        routes=[
            route("/health", health, "GET"),
            route("/reset", reset, "POST"),
            route("/requests", list_requests, "GET"),
            route("/requests", clear_requests, "DELETE"),
            route("/faults", list_faults, "GET"),
            route("/faults", add_fault, "POST"),
            route("/faults", clear_faults, "DELETE"),
            route("/clock", advance_clock, "POST"),
            route("/teams", list_teams, "GET"),
            route("/teams", add_team, "POST"),
            route("/teams/{team}", show_team, "GET"),
            route("/teams/{team}", change_team, "PATCH"),
            route("/teams/{team}/keys", add_key, "POST"),
            route("/teams/{team}/suppression", set_suppression, "POST"),
            route("/teams/{team}/templates", add_template, "POST"),
            route("/teams/{team}/{kind}", snapshot, "GET"),
        ],
        exception_handlers={404: http_error, 405: http_error},
    )
