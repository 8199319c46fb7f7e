"""The Lua examples the Loops reference shows are the metadata's, and its multi-account block runs.

Each ``Example`` of the action metadata appears in the rendered reference; running them all
is tests/docs/test_pack_examples.py's job (it loops over every discovered integration). The
multi-account section's block is run here, with its placeholder filled in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import jsonschema
import pytest

from integrations.loops import integration
from integrations.loops.emulator import DEMO_KEYS
from luabridge import Bridge, Example

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

#: What the ``loops_bridges`` fixture (conftest.py) hands out.
BridgeFactory = Callable[[Mapping[str, str]], Bridge]

ALL_EFFECTS = {"write", "destructive"}
#: The multi-account section calls a made-up action with made-up arguments.
PLACEHOLDER = "function_name({...})"

EXAMPLES = [
    pytest.param(action.name, example, id=f"{action.name}-{n}")
    for action in integration.actions
    for n, example in enumerate(action.examples, start=1)
]


@pytest.fixture(scope="module")
def shared_bridge(loops_bridges: BridgeFactory) -> Bridge:
    """The three demo accounts the docs name: ``default``, ``marketing`` and ``transactional``."""
    return loops_bridges(dict(DEMO_KEYS))


@pytest.fixture
def bridge(shared_bridge: Bridge, emulator: EmulatorServer) -> Bridge:
    """The module's bridge, with the emulator reset to its seeded state for this test."""
    return shared_bridge


def lua_blocks(markdown: str) -> list[str]:
    return re.findall(r"```lua\n(.*?)```", markdown, flags=re.DOTALL)


def multi_account_section(markdown: str) -> str:
    _, heading, section = markdown.partition("## Multi-Account Usage")
    assert heading, "the reference has no multi-account section"
    return section


def test_every_action_has_an_example() -> None:
    assert {p.values[0] for p in EXAMPLES} == set(integration.action_names)


@pytest.mark.parametrize(("action", "example"), EXAMPLES)
def test_example_is_shown_in_the_reference(
    shared_bridge: Bridge, action: str, example: Example
) -> None:
    """The code that runs here is the code the action's help text shows, word for word."""
    assert example.code.strip() in shared_bridge.docs("loops", action)


def test_multi_account_block_runs_with_a_real_action(
    bridge: Bridge, emulator: EmulatorServer
) -> None:
    """Each line of the block, run once, reaches the team of the account it names.

    The block as rendered calls ``function_name({...})``, a placeholder for any action rather
    than code meant to run, so it is not run verbatim; a read-only action stands in for it.
    """
    [block] = lua_blocks(multi_account_section(bridge.docs("loops")))
    assert block.count(PLACEHOLDER) == 4
    source = block.replace(PLACEHOLDER, "get_current_user({})")
    result = bridge.run(source, allow=ALL_EFFECTS)
    assert result.ok, result.error
    assert [c.outcome for c in result.calls] == ["ok"] * len(result.calls)
    teams = [entry["team"] for entry in emulator.requests()]
    assert teams == ["default", "default", "marketing", "transactional"]


def test_multi_account_block_names_only_configured_accounts(shared_bridge: Bridge) -> None:
    [block] = lua_blocks(multi_account_section(shared_bridge.docs("loops")))
    named = set(re.findall(r"app\.integrations\.loops\.(\w+)\.", block))
    assert named == {"default", "marketing", "transactional"}


@pytest.mark.parametrize("action", integration.action_names)
def test_action_schema_is_valid_json_schema(shared_bridge: Bridge, action: str) -> None:
    schema = shared_bridge.schema("loops", action)
    for part in ("input", "output"):
        jsonschema.Draft202012Validator.check_schema(schema[part])
