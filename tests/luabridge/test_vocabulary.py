"""One vocabulary: error types and classes, the redaction placeholder, the host operations.

Each ``error.type`` a run or the CLI reports has exactly one exception class and back; both
isolation modes and the worker share one list of host operations; every redaction, in the
bridge or in a client, uses the same placeholder.
"""

from __future__ import annotations

import inspect

import pytest

import luabridge.errors as errors
from luabridge import Bridge, RunResult
from luabridge.bridge import RunError
from luabridge.pool import _serve_host
from luabridge.redact import REDACTED, Redactor
from luabridge.sandbox import _OPS, HOST_METHODS, Host
from luabridge.worker import _ProxyHost

#: The table the docs promise: error.type -> class.
TABLE = {
    "SyntaxError": errors.ScriptSyntaxError,
    "RuntimeError": errors.ScriptRuntimeError,
    "ValidationError": errors.ValidationError,
    "PermissionError": errors.PolicyError,
    "TimeoutError": errors.TimeLimitError,
    "InstructionLimitError": errors.InstructionLimitError,
    "MemoryError": errors.MemoryLimitError,
    "OutputLimitError": errors.OutputLimitError,
    "CallLimitError": errors.CallLimitError,
    "ResultLimitError": errors.ResultLimitError,
    "SourceLimitError": errors.SourceLimitError,
    "QueueTimeoutError": errors.QueueTimeoutError,
    "PlanMismatchError": errors.PlanMismatchError,
    "WorkerCrashError": errors.WorkerCrashError,
    "InternalError": errors.InternalError,
    "UsageError": errors.ConfigError,
}


def test_every_error_type_has_one_class_and_back() -> None:
    assert set(TABLE) == set(errors.ERROR_TYPES)
    for error_type, cls in TABLE.items():
        assert errors.error_class(error_type) is cls
    classes = [c for c in TABLE.values() if c is not errors.ConfigError]
    assert len(set(classes)) == len(classes)
    for cls in classes:
        assert cls.error_type in TABLE and TABLE[cls.error_type] is cls
    assert errors.error_class("NoSuchType") is errors.ScriptError


@pytest.mark.parametrize("error_type", sorted(TABLE))
def test_raise_for_error_raises_the_class_of_the_type(error_type: str) -> None:
    result = RunResult(
        ok=False,
        value=None,
        error=RunError(error_type, "script.lua:3: something", 3),
        output="",
        calls=[],
        execution_id="exec_x",
    )
    with pytest.raises(TABLE[error_type]) as caught:
        result.raise_for_error()
    if isinstance(caught.value, errors.ScriptError):
        assert caught.value.line == 3


def test_raise_for_error_of_a_real_run() -> None:
    with Bridge(integrations=[], isolation="inprocess") as bridge:
        failed = bridge.run("local x = nil + 1")
        with pytest.raises(errors.ScriptRuntimeError, match="arithmetic"):
            failed.raise_for_error()
        bridge.run("return 1").raise_for_error()  # a success raises nothing


def test_one_list_of_host_operations() -> None:
    protocol = {n for n, _ in inspect.getmembers(Host, inspect.isfunction) if not n.startswith("_")}
    assert protocol == set(HOST_METHODS)
    proxy = {
        n for n, _ in inspect.getmembers(_ProxyHost, inspect.isfunction) if not n.startswith("_")
    }
    assert proxy == set(HOST_METHODS)
    assert {op.decode() for op in _OPS} >= set(HOST_METHODS)


def test_the_parent_serves_only_host_operations() -> None:
    class Echo:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the pool reached for {name!r}")

    reply = _serve_host(Echo(), {"method": "close", "args": []})  # type: ignore[arg-type]
    assert reply == ["raise", "unknown host method 'close'", "InternalError"]


def test_one_redaction_placeholder() -> None:
    from integrations.loops.client import redact

    assert Redactor(["s3cret-key"]).text("key s3cret-key") == f"key {REDACTED}"
    assert redact({"k": "key s3cret-key"}, "s3cret-key") == {"k": f"key {REDACTED}"}


def test_one_contact_key_set() -> None:
    from integrations.loops import directory, models

    assert directory._STANDARD_KEYS is models.CONTACT_KEYS
