"""Fixtures for the ledger contract: every implementation gets the same tests.

``ledger_store`` is parametrized over the implementations; it yields a function that opens a
new handle on one fresh, empty store (two handles stand for two processes sharing it).
``ledger`` is the first handle. To put another implementation under the contract, add its
name to ``IMPLEMENTATIONS`` and a branch to ``_opener``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from luabridge.ledger import Ledger, SQLiteLedger

#: The implementations the contract suite runs against.
IMPLEMENTATIONS = ["sqlite"]

Opener = Callable[[], Ledger]


def _opener(kind: str, tmp_path: Path) -> Opener:
    if kind == "sqlite":
        path = tmp_path / "ledger.sqlite3"
        return lambda: SQLiteLedger(path)
    raise AssertionError(f"no opener for ledger implementation {kind!r}")


@pytest.fixture(params=IMPLEMENTATIONS)
def ledger_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens handles on one fresh store of the implementation; all are closed afterwards."""
    opened: list[Ledger] = []
    make = _opener(str(request.param), tmp_path)

    def open_handle() -> Ledger:
        handle = make()
        opened.append(handle)
        return handle

    try:
        yield open_handle
    finally:
        for handle in opened:
            handle.close()


@pytest.fixture
def ledger(ledger_store: Opener) -> Ledger:
    return ledger_store()
