"""Where the run ledger lives: the default file, ``$LUABRIDGE_LEDGER`` and ``luabridge.toml``.

Kept apart from the implementations, so that reading the configuration costs no ``sqlite3``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from luabridge.errors import ConfigError

__all__ = ["ENV_VAR", "default_ledger_path", "ledger_path"]

#: Environment variable naming the ledger file (``off`` turns the ledger off).
ENV_VAR: Final = "LUABRIDGE_LEDGER"
_FILE_NAME: Final = "ledger.sqlite3"
_OFF: Final = frozenset({"off", "false", "0", "no", "none"})


def default_ledger_path(environ: Mapping[str, str] | None = None) -> Path:
    """The default file: ``$XDG_STATE_HOME/luabridge/ledger.sqlite3``, else
    ``~/.local/state/luabridge/ledger.sqlite3``."""
    env = os.environ if environ is None else environ
    state_home = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home).expanduser() / "luabridge" / _FILE_NAME


def ledger_path(
    file: Mapping[str, Any],
    *,
    config_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path | None:
    """Where the ledger lives, or None when it is turned off.

    ``$LUABRIDGE_LEDGER`` wins (a path, or ``off``); then ``ledger`` in the config file:
    ``false`` (off), ``true`` (the default file) or a path (relative to the file's folder);
    then :func:`default_ledger_path`. Raises ``ConfigError`` for any other value.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_VAR, "").strip()
    if raw:
        return None if raw.lower() in _OFF else Path(raw).expanduser()
    name = config_name or "luabridge.toml"
    value = file.get("ledger", True)
    if value is False:
        return None
    if value is True:
        return default_ledger_path(env)
    if isinstance(value, str) and value.strip():
        path = Path(value.strip()).expanduser()
        if not path.is_absolute() and config_name:
            path = Path(config_name).parent / path
        return path
    raise ConfigError(
        f"{name}: ledger must be false (off), true (the default file) or a file path, got "
        f'{value!r}; for example: ledger = "runs/ledger.sqlite3"'
    )
