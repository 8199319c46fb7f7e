"""One sandboxed Lua run in this process: a LuaJIT state with the trusted bootstrap, the script.

A state is created with ``register_eval=False``, ``register_builtins=False``, deny-all
attribute handlers, ``max_memory`` and byte strings (``encoding=None``), and the trusted
bytecode is loaded into it once. It then serves runs one after another (``_State``): every run
gets an environment, library copies, ``app`` and run-state closures built afresh by the
bootstrap's ``prepare``, which also resets the few VM-wide things a script can touch; between
runs the garbage is collected and the heap must shrink back to the fresh state's size, and a
state that hit the memory limit or failed in any unusual way is closed instead of reused (see
docs/threat-model.md, "One state, many runs"). Only two Python objects ever enter a state, both
held in upvalues of the bootstrap's closures where scripts cannot reach them: the session's
``service`` method (every host operation, chosen by name; the current run's host stands behind
it) and its ``tick`` method, the count hook's clock (``time.monotonic``; it also takes away a
host call's memory headroom should the bootstrap's restore not have come). Values cross as JSON
text (Lua → Python) or as tables built by :mod:`luabridge.convert` (Python → Lua).

What this layer cannot bound on its own: a script stuck inside one long C call (a pathological
``string.find``), native crashes and lupa deadlocks. The worker pool (``luabridge.worker``) adds
the process boundary and the hard kill for those.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, Protocol

import lupa.luajit21 as lupa

from luabridge.convert import LuaMarkers, NoRoomError, decode_lua_json, to_lua
from luabridge.errors import LuabridgeError, ValidationError
from luabridge.limits import Limits

__all__ = [
    "HOST_METHODS",
    "Host",
    "Reply",
    "RunOutcome",
    "error_dict",
    "execute",
    "line_of",
    "settle_idle",
    "source_error",
]

#: A host answer to a binding: ``("ok", value, None)``, ``("raise", message, error_type)`` or
#: ``("limit", message, error_type)``.
Reply = tuple[str, Any, str | None]

_MEMORY_HEADROOM = 16 * 1024 * 1024
_MAX_NAME = 200  # bytes of a looked-up name passed to the host
_LINE = re.compile(r"^script\.lua:(\d+):")


class Host(Protocol):
    """The services a run's bindings call; implemented by the bridge (or its proxy in a worker)."""

    spec: dict[str, Any]

    def call(self, integration: str, account: str, action: str, params: str) -> Reply: ...
    def help(self, topic: str | None) -> Reply: ...
    def schema(self, name: str) -> Reply: ...
    def accounts(self, name: str) -> Reply: ...
    def explain(self, integration: str, account: str | None, name: str | None) -> str: ...


@dataclass
class RunOutcome:
    """What a run produced, as plain data (it crosses process boundaries as JSON)."""

    ok: bool
    value: Any = None
    error: dict[str, Any] | None = None
    output: str = ""
    usage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "value": self.value,
            "error": self.error,
            "output": self.output,
            "usage": self.usage,
        }


def line_of(message: str) -> int | None:
    """The script line a Lua error message points at, if any."""
    m = _LINE.match(message)
    return int(m.group(1)) if m else None


def error_dict(error_type: str, message: str) -> dict[str, Any]:
    return {"type": error_type, "message": message, "line": line_of(message)}


def _source_bytes(source: str | bytes) -> bytes | None:
    if isinstance(source, bytes):
        return source
    try:
        return source.encode("utf-8")
    except UnicodeEncodeError:
        return None


def source_error(source: str | bytes, limits: Limits) -> dict[str, Any] | None:
    """Why ``source`` cannot run, as an error dict, or None when it can.

    Checked before a Lua state exists (and, under process isolation, before the source is sent
    to a worker): a script over ``limits.source_bytes`` would otherwise fail as "not enough
    memory" while it compiles, and a NUL byte outside a string as a puzzling "'<eof>' expected".
    """
    raw = _source_bytes(source)
    if raw is None:
        return error_dict("ValidationError", "the script is not valid UTF-8 text")
    if len(raw) > limits.source_bytes:
        msg = (
            f"the script is too large ({len(raw)} bytes; limits.source_bytes is "
            f"{limits.source_bytes}); send less code, or pass large data as the input"
        )
        return error_dict("SourceLimitError", msg)
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        column = nul - (raw.rfind(b"\n", 0, nul) + 1) + 1
        msg = (
            f"script.lua:{line}: the script contains a NUL byte (line {line}, column {column}); "
            "Lua source must be text: inside a string, write the escape \\0 instead"
        )
        return error_dict("SyntaxError", msg)
    return None


#: The trusted Lua chunks of a state: the bootstrap, then the modules it is given as arguments.
_CHUNKS = ("bootstrap", "json", "app")


@cache
def _chunk_source(name: str) -> bytes:
    # A plain file read where the package is a directory: importing importlib.resources (and
    # pathlib, zipfile... with it) was about a sixth of a worker process's start.
    try:
        with open(os.path.join(os.path.dirname(__file__), "lua", f"{name}.lua"), "rb") as fh:
            return fh.read()
    except OSError:
        from importlib import resources

        return resources.files("luabridge").joinpath(f"lua/{name}.lua").read_bytes()


def _bootstrap_source() -> tuple[bytes, ...]:
    """The bootstrap's source and its modules' sources, as ``execute`` takes them."""
    return tuple(_chunk_source(name) for name in _CHUNKS)


@lru_cache(maxsize=1)
def _bootstrap_chunk() -> tuple[bytes, ...]:
    """The bootstrap and its modules as LuaJIT bytecode, compiled once per process.

    Parsing the bootstrap took most of a trivial run (about 0.9 ms of 1.2 ms); loading the
    bytecode into each fresh state takes a tenth of that. The chunk name stays ``<python>``, so
    messages that point into the bootstrap read as before.
    """
    scratch = lupa.LuaRuntime(encoding=None, register_eval=False, register_builtins=False)
    compile_chunk = scratch.eval(
        'function(s) return string.dump(assert(loadstring(s, "<python>"))) end'
    )
    return tuple(bytes(compile_chunk(source)) for source in _bootstrap_source())


def _deny_getattr(obj: object, name: object) -> None:
    raise AttributeError("Python attributes are not accessible from Lua")


def _deny_setattr(obj: object, name: object, value: object) -> None:
    raise AttributeError("Python attributes are not accessible from Lua")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _name(value: Any) -> str:
    """A name a script looked up (action, account, help topic), cut to ``_MAX_NAME`` bytes.

    No real name is that long; the cut keeps a hostile 50 MB name from reaching the host's
    "did you mean" search, which runs where neither the hook nor the worker kill reaches it.
    """
    raw = value if isinstance(value, bytes) else _text(value).encode()
    if len(raw) > _MAX_NAME:
        raw = raw[:_MAX_NAME] + b"..."
    return _text(raw)


class _Unused:
    """The host of a state between runs: every operation is refused (none can come, since no
    script runs then; this keeps the previous run's host out of reach all the same)."""

    spec: dict[str, Any] = {}  # noqa: RUF012 - never mutated

    def _refuse(self, *args: Any) -> Reply:
        return ("limit", "no run is in progress", "InternalError")

    call = help = schema = accounts = _refuse

    def explain(self, integration: str, account: str | None, name: str | None) -> str:
        return "unknown name"


_UNUSED = _Unused()


class _Session:
    """The Python side of one Lua state: host callbacks with memory headroom and conversion.

    The state outlives one run (see ``_State``): ``host`` and ``limits`` are the current run's,
    set by ``_State.start`` and put back to ``_UNUSED`` by ``_State.finish``.
    """

    def __init__(self, host: Host, limits: Limits) -> None:
        self.host = host
        self.limits = limits
        self.lua = lupa.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            encoding=None,
            unpack_returned_tuples=True,
            max_memory=limits.memory + _MEMORY_HEADROOM,
            attribute_handlers=(_deny_getattr, _deny_setattr),
        )
        self.markers: LuaMarkers | None = None
        # Whether max_memory still has a host call's headroom (see tick): set while Python
        # builds a reply, and until the script's next instructions run after it.
        self.raised = False
        self.in_call = False
        # The state gets the one bound method `service` for every host operation: pushing a
        # Python object into a fresh state costs about 10 us, so one callable instead of ten
        # saves a fifth of a trivial run.

    def service(self, op: bytes, *args: Any) -> Any:
        """Every host operation of the bootstrap, chosen by name."""
        name = _OPS.get(op)
        if name is None:
            return (b"limit", b"unknown host operation", b"InternalError")
        return getattr(self, name)(*args)

    # Each callback returns (status, payload, error type) as byte strings or Lua values.
    def _reply(self, reply: Reply) -> tuple[Any, ...]:
        status, payload, etype = reply
        if status == "ok":
            assert self.markers is not None
            try:
                return (b"ok", to_lua(payload, self.markers, path="result"))
            except ValidationError as exc:
                return (b"raise", str(exc).encode(), b"ValidationError")
        return (status.encode(), _text(payload).encode(), (etype or "RuntimeError").encode())

    def _guarded(self, fn: Any, *args: Any) -> tuple[Any, ...]:
        return self._protected(lambda: self._reply(fn(*args)))

    def _protected(self, build: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        # The heap may be nearly full when a script calls in: answer with a memory limit rather
        # than let lupa fail while it pushes the reply, and give the reply some headroom. The
        # converter checks that a reply fits in that headroom before it pushes anything
        # (NoRoomError). The headroom stays while lupa pushes the returned values (after this
        # method returns); the bootstrap's restore takes it away, and `tick` does if that
        # restore never came.
        self.in_call = True
        try:
            if self.lua.get_memory_used() > self.limits.memory - 64 * 1024:
                return (
                    b"limit",
                    b"memory limit reached before a call into the host (an action, app.help, ...)",
                    b"MemoryError",
                )
            self.raised = True
            self.lua.set_max_memory(self.limits.memory + _MEMORY_HEADROOM)
            return build()
        except NoRoomError as exc:
            return (b"limit", str(exc).encode(), b"MemoryError")
        except lupa.LuaMemoryError:
            return (b"limit", b"memory limit reached while building a reply", b"MemoryError")
        except LuabridgeError as exc:
            return (b"raise", str(exc).encode(), b"RuntimeError")
        except BaseException as exc:
            msg = f"internal error in the bridge ({type(exc).__name__}); the run was stopped"
            return (b"limit", msg.encode(), b"InternalError")
        finally:
            self.in_call = False

    def spec(self, name: bytes) -> Any:
        """What the bootstrap needs to build ``app.integrations.<name>``, or nil if no such
        integration is in this run; asked for on first use, so a run that never touches an
        integration does not pay for building its tables."""

        def build() -> tuple[Any, ...]:
            entry = self.host.spec.get(_name(name))
            if entry is None:
                return (b"ok", None)
            table = self.lua.table_from
            fields = {
                b"actions": table([a.encode() for a in entry["actions"]]),
                b"accounts": table([a.encode() for a in entry["accounts"]]),
                b"summary": entry["summary"].encode(),
            }
            if entry["default"] is not None:
                fields[b"default"] = entry["default"].encode()
            return (b"ok", table(fields))

        return self._protected(build)

    def integrations(self) -> Any:
        """The names of the integrations in this run, for ``pairs(app.integrations)``."""
        return self._protected(
            lambda: (b"ok", self.lua.table_from([n.encode() for n in sorted(self.host.spec)]))
        )

    def restore(self) -> None:
        self.raised = False
        self.lua.set_max_memory(self.limits.memory)

    def tick(self) -> float:
        """The count hook's clock; also takes a host call's memory headroom away if the
        bootstrap's restore after it did not run (it always should: see stack_ok in
        bootstrap.lua). The hook runs script instructions only after lupa has pushed a reply,
        and never while Python builds one (``in_call``)."""
        if self.raised and not self.in_call and self.lua is not None:
            self.raised = False
            self.lua.set_max_memory(self.limits.memory)
        return time.monotonic()

    def call(self, integration: bytes, account: bytes, action: bytes, params: bytes) -> Any:
        return self._guarded(
            self.host.call, _text(integration), _text(account), _text(action), _text(params)
        )

    def help(self, topic: bytes | None) -> Any:
        return self._guarded(self.host.help, None if topic is None else _name(topic))

    def schema(self, name: bytes) -> Any:
        return self._guarded(self.host.schema, _name(name))

    def accounts(self, name: bytes) -> Any:
        return self._guarded(self.host.accounts, _name(name))

    def json_decode(self, text: bytes) -> Any:
        def decode(raw: bytes) -> Reply:
            try:
                return ("ok", decode_lua_json(raw), None)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                return ("raise", f"app.json.decode: not valid JSON: {exc}", "ValidationError")

        return self._guarded(decode, text)

    def explain(self, integration: bytes, account: bytes | None, name: bytes | None) -> bytes:
        try:
            msg = self.host.explain(
                _name(integration),
                None if account is None else _name(account),
                None if name is None else _name(name),
            )
        except BaseException:
            msg = "unknown name"
        return msg.encode()

    def set_markers(self, null: Any, new_object: Any, new_array: Any, decode: Any) -> None:
        self.markers = LuaMarkers(
            null, new_object, new_array, self.lua.table_from, decode, self._room
        )

    def _room(self, cap: int | None = None) -> int:
        """Bytes the state may still allocate, up to ``cap`` (by default its memory limit)."""
        top = self.lua.get_max_memory() if cap is None else cap
        return int(top - self.lua.get_memory_used())


#: Runs one state serves before it is closed and replaced by a fresh one.
_STATE_RUNS = 200
#: Heap growth (KiB) over a fresh state's, after a full collection, that a state may show and
#: still serve another run; more means something outlived its run, and the state is closed.
_SETTLE_SLACK_KB = 128.0
#: Idle states kept per process (more are closed when their run ends).
_IDLE_STATES = 4
#: Heap size (bytes) over a fresh state's at the end of a run past which the state is closed
#: rather than collected. After a large run, a full collection cost more than closing the state
#: (29-35 ms against about 10 ms for the 10,000-contact value of benchmark 4), and the state
#: was then closed anyway, since its string table had not shrunk back.
_BLOATED_BYTES = 4 * 1024 * 1024


class _State:
    """A Lua state with the trusted code loaded, which serves runs one after another.

    Creating a sandboxed state and loading the trusted bytecode into it cost about 130 us, more
    than half of a trivial run, so a state is kept for the next run instead of closed. What a
    script can reach is built afresh for every run by the bootstrap's ``prepare`` (environment,
    library copies, ``app``, every closure holding run state); ``prepare`` also resets what is
    VM-wide (the string metatable's ``__index``, the ``math.random`` state, the JIT, the hook).
    Between runs the garbage is collected (``settle``) and the heap must be back to within
    ``_SETTLE_SLACK_KB`` of the fresh state's size. A state that ended a run in any unusual way
    (the memory limit, an error from lupa, an internal error) is closed, never reused; see
    docs/threat-model.md ("One state, many runs").
    """

    def __init__(self) -> None:
        self.session = _Session(_UNUSED, Limits())
        lua = self.session.lua
        self.prepare, self.settle_fn = lua.execute(
            *_bootstrap_chunk(), self.session.service, self.session.tick
        )
        self.runs = 0
        self.dirty = False
        self.bloated = False
        self.floor_kb = float(self.settle_fn())

    def start(self, host: Host, limits: Limits, deadline: float) -> Any:
        """Give the state to one run: its host, its limits, a fresh environment. Returns the
        runner."""
        session = self.session
        session.host = host
        session.limits = limits
        session.raised = session.in_call = False
        session.lua.set_max_memory(limits.memory)
        self.runs += 1
        self.dirty = True
        runner, null, new_object, new_array, decode = self.prepare(
            limits.instructions,
            deadline,
            limits.timeout,
            limits.output_bytes,
            limits.result_bytes,
            limits.argument_bytes,
            64,
            limits.memory,
        )
        session.set_markers(null, new_object, new_array, decode)
        return runner

    def finish(self) -> None:
        """Take the run's host and values away from the state (it may be settled later)."""
        session = self.session
        session.host = _UNUSED
        session.markers = None
        if session.lua is not None:
            used = session.lua.get_memory_used()
            self.bloated = used > self.floor_kb * 1024 + _BLOATED_BYTES
            session.lua.set_max_memory(Limits.memory + _MEMORY_HEADROOM)

    def settle(self) -> bool:
        """Collect the last run's garbage; whether the state may serve another run (not after
        a run that left a large heap: see ``_BLOATED_BYTES``)."""
        if not self.dirty:
            return True
        if self.bloated:
            return False
        try:
            size = float(self.settle_fn(self.floor_kb + _SETTLE_SLACK_KB))
        except Exception:
            return False
        self.dirty = False
        return self.runs < _STATE_RUNS and size <= self.floor_kb + _SETTLE_SLACK_KB

    def close(self) -> None:
        # The state holds the session's `service` and the session holds the state: break the
        # cycle so the state is freed now rather than by the cyclic collector (which cost
        # about 60 us per run).
        self.prepare = self.settle_fn = None
        self.session.lua = None
        self.session.markers = None


_idle: list[_State] = []
_idle_lock = threading.Lock()


def _forget_states() -> None:
    # A forked child must not share states (or a held lock) with its parent.
    global _idle_lock
    _idle.clear()
    _idle_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_states)


def _take_state() -> _State:
    """A settled idle state, or a new one."""
    while True:
        with _idle_lock:
            state = _idle.pop() if _idle else None
        if state is None:
            return _State()
        if state.settle():
            return state
        state.close()


def _give_back(state: _State, reusable: bool) -> None:
    state.finish()
    if reusable:
        with _idle_lock:
            if len(_idle) < _IDLE_STATES:
                _idle.append(state)
                return
    state.close()


def settle_idle(*, prewarm: bool = False) -> None:
    """Collect the garbage of the idle states now, off the next run's path (a worker calls this
    once it has sent a run's outcome); ``prewarm`` also makes a state if none is idle."""
    with _idle_lock:
        states = list(_idle)
        _idle.clear()
    kept = []
    for state in states:
        if state.settle():
            kept.append(state)
        else:
            state.close()
    if prewarm and not kept:
        kept.append(_State())
    with _idle_lock:
        _idle.extend(kept)


#: The methods of a :class:`Host`: the operations that cross to the host (and, under process
#: isolation, from the worker to the parent). ``luabridge.worker`` forwards these and
#: ``luabridge.pool`` serves these, and no others.
HOST_METHODS = ("call", "help", "schema", "accounts", "explain")

#: The operations the bootstrap may ask ``_Session.service`` for: the host's, and those the
#: session answers itself.
_OPS = {
    name.encode(): name
    for name in (*HOST_METHODS, "restore", "json_decode", "spec", "integrations")
}


def execute(
    source: str | bytes, input: Any, *, host: Host, limits: Limits, started: float | None = None
) -> RunOutcome:
    """Run one script in a Lua state of this process (with a fresh environment) and return its
    outcome.

    Never raises for anything the script does; a bug in the bridge becomes an ``InternalError``.
    """
    t0 = time.monotonic() if started is None else started
    deadline = t0 + limits.timeout
    usage: dict[str, Any] = {}
    state: _State | None = None
    reusable = False
    refused = source_error(source, limits)
    if refused is not None:
        usage["wall_ms"] = round((time.monotonic() - t0) * 1000, 3)
        return RunOutcome(False, error=refused, usage=usage)
    try:
        state = _take_state()
        session = state.session
        runner = state.start(host, limits, deadline)
        assert session.markers is not None
        src = source.encode("utf-8") if isinstance(source, str) else source
        # The input and the source are pushed into the state outside any protected call, where
        # a full heap aborts the process: the converter checks that the input fits within the
        # run's memory limit before it pushes anything, lupa pushes with the headroom on, and
        # the source must fit in what is left before the limit is put back.
        session.lua.set_max_memory(limits.memory + _MEMORY_HEADROOM)
        try:
            lua_input = to_lua(
                input, session.markers, path="input", cap=limits.memory - len(src) - 65536
            )
        except ValidationError as exc:
            reusable = True
            return RunOutcome(False, error=error_dict("ValidationError", str(exc)))
        except NoRoomError as exc:
            return RunOutcome(False, error=error_dict("MemoryError", str(exc)))
        if session.lua.get_memory_used() + len(src) + 65536 > limits.memory:
            msg = (
                f"memory limit reached ({limits.memory} bytes) by the script's source and input "
                "alone; raise limits.memory or send less"
            )
            return RunOutcome(False, error=error_dict("MemoryError", msg))
        session.lua.set_max_memory(limits.memory)
        status, a, b, output, instructions, peak_memory, output_bytes = runner(src, lua_input)
        # The script is done, but its heap may be full: anything that makes lupa allocate from
        # here on (freeing the runner's values, closing the state) happens outside a protected
        # call, where a failure aborts the process; give the heap its headroom back first.
        session.lua.set_max_memory(limits.memory + _MEMORY_HEADROOM)
        usage = {
            "instructions": instructions,
            "peak_memory": peak_memory,
            "output_bytes": output_bytes,
        }
        # The runner returned: every limit trip and script error is behind it. A run that hit
        # the memory limit (the heap may have failed mid-way through trusted code) or an
        # internal error does not give its state to another run.
        reusable = status == b"ok" or a not in (b"MemoryError", b"InternalError")
        out_text = _text(output)
        if status == b"ok":
            try:
                value = decode_lua_json(a)
            except (ValueError, UnicodeDecodeError) as exc:
                err = error_dict("ValidationError", f"the result could not be decoded: {exc}")
                return RunOutcome(False, error=err, output=out_text, usage=usage)
            return RunOutcome(True, value=value, output=out_text, usage=usage)
        return RunOutcome(False, error=error_dict(_text(a), _text(b)), output=out_text, usage=usage)
    except lupa.LuaMemoryError:
        msg = f"memory limit reached ({limits.memory} bytes); use less memory per run"
        return RunOutcome(False, error=error_dict("MemoryError", msg), usage=usage)
    except lupa.LuaError as exc:
        return RunOutcome(
            False, error=error_dict("RuntimeError", _text(exc.args[0] if exc.args else exc))
        )
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        msg = f"internal error: {type(exc).__name__}: {exc}"
        return RunOutcome(False, error=error_dict("InternalError", msg), usage=usage)
    finally:
        usage["wall_ms"] = round((time.monotonic() - t0) * 1000, 3)
        if state is not None:
            _give_back(state, reusable)
