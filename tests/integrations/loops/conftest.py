"""Fixtures for the Loops tests that go through the Lua surface: bridges wired to the emulator.

``loops_bridges`` builds ``Bridge`` objects the way a host does (``Bridge.from_config`` with
``LOOPS_API_KEY``, ``LOOPS_API_KEY_<NAME>`` and ``LOOPS_BASE_URL``), pointed at the session's
emulator and running scripts in-process. Two settings differ from a plain host:

- each bridge gets a contact directory file of its own (``open_account``'s ``directory_path``),
  so no test reads or writes the user's real directory and bridges never share rows;
- client-side rate limiting is off (``rate_limit = 0`` in a ``luabridge.toml``): a test module
  makes far more than 10 requests a second in total, and the emulator still enforces its own
  per-team limit.

Opening an account's HTTP client costs tens of milliseconds, so a module usually builds one
bridge and shares it; the tests still reset the emulator through the ``emulator`` fixture.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import pytest

from integrations.loops import integration, open_account
from luabridge import Bridge

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

#: Account name → API key in, bridge out.
BridgeFactory = Callable[[Mapping[str, str]], Bridge]


@pytest.fixture(scope="module")
def loops_bridges(
    loops_emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeFactory]:
    """A factory: ``loops_bridges({"default": key, "marketing": key2})`` is a bridge with those
    Loops accounts and an empty contact directory; all of them are closed with the module."""
    made: list[Bridge] = []

    def build(keys: Mapping[str, str]) -> Bridge:
        folder = tmp_path_factory.mktemp("loops-bridge")
        environ = {"LOOPS_BASE_URL": loops_emulator.base_url}
        sections = []
        for name, key in keys.items():
            environ["LOOPS_API_KEY" if name == "default" else f"LOOPS_API_KEY_{name.upper()}"] = key
            sections.append(f"[loops.accounts.{name}]\nrate_limit = 0\n")
        config = folder / "luabridge.toml"
        config.write_text("\n".join(sections), encoding="utf-8")
        opener = functools.partial(open_account, directory_path=folder / "contacts.sqlite3")
        loops = dataclasses.replace(integration, open_client=opener)
        bridge = Bridge.from_config(
            config, environ=environ, integrations=[loops], isolation="inprocess"
        )
        made.append(bridge)
        return bridge

    try:
        yield build
    finally:
        for bridge in made:
            bridge.close()
