"""Finding integration packs: the ``luabridge.integrations`` entry-point group.

A pack is any installed distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."luabridge.integrations"]
    notes = "luabridge_notes:integration"

where the target is a :class:`luabridge.action.Integration`. Packs are imported when first
asked for, once per process. A pack whose import raises, or whose target is not an
``Integration``, is kept aside as a :class:`BrokenPack` (its entry-point name and the first line
of the error) and every other pack still loads.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from dataclasses import dataclass

from luabridge.action import Integration

__all__ = ["ENTRY_POINT_GROUP", "BrokenPack", "discover", "discover_integrations"]

#: The entry-point group an integration pack registers itself in.
ENTRY_POINT_GROUP = "luabridge.integrations"


@dataclass(frozen=True)
class BrokenPack:
    """An installed pack that could not be loaded.

    - ``name``: its entry-point name; ``target``: what the entry point points at
    - ``error``: the first line of what went wrong (``ImportError: No module named 'x'``)
    """

    name: str
    target: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "target": self.target, "error": self.error}


_lock = threading.Lock()
_found: tuple[tuple[Integration, ...], tuple[BrokenPack, ...]] | None = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass(frozen=True)
class _EntryPoint:
    name: str
    value: str  # "package.module:attribute"

    def load(self) -> object:
        module_name, _, attr = self.value.partition(":")
        target: object = importlib.import_module(module_name.strip())
        for part in attr.strip().split(".") if attr.strip() else ():
            target = getattr(target, part)
        return target


_DIST_DIR = re.compile(r"^(?P<name>[^-]+)-[^-]+\.(dist-info|egg-info)$")


def _entry_points() -> list[_EntryPoint]:
    """The group's entry points of every distribution on ``sys.path``, first copy winning.

    This reads each ``*.dist-info/entry_points.txt`` itself instead of going through
    ``importlib.metadata``, whose import (email parsing and friends) cost every command
    20-60 ms of start-up for a scan that takes about a millisecond this way.
    """
    found: list[_EntryPoint] = []
    seen: set[str] = set()
    for entry in sys.path:
        folder = entry or "."
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for dirname in names:
            match = _DIST_DIR.match(dirname)
            if match is None:
                continue
            dist = match["name"].lower().replace("_", "-").replace(".", "-")
            if dist in seen:
                continue
            seen.add(dist)
            path = os.path.join(folder, dirname, "entry_points.txt")
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError:
                continue
            found.extend(_group_of(text))
    return found


def _group_of(text: str) -> list[_EntryPoint]:
    """The ``luabridge.integrations`` entries of one ``entry_points.txt`` (INI format)."""
    out: list[_EntryPoint] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == ENTRY_POINT_GROUP and "=" in line:
            name, _, value = line.partition("=")
            out.append(_EntryPoint(name.strip(), value.strip()))
    return out


def _load(ep: _EntryPoint) -> Integration | BrokenPack:
    try:
        target = ep.load()
    except Exception as exc:
        return BrokenPack(ep.name, ep.value, _first_line(exc))
    if not isinstance(target, Integration):
        kind = type(target).__name__
        return BrokenPack(
            ep.name, ep.value, f"TypeError: {ep.value} is a {kind}, not an Integration"
        )
    if target.name != ep.name:
        return BrokenPack(
            ep.name,
            ep.value,
            f"ValueError: the entry point is named {ep.name!r} but its Integration is named "
            f"{target.name!r}; give both the same name",
        )
    return target


def discover(*, refresh: bool = False) -> tuple[list[Integration], list[BrokenPack]]:
    """Every installed pack, sorted by name, and the packs that failed to load.

    The result is computed once per process; ``refresh=True`` scans the entry points again
    (after installing a pack into a running process).
    """
    global _found
    with _lock:
        if _found is None or refresh:
            packs: dict[str, Integration] = {}
            broken: list[BrokenPack] = []
            for ep in sorted(_entry_points(), key=lambda e: e.name):
                loaded = _load(ep)
                if isinstance(loaded, BrokenPack):
                    broken.append(loaded)
                elif loaded.name in packs:
                    broken.append(
                        BrokenPack(
                            ep.name,
                            ep.value,
                            f"ValueError: another installed pack is already named {ep.name!r}",
                        )
                    )
                else:
                    packs[loaded.name] = loaded
            _found = (tuple(packs.values()), tuple(broken))
        integrations, broken_packs = _found
    return list(integrations), list(broken_packs)


def discover_integrations() -> list[Integration]:
    """Every installed pack that loaded (see :func:`discover` for the broken ones)."""
    return discover()[0]
