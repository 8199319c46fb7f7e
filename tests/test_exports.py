"""Every module declares a sorted, complete ``__all__``; the packages re-export the public names."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType
from typing import Any

import pytest

import integrations.loops
import integrations.loops.emulator
import luabridge
import luabridge.errors
import luabridge.ledger

PACKAGES = [luabridge, luabridge.ledger, integrations.loops, integrations.loops.emulator]


def module_names() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package.__name__)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.ispkg and info.name != "__main__":
                names.append(f"{package.__name__}.{info.name}")
    return names


MODULES = module_names()


def sort_key(name: str) -> tuple[int, list[Any]]:
    """Ruff's RUF022 "isort-style" order: SCREAMING_CASE, then CamelCase, then the rest, each
    in natural order (runs of digits compare as numbers)."""
    if len(name) > 1 and name.upper() == name and name.lower() != name:
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    return kind, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def test_sort_key_matches_isort_style() -> None:
    names = ["b", "A2", "Class", "A10", "MAX", "_private", "APIError", "Api", "a", "X"]
    assert sorted(names, key=sort_key) == [
        "A2",
        "A10",
        "MAX",
        "APIError",
        "Api",
        "Class",
        "X",
        "_private",
        "a",
        "b",
    ]


def test_modules_found() -> None:
    assert "luabridge.convert" in MODULES and "integrations.loops.emulator.app" in MODULES
    assert len(MODULES) > 30


@pytest.mark.parametrize("name", MODULES)
def test_all_declared_sorted_and_existing(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    assert exported == sorted(exported, key=sort_key), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


def defined_here(module: ModuleType) -> set[str]:
    """Public classes and functions whose home is ``module``."""
    return {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(v) or inspect.isfunction(v))
        and v.__module__ == module.__name__
    }


@pytest.mark.parametrize("name", [m for m in MODULES if m not in {p.__name__ for p in PACKAGES}])
def test_all_complete(name: str) -> None:
    module = importlib.import_module(name)
    unlisted = sorted(defined_here(module) - set(module.__all__))
    assert not unlisted, f"{name} defines public names missing from __all__: {unlisted}"


def test_main_module_declares_all() -> None:
    import luabridge.__main__ as main

    assert main.__all__ == []


USER_FACING = {
    "Bridge",
    "RunResult",
    "RunError",
    "Limits",
    "DEFAULT_LIMITS",
    "AccountSettings",
    "CallRecord",
    "Action",
    "ActionInput",
    "ActionResult",
    "CallContext",
    "Example",
    "Integration",
}


def test_package_reexports_user_facing_names() -> None:
    # The exception classes; the two helpers (type name -> class, envelope) stay in the module.
    helpers = {"error_class", "error_envelope"}
    errors = {n for n in luabridge.errors.__all__ if n not in helpers}
    expected = USER_FACING | errors
    assert expected <= set(luabridge.__all__), sorted(expected - set(luabridge.__all__))


def test_package_reexports_are_the_originals() -> None:
    for name in luabridge.__all__:
        value = getattr(luabridge, name)
        home = getattr(value, "__module__", None)
        if home is not None and inspect.isclass(value):
            assert home.startswith("luabridge."), name
            assert getattr(importlib.import_module(home), name) is value


def test_loops_package_exports_its_integration() -> None:
    from luabridge import Integration

    assert isinstance(integrations.loops.integration, Integration)
    assert "integration" in integrations.loops.__all__
