"""Action metadata: the one place an integration declares what scripts can call.

An integration pack builds one :class:`Integration` holding :class:`Action` objects. From them the
runtime derives argument validation, the Lua bindings, policy checks, dry-run plans, the Markdown
reference, JSON schemas, LuaLS stubs and the CLI listing. A pack imports only this module, the
errors module and ``luabridge.accounts.AccountSettings``; it never reaches into runtime internals.

An action may name its models with :func:`model_ref` instead of holding them: the module that
defines them is then imported on the first use of ``action.input`` or ``action.output``, so a
process that runs scripts calling none of a pack's actions never builds its pydantic models.
This module imports no pydantic itself; :class:`ActionInput` and :class:`ActionResult` (defined
in ``luabridge.models``) are loaded on first use too.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, get_args

from luabridge.accounts import AccountSettings
from luabridge.effects import EFFECTS, Effect

if TYPE_CHECKING:
    from pydantic import BaseModel

    from luabridge.models import ActionInput, ActionResult

__all__ = [
    "EFFECTS",
    "Action",
    "ActionInput",
    "ActionResult",
    "CallContext",
    "Effect",
    "Emulator",
    "EmulatorSession",
    "Example",
    "Integration",
    "SupportsClose",
    "built",
    "model_ref",
]


_M = TypeVar("_M", bound="type[BaseModel]")


def __getattr__(name: str) -> Any:
    # ActionInput and ActionResult, on first use (PEP 562): importing them is importing
    # pydantic's model machinery.
    if name in ("ActionInput", "ActionResult"):
        value = getattr(importlib.import_module("luabridge.models"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Serializes the first build of every deferred model in the process (see :func:`built`);
#: reentrant, in case a model's build hooks build another model through here.
_BUILD_LOCK = threading.RLock()


def built(model: _M) -> _M:
    """``model``, with its pydantic validator and serializer built (once per process).

    Action models are declared with ``defer_build=True``: building the core schemas of every
    model of an integration took about 0.12 s of each process's start, spent even by a script
    that never calls the integration. Pydantic would build a model on its first use by itself,
    but that build is not safe when several threads make the first use at once (another thread
    can validate with the base class's validator meanwhile), so every user of an action's models
    in the runtime goes through here, and the builds are serialized by one lock.
    """
    if not model.__pydantic_complete__:
        with _BUILD_LOCK:
            if not model.__pydantic_complete__:
                model.model_rebuild(raise_errors=True)
                # The models nested in its fields (a result's rows) stay deferred after their
                # parent is built; build them too, so a handler constructing one is safe.
                for nested in _nested_models(model):
                    built(nested)
    return model


def _nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    from pydantic import BaseModel

    found: list[type[BaseModel]] = []
    pending = [info.annotation for info in model.model_fields.values()]
    while pending:
        tp = pending.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp is not model and tp not in found:
                found.append(tp)
        else:
            pending.extend(get_args(tp))
    return found


@dataclass(frozen=True)
class Example:
    """One Lua example for the docs: ``title`` becomes a ``--`` comment above ``code``.

    Every example runs in the test suite against the emulator, so write it to succeed there.
    """

    code: str
    title: str = ""


class SupportsClose(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class CallContext:
    """What a handler gets besides its validated parameters.

    - ``account``: the account name the script used (``default`` for the bare namespace)
    - ``client``: the account's client, made once per account by ``Integration.open_client``
    - ``deadline``: ``time.monotonic()`` value after which the run is over; retries stop there
    - ``execution_id``: the run's id, for logs and idempotency keys
    """

    integration: str
    account: str
    client: Any
    deadline: float
    execution_id: str

    def remaining(self) -> float:
        """Seconds left before the run's deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())


Handler = Callable[[CallContext, Any], "Mapping[str, Any] | BaseModel"]
Planner = Callable[[CallContext, Any], Mapping[str, Any]]


@dataclass(frozen=True)
class Action:
    """One callable action, declared once.

    - ``name``: the Lua name, snake_case ``verb_noun``
    - ``summary``: one line for listings; ``description`` (optional) is the docs paragraph
    - ``input`` / ``output``: pydantic models (``ActionInput`` / ``ActionResult`` subclasses),
      or :func:`model_ref` references to them, imported on first use
    - ``effect``: ``read``, ``write`` or ``destructive``
    - ``handler(ctx, params)``: does the work and returns the output fields; raises an
      ``IntegrationError`` for remote failures (the runtime returns them as results)
    - ``plan(ctx, params)``: the exact request the call would send; used by dry runs and
      recorded in the call log. Required for write and destructive actions.
    - ``endpoint``: the remote endpoint it uses, for the docs (e.g. ``POST /contacts/create``)
    - ``examples``: Lua examples (at least one)
    - ``idempotency_param``: the input field that carries the request's idempotency key, for an
      action whose service deduplicates by key (None: it has none). When the script leaves it
      out, the runtime fills it with a key derived from the execution id, the call's sequence
      number and its other parameters, so every run of an execution sends the same logical
      request with the same key; a key the script gives wins
    """

    name: str
    summary: str
    input: type[ActionInput]
    output: type[ActionResult]
    effect: Effect
    handler: Handler
    examples: tuple[Example, ...]
    description: str = ""
    plan: Planner | None = None
    endpoint: str = ""
    idempotency_param: str | None = None

    def __post_init__(self) -> None:
        if self.effect not in EFFECTS:
            raise ValueError(f"action {self.name!r}: unknown effect {self.effect!r}")
        if self.effect != "read" and self.plan is None:
            raise ValueError(f"action {self.name!r} is a {self.effect} action and needs a plan")
        if not self.examples:
            raise ValueError(f"action {self.name!r} needs at least one example")
        # A model given by reference leaves the instance: the first read of the attribute
        # then goes to __getattr__, which imports it (and a later read finds it at once).
        for slot in ("input", "output"):
            if isinstance(self.__dict__[slot], _ModelRef):
                self.__dict__[f"_{slot}_ref"] = self.__dict__.pop(slot)
        if "input" in self.__dict__:
            self._check_input(self.input)

    def __getattr__(self, name: str) -> Any:
        ref = self.__dict__.get(f"_{name}_ref") if name in ("input", "output") else None
        if ref is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        model = ref.load(self.name, name)
        if name == "input":
            self._check_input(model)
        self.__dict__[name] = model
        return model

    def _check_input(self, model: type[ActionInput]) -> None:
        param = self.idempotency_param
        if param is not None and param not in model.model_fields:
            raise ValueError(
                f"action {self.name!r}: idempotency_param {param!r} is not a field of "
                f"{model.__name__}"
            )


@dataclass(frozen=True)
class _ModelRef:
    """A model named by ``module:Name`` (see :func:`model_ref`)."""

    path: str

    def load(self, action: str, slot: str) -> Any:
        from pydantic import BaseModel

        module_name, _, attr = self.path.partition(":")
        try:
            model = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"action {action!r}: its {slot} model {self.path!r} cannot be imported: {exc}"
            ) from exc
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ValueError(
                f"action {action!r}: its {slot} model {self.path!r} is not a pydantic model "
                f"(got {model!r})"
            )
        return model


def model_ref(path: str) -> Any:
    """An action's ``input`` or ``output`` model by name, ``"package.module:ClassName"``.

    The module is imported when the action's model is first used (a call, its docs or its
    schema), not when the action is declared: a pack whose actions all name their models this
    way costs a script that never calls it no pydantic model at all. A name that does not
    resolve to a pydantic model raises ``ValueError`` at that first use.
    """
    module_name, colon, attr = path.partition(":")
    if not (module_name and colon and attr):
        raise ValueError(f"a model reference is 'package.module:ClassName', got {path!r}")
    return _ModelRef(path)


class EmulatorSession(Protocol):
    """A running local emulator of a service, started by :attr:`Emulator.start`.

    - ``base_url``: where every emulated account points
    - ``keys``: ``{account: api key}``, one separate team (tenant) per account
    - ``open_client(settings)``: the client for an emulated account (for example one that
      keeps its local state in the session's scratch folder, never in the user's)
    - ``stop()``: shut the emulator down
    """

    @property
    def base_url(self) -> str: ...

    @property
    def keys(self) -> Mapping[str, str]: ...

    def open_client(self, settings: AccountSettings) -> SupportsClose: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Emulator:
    """How ``--emulator`` runs an integration against a local stand-in of its service.

    - ``accounts``: the accounts an emulated run gets when no config file names any
    - ``start(accounts, scratch)``: start a seeded emulator with one team per account name,
      keeping any local state under the folder ``scratch``; returns an
      :class:`EmulatorSession`; raises ``luabridge.errors.ConfigError`` when it cannot start
    - ``serve(host, port, keys, rate_limit, seed)``: serve it in the foreground until
      interrupted (``luabridge emulator``); the first lines it prints are the base URL and the
      keys
    """

    accounts: tuple[str, ...]
    start: Callable[[Sequence[str], Path], EmulatorSession]
    serve: Callable[[str, int, Sequence[str], int, bool], None] | None = None


@dataclass(frozen=True)
class Integration:
    """An integration pack: its actions and everything about its service the runtime needs.

    The runtime, the CLI and the servers name no service: whatever is specific to one is
    declared here.

    - ``name``: the namespace under ``app.integrations`` (``loops``), and its entry-point name
    - ``title``: the human name used in the docs title (``Loops``)
    - ``env_prefix``: accounts come from ``<PREFIX>_API_KEY`` (``default``),
      ``<PREFIX>_API_KEY_<NAME>`` and ``<PREFIX>_BASE_URL``
    - ``open_client(settings)``: a client for one account; the bridge keeps one per account
      and closes it with the bridge
    - ``default_base_url``: where the service's API lives
    - ``needs_key``: whether an account needs an API key (a keyless service gets a ``default``
      account without one, and no hint ever asks for ``<PREFIX>_API_KEY``)
    - ``emulator``: how ``--emulator`` runs it locally (None: it has no emulator)
    - ``webhooks(account, settings)``: an ASGI app receiving the service's webhooks for one
      account, mounted by ``luabridge serve`` at ``/webhooks/<name>/<account>`` (None: none)
    - ``commands``: extra ``click`` commands, offered as ``luabridge <name> <command>``
    - ``example_accounts``: account names the docs use in multi-account examples
    - ``docs_notes``: extra Markdown placed before the multi-account section
    """

    name: str
    title: str
    actions: tuple[Action, ...]
    open_client: Callable[[AccountSettings], SupportsClose]
    env_prefix: str
    default_base_url: str
    docs_notes: str = ""
    needs_key: bool = True
    emulator: Emulator | None = None
    webhooks: Callable[[str, AccountSettings], Any] | None = None
    commands: tuple[Any, ...] = ()
    example_accounts: tuple[str, ...] = ()
    _index: dict[str, Action] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for action in self.actions:
            if action.name in self._index:
                raise ValueError(f"integration {self.name!r}: duplicate action {action.name!r}")
            self._index[action.name] = action

    def action(self, name: str) -> Action | None:
        """The action called ``name``, or None."""
        return self._index.get(name)

    @property
    def action_names(self) -> list[str]:
        return [a.name for a in self.actions]

    def key_variable(self, account: str) -> str:
        """The environment variable that holds ``account``'s key (``LOOPS_API_KEY_MARKETING``)."""
        suffix = "" if account == "default" else f"_{account.upper()}"
        return f"{self.env_prefix}_API_KEY{suffix}"

    def setup_hint(self) -> str:
        """How to give this integration an account, for messages (``set LOOPS_API_KEY ...``)."""
        if not self.needs_key:
            return f"name one in luabridge.toml under [{self.name}.accounts.<name>]"
        hint = f"set {self.key_variable('default')}"
        if self.emulator is not None:
            hint += " or use --emulator"
        return hint
