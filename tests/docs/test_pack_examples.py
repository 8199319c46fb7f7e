"""Every Lua example of every discovered integration is a script that works.

The examples are what ``luabridge docs <name>`` and ``app.help`` show an agent. Each one runs
the way ``luabridge run --emulator`` would run it (a fresh, seeded emulator for a pack that has
one), with every effect allowed; every action call in it must succeed, and what it passes must
validate against the JSON schema the docs publish. The sample pack under tests/packs runs
through the same loop, so a new pack cannot pass with examples that never ran.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from luabridge import Bridge, Example, Integration
from luabridge.config import emulated_settings, load_settings
from luabridge.registry import discover

ALL_EFFECTS = {"write", "destructive"}

SHIPPED = discover()[0]


def examples_of(integ: Integration) -> list[tuple[str, Example]]:
    return [(action.name, example) for action in integ.actions for example in action.examples]


def check_example(name: str, action: str, example: Example) -> None:
    settings = load_settings("/dev/null", environ={}, emulator=True)
    with emulated_settings(settings) as emulated:
        with Bridge.from_settings(emulated, isolation="inprocess") as bridge:
            result = bridge.run(example.code, allow=ALL_EFFECTS)
            assert result.ok, (name, action, result.error)
            assert action in [c.action for c in result.calls if c.integration == name]
            failed = [(c.action, c.outcome, c.code, c.error) for c in result.calls]
            assert [f for f in failed if f[1] != "ok"] == [], (name, action)
            for call in result.calls:
                schema = bridge.schema(call.integration, call.action)["input"]
                jsonschema.validate(call.params, schema)


def test_every_shipped_pack_is_covered() -> None:
    assert "loops" in [i.name for i in SHIPPED]
    for integ in SHIPPED:
        assert {a for a, _ in examples_of(integ)} == set(integ.action_names), integ.name


@pytest.mark.parametrize(
    ("name", "action", "example"),
    [
        pytest.param(integ.name, action, example, id=f"{integ.name}.{action}-{n}")
        for integ in SHIPPED
        for n, (action, example) in enumerate(examples_of(integ), start=1)
    ],
)
def test_example_runs_and_every_call_succeeds(name: str, action: str, example: Example) -> None:
    check_example(name, action, example)


def test_examples_of_an_installed_pack_run_too(notes_discovered: Path) -> None:
    notes = next(i for i in discover()[0] if i.name == "notes")
    ran = []
    for action, example in examples_of(notes):
        check_example("notes", action, example)
        ran.append(action)
    assert sorted(set(ran)) == sorted(notes.action_names)
