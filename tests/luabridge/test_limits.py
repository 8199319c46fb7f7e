"""Limits: the parameter-size limit, and bridge defaults combined with per-run overrides.

The other limits each have a tripping test in ``test_sandbox.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import make_bridge

from luabridge import DEFAULT_LIMITS, Bridge, ConfigError, Limits

BIG_TITLE = "local r = app.integrations.notes.create_note({{title = string.rep('x', {n})}})"


def test_limit_argument_bytes_trips(bridge: Bridge) -> None:
    result = bridge.run(
        "local x\n" + BIG_TITLE.format(n=2000), allow={"write"}, limits={"argument_bytes": 1000}
    )
    assert result.error is not None
    assert (result.error.type, result.error.line) == ("ValidationError", 2)
    assert (
        "notes.create_note: params is larger than the limit of 1000 bytes" in result.error.message
    )
    assert result.calls == []
    assert bridge._client("notes", "default").notes == {}  # type: ignore[attr-defined]
    after = bridge.run("return 'PROBE-OK'")
    assert after.ok and after.value == "PROBE-OK"


def test_limit_argument_bytes_under_limit_passes(bridge: Bridge) -> None:
    src = BIG_TITLE.format(n=90) + " return r.success"
    result = bridge.run(src, allow={"write"}, limits={"argument_bytes": 1000})
    assert result.ok and result.value is True


def test_limit_argument_bytes_catchable(bridge: Bridge) -> None:
    """An oversized call is a script mistake, so the script may catch it and go on."""
    src = """
    local ok, e = pcall(app.integrations.notes.list_notes, {tag = string.rep('t', 5000)})
    return {ok, e, app.integrations.notes.list_notes().success}
    """
    result = bridge.run(src, limits={"argument_bytes": 1000})
    assert result.ok, result.error
    ok, message, after = result.value
    assert ok is False and "larger than the limit of 1000 bytes" in message and after is True


def test_limit_argument_bytes_is_per_call(bridge: Bridge) -> None:
    src = "for i = 1, 5 do app.integrations.notes.list_notes({tag = string.rep('t', 600)}) end"
    result = bridge.run(src, limits={"argument_bytes": 1000})
    assert result.ok, result.error
    assert len(result.calls) == 5


@pytest.fixture
def tight_bridge() -> Iterator[Bridge]:
    """A bridge whose own defaults allow two calls and 50 bytes of output."""
    b = make_bridge(limits={"calls": 2, "output_bytes": 50})
    yield b
    b.close()


CALLS = "for i = 1, {n} do app.integrations.notes.list_notes() end return 'done'"


def test_limits_bridge_defaults_apply(tight_bridge: Bridge) -> None:
    assert tight_bridge.limits == Limits(calls=2, output_bytes=50)
    assert tight_bridge.run(CALLS.format(n=2)).ok
    result = tight_bridge.run(CALLS.format(n=3))
    assert result.error is not None and result.error.type == "CallLimitError"


def test_limits_run_override_combines_with_bridge_defaults(tight_bridge: Bridge) -> None:
    """A per-run override changes only the limits it names; the bridge's others still hold."""
    more_calls = {"calls": 4}
    assert tight_bridge.run(CALLS.format(n=4), limits=more_calls).ok
    over = tight_bridge.run(CALLS.format(n=5), limits=more_calls)
    assert over.error is not None and over.error.type == "CallLimitError"
    chatty = tight_bridge.run("print(string.rep('x', 60))", limits=more_calls)
    assert chatty.error is not None and chatty.error.type == "OutputLimitError"
    # Untouched by either: the defaults.
    assert tight_bridge.limits.merged(more_calls).timeout == DEFAULT_LIMITS.timeout


def test_limits_run_override_none_values_ignored(tight_bridge: Bridge) -> None:
    result = tight_bridge.run(CALLS.format(n=3), limits={"calls": None})
    assert result.error is not None and result.error.type == "CallLimitError"


def test_limits_run_override_object_replaces_all(tight_bridge: Bridge) -> None:
    result = tight_bridge.run("print(string.rep('x', 60))", limits=Limits())
    assert result.ok and len(result.output) == 61


def test_limits_overrides_do_not_stick(tight_bridge: Bridge) -> None:
    tight_bridge.run(CALLS.format(n=4), limits={"calls": 4})
    result = tight_bridge.run(CALLS.format(n=3))
    assert result.error is not None and result.error.type == "CallLimitError"


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"calls": 0}, "limits.calls must be greater than 0, got 0"),
        ({"timeout": -1}, "limits.timeout must be greater than 0"),
        ({"calls": True}, "limits.calls must be a number, got True"),
        ({"memory": "64M"}, "limits.memory must be a number"),
        ({"memory": 1000}, "limits.memory must be at least 1 MiB"),
        ({"timout": 1}, "unknown limit(s) timout; known: argument_bytes, calls"),
    ],
)
def test_limits_bad_values_are_config_errors(limits: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_bridge(limits=limits)
    assert fragment in str(info.value)
    with make_bridge() as b, pytest.raises(ConfigError) as info:
        b.run("return 1", limits=limits)
    assert fragment in str(info.value)
