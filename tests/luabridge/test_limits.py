"""Limits: the parameter-size limit, and bridge defaults combined with per-run overrides.

The other limits each have a tripping test in ``test_sandbox.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


TIME = "must be a number of seconds over 0 and at most 86400"


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"calls": 0}, "limits.calls must be a whole number from 1 to 100000, got 0"),
        ({"calls": 1.5}, "limits.calls must be a whole number from 1 to 100000, got 1.5"),
        ({"calls": True}, "limits.calls must be a whole number from 1 to 100000, got True"),
        ({"calls": 10**6}, "limits.calls must be a whole number from 1 to 100000, got 1000000"),
        ({"timeout": -1}, f"limits.timeout {TIME}, got -1"),
        ({"timeout": 1e10}, f"limits.timeout {TIME}, got 10000000000.0"),
        ({"timeout": float("inf")}, f"limits.timeout {TIME}, got inf"),
        ({"timeout": float("-inf")}, f"limits.timeout {TIME}, got -inf"),
        ({"timeout": float("nan")}, f"limits.timeout {TIME}, got nan"),
        ({"timeout": "5"}, f"limits.timeout {TIME}, got '5'"),
        ({"queue_timeout": 0}, f"limits.queue_timeout {TIME}, got 0"),
        ({"memory": "64M"}, "limits.memory must be a whole number of bytes from 1048576 (1 MiB)"),
        ({"memory": 1000}, "from 1048576 (1 MiB) to 1099511627776 (1 TiB), got 1000"),
        ({"memory": 99999999999999999999 << 20}, "to 1099511627776 (1 TiB), got 1048575"),
        ({"memory": float("inf")}, "limits.memory must be a whole number of bytes"),
        ({"instructions": 1e13}, "limits.instructions must be a whole number from 1 to"),
        ({"output_bytes": 0}, "limits.output_bytes must be a whole number of bytes from 1 to"),
        ({"source_bytes": 1 << 30}, "to 268435456 (256 MiB), got 1073741824"),
        ({"timout": 1}, "unknown limit(s) timout; known: argument_bytes, calls"),
    ],
)
def test_limits_bad_values_are_config_errors(limits: dict[str, object], fragment: str) -> None:
    """Every limit is checked where it enters: kind, finiteness and range, named in the error."""
    with pytest.raises(ConfigError) as info:
        make_bridge(limits=limits)
    assert fragment in str(info.value)
    with make_bridge() as b, pytest.raises(ConfigError) as info:
        b.run("return 1", limits=limits)
    assert fragment in str(info.value)


def test_limits_whole_floats_taken_as_integers() -> None:
    limits = Limits(calls=2.0, memory=float(8 << 20), timeout=3)  # type: ignore[arg-type]
    assert (limits.calls, limits.memory, limits.timeout) == (2, 8 << 20, 3.0)
    assert isinstance(limits.calls, int) and isinstance(limits.timeout, float)


def test_limits_every_field_has_a_documented_range() -> None:
    from dataclasses import fields

    from luabridge.limits import LIMIT_RANGES, describe_range

    names = {f.name for f in fields(Limits)}
    assert names == set(LIMIT_RANGES)
    guide = (Path(__file__).parents[2] / "docs" / "guide-scripts.md").read_text()
    for name in names:
        assert f"`{name}`" in guide, name
        assert describe_range(name)
        default = getattr(DEFAULT_LIMITS, name)
        _kind, low, high = LIMIT_RANGES[name]
        assert low <= default <= high


@pytest.mark.parametrize(
    "bad",
    [
        {"timeout": 1e10},
        {"timeout": float("inf")},
        {"timeout": float("nan")},
        {"calls": 1.5},
        {"memory": 99999999999999999999 << 20},
    ],
)
def test_limits_bad_value_never_takes_a_worker(bad: dict[str, object]) -> None:
    """A refused limit is refused before a worker is taken: the worker stays healthy and idle,
    and later runs work (two such runs once left every later run waiting forever)."""
    with make_bridge(isolation="process", workers=1) as b:
        assert b.run("return 1").ok
        pool = b._worker_pool()
        before = pool.pids()
        for _ in range(3):
            with pytest.raises(ConfigError):
                b.run("return 1", limits=bad)
        after = b.run("return 'still here'", limits={"timeout": 2})
        assert after.ok and after.value == "still here"
        assert pool.pids() == before
        assert (pool._busy, pool._count) == (set(), 1)


def test_limits_file_values_checked(tmp_path: Path) -> None:
    from luabridge.config import load_settings

    config = tmp_path / "luabridge.toml"
    config.write_text("[limits]\ntimeout = 1e10\n")
    with pytest.raises(ConfigError, match=r"luabridge.toml \[limits\]: limits.timeout must be"):
        load_settings(config, integrations=[])
    config.write_text("[limits]\ncalls = 1.5\n")
    with pytest.raises(ConfigError, match=r"limits\.calls must be a whole number from 1 to 100000"):
        load_settings(config, integrations=[])


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2", 10**6])
def test_bridge_workers_checked(workers: object) -> None:
    with pytest.raises(ConfigError, match="workers must be a whole number from 1 to 1024"):
        Bridge(integrations=[], workers=workers)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="workers must be a whole number from 1 to 1024"):
        Bridge.from_config(integrations=[], workers=workers, prestart=True)
