"""The per-run dispatcher: every binding call from Lua lands here.

It owns what Lua must never decide: which accounts exist in the run, the policy (effect tags and
dry run), the call limit, argument validation against the action's model, calling the handler
with the account's client, shaping results by the output model, redaction, and the call records.
It never raises into Lua: each answer is a :data:`luabridge.sandbox.Reply`.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import threading
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from luabridge.action import Action, CallContext, Integration, built
from luabridge.convert import shape_for_schema
from luabridge.effects import quote_name, suggest
from luabridge.errors import IntegrationError, LuabridgeError
from luabridge.ledger.base import CallEntry, CallState, canonical_json, digest
from luabridge.ledger.journal import Journal, derive_key
from luabridge.redact import Redactor
from luabridge.sandbox import Reply

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic_core import ValidationError as PydanticValidationError

    from luabridge.models import ActionResult

__all__ = ["CallRecord", "Dispatcher", "RunPolicy", "WriteGuard", "accepted_names", "suggest"]

#: Consulted before each write of a run is sent, with the write as a plan shows it
#: (``integration``, ``account``, ``action``, ``effect``, ``params``, ``request``); a message
#: stops the run there with ``PlanMismatchError``, None lets the write go (see luabridge.plans).
WriteGuard = Callable[[dict[str, Any]], str | None]

_EFFECT_ORDER = ("read", "write", "destructive")
_log = logging.getLogger(__name__)
# The states as plain strings, read on every call (an enum member's .value is a descriptor).
_SENDING, _SUCCEEDED = CallState.SENDING.value, CallState.SUCCEEDED.value
_FAILED, _UNKNOWN = CallState.FAILED.value, CallState.UNKNOWN.value
_OUTCOME = {_SUCCEEDED: "ok", _FAILED: "failed", _UNKNOWN: "unknown"}


@dataclass
class CallRecord:
    """One action call as the audit log and ``RunResult.calls`` show it (secrets redacted).

    ``outcome`` is ``ok``, ``failed`` (the remote side said no, or nothing was sent; the script
    got ``success = false``), ``unknown`` (the request may have been carried out but no answer
    said so, or the run ended while the call was in progress), ``dry_run`` (validated and
    planned, nothing sent), ``invalid`` (bad arguments), ``refused`` (policy), ``limit`` (call
    limit reached) or ``stopped`` (applying a plan: the write differs from the plan and was not
    sent). ``seq`` is the call's place in the execution (the ledger's sequence number),
    ``idempotency_key`` the key its request carried, and ``replayed`` is true when a resumed
    execution returned the result an earlier run recorded, without sending.
    """

    integration: str
    account: str
    action: str
    effect: str
    params: Any
    outcome: str
    duration_ms: float
    dry_run: bool
    request: dict[str, Any] | None = None
    error: str | None = None
    code: str | None = None
    status: int | None = None
    seq: int | None = None
    idempotency_key: str | None = None
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {
            "integration": self.integration,
            "account": self.account,
            "action": self.action,
            "effect": self.effect,
            "params": self.params,
            "outcome": self.outcome,
            "duration_ms": self.duration_ms,
            "dry_run": self.dry_run,
        }
        for key in ("request", "error", "code", "status", "seq", "idempotency_key"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.replayed:
            out["replayed"] = True
        return out


@dataclass(frozen=True)
class RunPolicy:
    """What one run may do: the allowed effects, dry run, granted accounts, the call limit."""

    allow: frozenset[str]
    dry_run: bool
    max_calls: int
    deadline: float
    execution_id: str


@functools.lru_cache(maxsize=256)
def accepted_names(model: type[BaseModel]) -> dict[str, str]:
    """Every parameter name a model accepts, mapped to its canonical (field) name.

    Worked out once per model (the result is shared: do not change it); walking the fields
    cost about a twentieth of a call's time on the bridge's side."""
    names: dict[str, str] = {}
    for fname, info in model.model_fields.items():
        names[fname] = fname
        alias = info.validation_alias
        if isinstance(alias, str):
            names[alias] = fname
        elif alias is not None and hasattr(alias, "choices"):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names[choice] = fname
    return names


def _describe(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value} (a number)"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"{json.dumps(shown)} (a string)"
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)"
    if isinstance(value, dict):
        return f"a table with {len(value)} key(s)"
    return type(value).__name__


#: Pydantic's names for the members of a union, in words a script writer knows.
_UNION_MEMBERS = {
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "none": "app.null",
}


def _lua_literal(value: Any) -> str:
    """``value`` written as Lua source (strings quoted, tables as constructors)."""
    if value is None:
        return "app.null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return (
            "{"
            + ", ".join(_lua_literal(v) for v in value[:6])
            + (", ..." if len(value) > 6 else "")
            + "}"
        )
    if isinstance(value, dict):
        items = list(value.items())[:6]
        return "{" + ", ".join(f"{k} = {_lua_literal(v)}" for k, v in items) + "}"
    return json.dumps(value)


def _field_annotation(model: type[BaseModel] | None, name: Any) -> Any:
    if model is None or not isinstance(name, str):
        return None
    field = model.model_fields.get(accepted_names(model).get(name, name))
    return None if field is None else field.annotation


def _map_value_type(annotation: Any) -> Any:
    """The value type of a ``dict[str, V]`` annotation (through ``| None``), or None."""
    for tp in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(tp) is dict:
            args = typing.get_args(tp)
            return args[1] if len(args) == 2 else Any
    return None


def _shape_hint(loc: str, annotation: Any, value: Any) -> str | None:
    """For a list given where a map is wanted: the map the caller meant, with its own items."""
    value_type = _map_value_type(annotation)
    if value_type is None or not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, str) for v in value):
        return None
    shown = value[:4]
    filler = "true" if value_type is bool else "<value>"
    items = ", ".join(f"[{json.dumps(v, ensure_ascii=False)}] = {filler}" for v in shown)
    more = ", ..." if len(value) > len(shown) else ""
    return (
        f"parameter '{loc}': expected a table keyed by name, got a list of {len(value)} "
        f"string(s); write {loc} = {{{items}{more}}}"
    )


def _pydantic_message(
    label: str, exc: PydanticValidationError, model: type[BaseModel] | None = None
) -> str:
    parts: list[str] = []
    # A value that matches no member of a union is reported once per member (".str", ".int",
    # ...); such errors are gathered into one sentence naming the allowed types.
    unions: dict[str, tuple[list[str], Any]] = {}
    order: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        path = [p for p in err.get("loc", ()) if p != "__root__"]
        kind = err.get("type", "")
        if len(path) >= 2 and isinstance(path[-1], str) and path[-1] in _UNION_MEMBERS:
            loc = ".".join(str(p) for p in path[:-1])
            if loc not in unions:
                unions[loc] = ([], err.get("input"))
                order.append(("union", loc))
            words = unions[loc][0]
            if _UNION_MEMBERS[path[-1]] not in words:
                words.append(_UNION_MEMBERS[path[-1]])
            continue
        loc = ".".join(str(p) for p in path)
        if kind == "missing":
            order.append(("text", f"'{loc}' is required (got nil)"))
        elif not loc:
            order.append(("text", str(err.get("msg", "")).removeprefix("Value error, ")))
        else:
            hint = None
            if kind == "dict_type" and len(path) == 1:
                hint = _shape_hint(loc, _field_annotation(model, path[0]), err.get("input"))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            order.append(
                ("text", hint or f"parameter '{loc}': {msg} (got {_describe(err.get('input'))})")
            )
    for kind, item in order:
        if kind == "text":
            parts.append(item)
            continue
        words, value = unions[item]
        allowed = ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]
        advice = ""
        if isinstance(value, list | dict):
            advice = (
                "; a nested table cannot be sent here: pass one value, for example "
                'table.concat(list, ",") or app.json.encode(value)'
            )
        parts.append(f"parameter '{item}': must be {allowed} (got {_describe(value)}){advice}")
    return f"{label}: " + "; ".join(parts)


def _positional_message(label: str, model: type[BaseModel], values: list[Any]) -> str:
    """The call written with named parameters, guessing each positional value's parameter."""
    fields = list(model.model_fields.items())
    used: list[str] = []
    pairs: list[str] = []
    for value in values:
        name = None
        if isinstance(value, str) and "@" in value and "email" in model.model_fields:
            name = "email" if "email" not in used else None
        if name is None:
            for fname, info in fields:
                if fname not in used and info.is_required():
                    name = fname
                    break
        if name is None:
            for fname, info in fields:
                if fname not in used and fname not in ("email", "user_id", "contact_id"):
                    ann = info.annotation
                    if typing.get_origin(ann) in (typing.Union, types.UnionType):
                        ann = next((a for a in typing.get_args(ann) if a is not type(None)), ann)
                    if ann in (str, int, float, bool):
                        name = fname
                        break
        if name is None:
            break
        used.append(name)
        pairs.append(f"{name} = {_lua_literal(value)}")
    canonical = ", ".join(model.model_fields)
    shown = (
        f"{label}{{{', '.join(pairs)}}}"
        if len(pairs) == len(values)
        else f"{label}{{name = value, ...}}"
    )
    return (
        f"{label}: takes one table of named parameters, not {len(values)} positional "
        f"argument(s); write {shown} (parameters: {canonical})"
    )


def _neutral(annotation: Any) -> Any:
    """A value of ``annotation`` that says nothing: 0, "", [], the first choice, a blank model."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is None or annotation is type(None) or annotation is Any:
        return None
    if origin is typing.Annotated:
        return _neutral(args[0])
    if origin in (typing.Union, types.UnionType):
        return None if type(None) in args else _neutral(args[0])
    if origin is typing.Literal:
        return args[0]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return next(iter(annotation)).value
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {
            name: _neutral(info.annotation)
            for name, info in annotation.model_fields.items()
            if info.is_required()
        }
    for typ, value in ((bool, False), (str, ""), (int, 0), (float, 0.0)):
        if annotation is typ:
            return value
    if annotation in (list, tuple, set) or origin in (list, tuple, set):
        return []
    if annotation is dict or origin is dict:
        return {}
    return None


def _placeholder(model: type[ActionResult]) -> dict[str, Any]:
    """A schema-valid result for a dry run: success, dry_run, and a neutral value per field."""
    out: dict[str, Any] = {"success": True, "dry_run": True}
    for name, info in model.model_fields.items():
        if name in out or not info.is_required():
            continue
        out[name] = _neutral(info.annotation)
    return out


class Dispatcher:
    """The :class:`luabridge.sandbox.Host` of one run.

    - ``integrations``: the bridge's integrations by name
    - ``granted``: ``{integration: [account names]}`` that exist in this run
    - ``defaults``: ``{integration: default account name or None}``
    - ``client_for(integration, account)``: the account's client (made once by the bridge)
    - ``docs``: renders help text and schemas (see ``luabridge.docs``)
    - ``write_guard``: a :data:`WriteGuard` every write must pass before it is sent
    - ``journal``: the run's :class:`luabridge.ledger.journal.Journal` (None: no ledger)
    """

    def __init__(
        self,
        *,
        integrations: Mapping[str, Integration],
        granted: Mapping[str, list[str]],
        defaults: Mapping[str, str | None],
        policy: RunPolicy,
        client_for: Callable[[str, str], Any],
        redactor: Redactor,
        help_text: Callable[[str | None], str],
        schema_of: Callable[[str], dict[str, Any]],
        write_guard: WriteGuard | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.write_guard = write_guard
        self.integrations = integrations
        self.granted = granted
        self.defaults = defaults
        self.policy = policy
        self._t0 = time.monotonic()
        self.client_for = client_for
        self.redactor = redactor
        self.help_text = help_text
        self.schema_of = schema_of
        self.journal = journal
        self.calls: list[CallRecord] = []
        self._count = 0
        self._position = 0  # calls that passed every check: their place in the execution
        self._lock = threading.Lock()
        self._contexts: dict[tuple[str, str], CallContext] = {}
        self.spec: dict[str, Any] = {}
        for name, integ in integrations.items():
            accounts = list(granted.get(name, []))
            default = defaults.get(name)
            self.spec[name] = {
                "actions": integ.action_names,
                "accounts": accounts,
                "default": default if default in accounts else None,
                "summary": (
                    f"<{name} integration: {len(integ.actions)} actions, accounts: "
                    f"{', '.join(accounts) or 'none'}; call app.help('{name}') for the reference>"
                ),
            }

    def restart_clock(self, started: float) -> None:
        """Count the run's deadline from ``started`` (a run that waited for a free worker)."""
        self.policy = replace(self.policy, deadline=started + (self.policy.deadline - self._t0))
        self._t0 = started
        self._contexts.clear()

    # -- errors for unknown names -------------------------------------------------------------

    def explain(self, integration: str, account: str | None, name: str | None) -> str:
        if integration not in self.integrations:
            known = ", ".join(sorted(self.integrations)) or "none"
            return (
                f"unknown integration '{integration}'{suggest(integration, self.integrations)}; "
                f"available: {known}"
            )
        integ = self.integrations[integration]
        accounts = self.spec[integration]["accounts"]
        name = name or ""
        if account is not None:
            return (
                f"{integration}: unknown action '{name}'{suggest(name, integ.action_names)}; "
                f"actions: {', '.join(integ.action_names)}"
            )
        if name in integ.action_names or name == "default":
            if not accounts:
                return (
                    f"{integration}: no account is available to this run; configure one "
                    f"({integ.setup_hint()}) and grant it to the run"
                )
            return f"{integration}: this run has no default account; use a named one: " + ", ".join(
                f"app.integrations.{integration}.{a}" for a in accounts
            )
        hint = suggest(name, [*integ.action_names, *accounts])
        return (
            f"{integration}: unknown action or account '{name}'{hint}; "
            f"accounts in this run: {', '.join(accounts) or 'none'}; "
            f"actions: {', '.join(integ.action_names)}"
        )

    # -- introspection --------------------------------------------------------------------------

    def help(self, topic: str | None) -> Reply:
        try:
            return ("ok", self.help_text(topic), None)
        except LuabridgeError as exc:
            return ("raise", f"app.help: {exc}", "RuntimeError")

    def schema(self, name: str) -> Reply:
        try:
            return ("ok", self.schema_of(name), None)
        except LuabridgeError as exc:
            return ("raise", f"app.schema: {exc}", "RuntimeError")

    def accounts(self, name: str) -> Reply:
        if name not in self.integrations:
            return ("raise", "app.accounts: " + self.explain(name, None, None), "RuntimeError")
        allowed = [e for e in _EFFECT_ORDER if e in self.policy.allow]
        rows = [
            {
                "name": acc,
                "default": acc == self.spec[name]["default"],
                "allowed": allowed,
                "dry_run": self.policy.dry_run,
            }
            for acc in self.spec[name]["accounts"]
        ]
        return ("ok", rows, None)

    # -- calls ----------------------------------------------------------------------------------

    def _record(self, record: CallRecord) -> None:
        with self._lock:
            self.calls.append(record)

    def snapshot(self) -> list[CallRecord]:
        """Copies of the call records as they stand; a call still in progress (the run ended
        while it ran) is shown with outcome ``unknown``."""
        with self._lock:
            out = []
            for record in self.calls:
                if record.outcome == "running":
                    record = replace(
                        record,
                        outcome="unknown",
                        error="the run ended while this call was in progress; its outcome is "
                        "unknown",
                    )
                else:
                    # A copy of the fields, not dataclasses.replace (which goes through
                    # __init__, 5-10 us a record) nor copy.copy (1.5 us): a run's result copies
                    # every record.
                    fresh = object.__new__(CallRecord)
                    fresh.__dict__.update(record.__dict__)
                    record = fresh
                out.append(record)
            return out

    def call(self, integration: str, account: str, action_name: str, params_text: str) -> Reply:
        started = time.monotonic()
        integ = self.integrations.get(integration)
        action = integ.action(action_name) if integ else None
        if integ is None or action is None or account not in self.spec[integration]["accounts"]:
            return ("raise", self.explain(integration, account, action_name), "RuntimeError")
        label = f"{integration}.{action_name}"
        if params_text == "[]":
            raw: Any = {}  # an empty table, the most common parameters (none)
        else:
            try:
                raw = json.loads(params_text)
            except ValueError:
                raw = {}
        # Shaped first, so the call record shows what the handler gets ({} for an object field).
        params = shape_for_schema(raw if isinstance(raw, dict) else {}, action.input)

        def record(outcome: str, **extra: Any) -> None:
            self._record(
                CallRecord(
                    integration=integration,
                    account=account,
                    action=action_name,
                    effect=action.effect,
                    params=self.redactor.data(params),
                    outcome=outcome,
                    duration_ms=round((time.monotonic() - started) * 1000, 3),
                    dry_run=self.policy.dry_run,
                    **extra,
                )
            )

        with self._lock:
            self._count += 1
            over = self._count > self.policy.max_calls
        if over:
            msg = (
                f"call limit reached ({self.policy.max_calls} action calls); "
                "raise limits.calls or make fewer calls per run"
            )
            record("limit", error=msg)
            return ("limit", msg, "CallLimitError")

        if isinstance(raw, list) and raw:
            # A non-empty array: the binding got positional arguments (an empty table is "[]").

            msg = self.redactor.text(_positional_message(label, action.input, raw))
            record("invalid", error=msg)
            return ("raise", msg, "ValidationError")

        if action.effect not in self.policy.allow:
            allowed = ", ".join(e for e in _EFFECT_ORDER if e in self.policy.allow)
            msg = (
                f"{label} is a {action.effect} action and this run allows only: {allowed}; "
                f"allow it with allow={{..., '{action.effect}'}} (CLI: --allow {action.effect})"
                + (
                    "; to plan it without sending, allow it and add dry_run=True (CLI: --dry-run)"
                    if not self.policy.dry_run
                    else ""
                )
            )
            record("refused", error=msg)
            return ("raise", msg, "PermissionError")

        names = accepted_names(action.input)
        for name in params:
            if name not in names:
                known = sorted(set(names.values()))
                msg = (
                    f"{label}: unknown parameter {quote_name(name)}{suggest(name, names)}; "
                    f"parameters: {', '.join(known) or 'none'}"
                )
                record("invalid", error=msg)
                return ("raise", msg, "ValidationError")
        # Imported on a call, not with the module: a run that calls no action needs no pydantic
        # at all (a call imports it anyway, to build the models).
        from pydantic_core import ValidationError as PydanticValidationError

        try:
            # The validator itself: BaseModel.model_validate only adds a Python call around it.
            model = built(action.input).__pydantic_validator__.validate_python(params, strict=True)
        except PydanticValidationError as exc:
            msg = self.redactor.text(_pydantic_message(label, exc, action.input))
            record("invalid", error=msg)
            return ("raise", msg, "ValidationError")
        # Before the handler runs: a model that cannot be built fails the call before anything
        # is sent, and a handler that constructs its result model finds it built.
        built(action.output)

        with self._lock:
            self._position += 1
            position = self._position
        key_param = action.idempotency_param
        # Only a ledger needs the hash, and only it and a keyed action the canonical form: a
        # call without either skips both (a tenth of the bridge's own time per call).
        canonical: dict[str, Any] = {}
        canonical_text = ""
        if self.journal is not None or key_param:
            canonical = model.model_dump(
                mode="json", exclude={key_param} if key_param else None, exclude_none=True
            )
            canonical_text = canonical_json(canonical)
        params_hash = digest(canonical_text) if self.journal is not None else ""
        seq, prior = position, None
        if self.journal is not None:
            try:
                seq, prior = self.journal.place(
                    position, integration, account, action_name, params_hash
                )
            except LuabridgeError as exc:
                failure = self._ledger_failure(label, exc)
                record("failed", error=failure["error"], code=failure["code"])
                return ("ok", failure, None)
        key: str | None = None
        if key_param:
            key = getattr(model, key_param, None) or derive_key(
                self.policy.execution_id, seq, canonical, canonical=canonical_text
            )
            model = model.model_copy(update={key_param: key})

        if self.policy.dry_run and action.effect != "read":
            planned = functools.partial(record, seq=seq, idempotency_key=self._shown(key))
            return self._plan(action, integration, account, model, planned)
        if self.write_guard is not None and action.effect != "read":
            guarded = functools.partial(record, seq=seq, idempotency_key=self._shown(key))
            stopped = self._guard(action, integration, account, params, model, guarded)
            if stopped is not None:
                return stopped
        return self._send(
            action, integration, account, model, params, started, seq, prior, key, params_hash
        )

    def _context(self, integration: str, account: str) -> CallContext:
        """The handlers' context for one account, made once per run (it is immutable): building
        the frozen dataclass took a few microseconds of every call. Raises what ``client_for``
        raises, and then keeps nothing, so the next call tries again."""
        ctx = self._contexts.get((integration, account))
        if ctx is None:
            ctx = CallContext(
                integration=integration,
                account=account,
                client=self.client_for(integration, account),
                deadline=self.policy.deadline,
                execution_id=self.policy.execution_id,
            )
            self._contexts[(integration, account)] = ctx
        return ctx

    def _shown(self, key: str | None) -> str | None:
        """A key as records show it: a script's own key could hold a secret."""
        return None if key is None else self.redactor.text(key)

    def _ledger_failure(self, label: str, exc: LuabridgeError) -> dict[str, Any]:
        """The result of a call not sent because the ledger could not record it."""
        return {
            "success": False,
            "error": self.redactor.text(
                f"{label} was not sent: the run ledger could not record it ({exc})"
            ),
            "code": "luabridge.ledger_unavailable",
            "retryable": True,
        }

    def _send(
        self,
        action: Action,
        integration: str,
        account: str,
        model: BaseModel,
        params: dict[str, Any],
        started: float,
        seq: int,
        prior: CallEntry | None,
        key: str | None,
        params_hash: str,
    ) -> Reply:
        """Run the handler of a call that passed every check, journaling it when there is a
        ledger: ``sending`` before the request leaves, the outcome after."""
        label = f"{integration}.{action.name}"
        write = action.effect != "read"
        record = CallRecord(
            integration=integration,
            account=account,
            action=action.name,
            effect=action.effect,
            params=self.redactor.data(params),
            outcome="running",
            duration_ms=0.0,
            dry_run=self.policy.dry_run,
            seq=seq,
            idempotency_key=self._shown(key),
        )
        # In the list from the start, so a run that ends while it is in progress (a killed
        # worker, the time limit) still reports it.
        self._record(record)

        def close(outcome: str, result: Mapping[str, Any] | None = None, **extra: Any) -> None:
            with self._lock:
                record.outcome = outcome
                record.duration_ms = round((time.monotonic() - started) * 1000, 3)
                if result is not None and result.get("success") is False:
                    record.error = result.get("error")
                    record.code = result.get("code")
                    record.status = result.get("status")
                for name, value in extra.items():
                    setattr(record, name, value)

        journal = self.journal
        if journal is not None and prior is not None and not write:
            if prior.state == _SUCCEEDED:
                journal = None  # a read runs again; its first record stands
        elif journal is not None and prior is not None:
            if prior.state == _SUCCEEDED and isinstance(prior.result, dict):
                replay = {**prior.result, "replayed": True}
                close("ok", replay, replayed=True)
                return ("ok", replay, None)
            if prior.state in (_SENDING, _UNKNOWN) and not key:
                return self._outcome_unknown(label, integration, seq, prior, close)
        if journal is not None:
            try:
                journal.begin(
                    seq,
                    prior,
                    integration=integration,
                    account=account,
                    action=action.name,
                    effect=action.effect,
                    params=record.params,
                    params_hash=params_hash,
                    idempotency_key=record.idempotency_key,
                )
            except LuabridgeError as exc:
                failure = self._ledger_failure(label, exc)
                close("failed", failure)
                return ("ok", failure, None)

        state = _FAILED
        result: dict[str, Any]
        try:
            ctx = self._context(integration, account)
        except LuabridgeError as exc:
            result = {
                "success": False,
                "error": self.redactor.text(str(exc)),
                "code": f"{integration}.config_error",
                "retryable": False,
            }
        else:
            try:
                produced = action.handler(ctx, model)
                result = self._shape(action, produced)
                state = _SUCCEEDED
            except IntegrationError as exc:
                failure = exc.to_result()
                if not str(failure["code"]).startswith(integration + "."):
                    failure["code"] = f"{integration}.{failure['code']}"
                if failure.get("delivered") == "unknown" and write:
                    state = _UNKNOWN
                    if key:
                        failure["idempotency_key"] = key
                result = self.redactor.data(failure)
            except LuabridgeError as exc:
                result = {
                    "success": False,
                    "error": self.redactor.text(str(exc)),
                    "code": f"{integration}.config_error",
                    "retryable": False,
                }
            except Exception as exc:
                result = {
                    "success": False,
                    "error": self.redactor.text(
                        f"internal error in {label}: {type(exc).__name__}: {exc}"
                    ),
                    "code": "luabridge.internal_error",
                    "retryable": False,
                }
                if write:
                    # It failed after the handler started: its request may have gone out.
                    state = _UNKNOWN
                    result["delivered"] = "unknown"
                    if key:
                        result["idempotency_key"] = self._shown(key)
        if journal is not None:
            try:
                # A read, or a send with a key, may be repeated safely by a resume: its
                # outcome goes out with the next call's "sending" (one commit per call).
                journal.finish(seq, state, result, defer=not write or key is not None)
            except LuabridgeError as exc:
                # The call is over and the script gets its result; the ledger keeps
                # "sending", which a resume treats as unknown (and resends by key).
                _log.warning("%s: the run ledger could not record the outcome: %s", label, exc)
        close(_OUTCOME[state], result)
        return ("ok", result, None)

    def _outcome_unknown(
        self,
        label: str,
        integration: str,
        seq: int,
        prior: CallEntry,
        close: Callable[..., None],
    ) -> Reply:
        """A resumed write whose earlier attempt may have been carried out, and that has no
        key to repeat it safely: reported, never sent again."""
        if prior.state == _SENDING and self.journal is not None:
            try:
                self.journal.mark_unknown(seq)
            except LuabridgeError as exc:
                _log.warning("%s: the run ledger could not record the outcome: %s", label, exc)
        failure = {
            "success": False,
            "error": (
                f"{label}: an earlier run of execution {self.policy.execution_id!r} sent this "
                f"call (call {seq}) and its outcome is unknown; it was not sent again because "
                f"{label} has no idempotency key to repeat it safely. Check in {integration} "
                "whether it was carried out before doing it again."
            ),
            "code": f"{integration}.outcome_unknown",
            "retryable": False,
            "delivered": "unknown",
        }
        close("unknown", failure)
        return ("ok", failure, None)

    def _plan(
        self,
        action: Action,
        integration: str,
        account: str,
        model: BaseModel,
        record: Callable[..., None],
    ) -> Reply:
        """A dry run's write: the exact request it would send, made with the account's client
        (a plan may read, for example to resolve an id). A plan that cannot be made fails the
        call with the reason, never a placeholder success with nothing planned."""
        assert action.plan is not None
        label = f"{integration}.{action.name}"
        failure: dict[str, Any] | None = None
        try:
            ctx = self._context(integration, account)
            request = self.redactor.data(dict(action.plan(ctx, model)))
        except IntegrationError as exc:
            failure = exc.to_result()
            if not str(failure["code"]).startswith(integration + "."):
                failure["code"] = f"{integration}.{failure['code']}"
            failure["error"] = f"{label}: could not plan the request: {failure['error']}"
        except LuabridgeError as exc:
            failure = {
                "success": False,
                "error": f"{label}: could not plan the request: {exc}",
                "code": f"{integration}.config_error",
                "retryable": False,
            }
        except Exception as exc:
            failure = {
                "success": False,
                "error": f"{label}: could not plan the request: internal error "
                f"({type(exc).__name__}: {exc})",
                "code": "luabridge.internal_error",
                "retryable": False,
            }
        if failure is not None:
            failure = dict(self.redactor.data({**failure, "dry_run": True}))
            record(
                "failed",
                error=failure["error"],
                code=failure["code"],
                status=failure.get("status"),
            )
            return ("ok", failure, None)
        record("dry_run", request=request)
        return ("ok", self._shape(action, _placeholder(action.output)), None)

    def _guard(
        self,
        action: Action,
        integration: str,
        account: str,
        params: Any,
        model: BaseModel,
        record: Callable[..., None],
    ) -> Reply | None:
        """Put the write, as its plan would show it, to the write guard before it is sent; a
        write whose request cannot be made is shown with ``request`` None (so it differs)."""
        assert self.write_guard is not None and action.plan is not None
        request: dict[str, Any] | None
        try:
            ctx = self._context(integration, account)
            request = self.redactor.data(dict(action.plan(ctx, model)))
        except Exception:
            request = None
        write = {
            "integration": integration,
            "account": account,
            "action": action.name,
            "effect": action.effect,
            "params": self.redactor.data(params),
            "request": request,
        }
        message = self.write_guard(write)
        if message is None:
            return None
        record("stopped", error=message, request=request)
        return ("limit", message, "PlanMismatchError")

    def _shape(self, action: Action, produced: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
        """The handler's answer, validated and shaped by the output model, secrets redacted."""
        if type(produced) is not dict and not isinstance(produced, Mapping):  # a model
            data = produced.model_dump(mode="json", exclude_none=True)
        else:
            data = {"success": True, **produced}
        # The validator and serializer themselves, as model_validate and model_dump call them.
        output = built(action.output)
        model = output.__pydantic_validator__.validate_python(data)
        dumped = output.__pydantic_serializer__.to_python(model, mode="json", exclude_none=True)
        return dict(self.redactor.data(dumped))
