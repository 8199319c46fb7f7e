"""One path from configuration to a bridge: environment, ``luabridge.toml`` and flags.

:func:`load_settings` is the only place that reads them. ``Bridge.from_config`` and every CLI
command (``--emulator`` included) go through it, so a setting is checked the same way
wherever it is given:

- accounts of every integration (see :mod:`luabridge.accounts`), with the integration's own
  env prefix;
- ``[limits]`` of the file, then the limits given as flags or arguments (those win);
- where the run ledger lives (``$LUABRIDGE_LEDGER``, then ``ledger`` in the file; see
  :func:`luabridge.ledger.ledger_path`);
- the fleet's Redis URL (``LUABRIDGE_REDIS_URL`` or ``[fleet] redis_url``, see
  :mod:`luabridge.fleet`), given to every account so that its client shares its rate limit;
- the rest of the file, kept in :attr:`Settings.file` for the sections other parts read
  (for example a broker setting).

The file is ``path`` when given, else ``luabridge.toml`` in the working directory when it
exists; ``/dev/null`` (or any empty file) means no file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luabridge.accounts import AccountSettings, load_accounts, read_config_file
from luabridge.action import Integration
from luabridge.errors import ConfigError
from luabridge.fleet import redis_url_from
from luabridge.ledger.location import ledger_path
from luabridge.limits import DEFAULT_LIMITS, Limits
from luabridge.registry import BrokenPack, discover

__all__ = ["CONFIG_FILE", "Settings", "config_path", "emulated_settings", "load_settings"]

#: The config file read from the working directory when no path is given.
CONFIG_FILE = "luabridge.toml"


@dataclass(frozen=True)
class Settings:
    """Everything a bridge is built from.

    - ``integrations``: the packs to expose; ``broken``: installed packs that failed to load
    - ``accounts``: ``{integration: {account: AccountSettings}}``
    - ``default_accounts``: ``{integration: name of the account the bare namespace uses}``
    - ``limits``: the default limits of every run (defaults, then the file, then flags)
    - ``path``: the config file read, or None; ``file``: its parsed content
    - ``ledger``: the run ledger's file, or None when the ledger is off
    - ``redis_url``: the fleet's Redis, or None when everything runs in one process
    """

    integrations: tuple[Integration, ...]
    accounts: dict[str, dict[str, AccountSettings]]
    default_accounts: dict[str, str | None]
    limits: Limits
    path: str | None = None
    file: Mapping[str, Any] = field(default_factory=dict)
    broken: tuple[BrokenPack, ...] = ()
    ledger: Path | None = None
    redis_url: str | None = field(default=None, repr=False)


def config_path(path: str | os.PathLike[str] | None) -> str | None:
    """The config file to read: ``path``, else ``./luabridge.toml`` when it exists, else None."""
    if path is not None:
        return os.fspath(path)
    return CONFIG_FILE if Path(CONFIG_FILE).is_file() else None


def _file_limits(file: Mapping[str, Any], name: str) -> dict[str, Any]:
    raw = file.get("limits")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name}: [limits] must be a table of limit = value")
    return dict(raw)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    integrations: Sequence[Integration] | None = None,
    limits: Limits | Mapping[str, Any] | None = None,
    emulator: bool = False,
) -> Settings:
    """Read the configuration; raises ``ConfigError`` naming the file and setting at fault.

    - ``path``: the config file (see :func:`config_path`)
    - ``environ``: the environment to read accounts from (default ``os.environ``)
    - ``integrations``: the packs (default: every installed pack, see ``luabridge.registry``)
    - ``limits``: overrides of the file's ``[limits]`` (the CLI's ``--timeout`` and friends)
    - ``emulator``: the accounts of every integration that has an emulator come from the file
      alone (the environment's keys are never sent to an emulator), or are the emulator's own
      accounts when the file names none; :func:`emulated_settings` then points them at it
    """
    chosen = config_path(path)
    file: dict[str, Any] = read_config_file(chosen) if chosen else {}
    name = chosen or CONFIG_FILE
    if integrations is None:
        found, broken = discover()
    else:
        found, broken = list(integrations), []
    accounts: dict[str, dict[str, AccountSettings]] = {}
    defaults: dict[str, str | None] = {}
    for integ in found:
        emulated = emulator and integ.emulator is not None
        accounts[integ.name], defaults[integ.name] = load_accounts(
            env_prefix=integ.env_prefix,
            integration=integ.name,
            default_base_url=integ.default_base_url,
            environ={} if emulated else environ,
            config=file,
            config_path=name,
        )
        if emulated and not accounts[integ.name]:
            assert integ.emulator is not None
            accounts[integ.name] = {
                acc: AccountSettings(name=acc, api_key=None, base_url="", source="--emulator")
                for acc in integ.emulator.accounts
            }
            defaults[integ.name] = "default" if "default" in accounts[integ.name] else None
        if not integ.needs_key and not accounts[integ.name]:
            # A keyless service still has one account for the bare namespace to use.
            accounts[integ.name] = {
                "default": AccountSettings(
                    name="default",
                    api_key=None,
                    base_url=integ.default_base_url,
                    source="built in (no key needed)",
                )
            }
            defaults[integ.name] = "default"
    try:
        merged = DEFAULT_LIMITS.merged(_file_limits(file, name))
    except ConfigError as exc:
        raise ConfigError(f"{name} [limits]: {exc}") from exc
    merged = merged.merged(dict(limits) if isinstance(limits, Mapping) else limits)
    # The process's environment, as for the contact directory: ``environ`` holds accounts.
    ledger = ledger_path(file, config_name=chosen)
    redis_url = redis_url_from(file, environ, name)
    if redis_url is not None:
        accounts = {
            integ: {acc: dataclasses.replace(s, redis_url=redis_url) for acc, s in accs.items()}
            for integ, accs in accounts.items()
        }
    return Settings(
        integrations=tuple(found),
        accounts=accounts,
        default_accounts=defaults,
        limits=merged,
        path=chosen,
        file=file,
        broken=tuple(broken),
        ledger=ledger,
        redis_url=redis_url,
    )


@contextlib.contextmanager
def emulated_settings(settings: Settings) -> Iterator[Settings]:
    """``settings`` with every integration that has an emulator pointed at a fresh, seeded one.

    Each emulated account is its own team with a generated key. The emulators, and a scratch
    folder for their local state, live until the block ends. Integrations without an emulator
    keep their accounts as configured.
    """
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="luabridge-emu-")))
        integrations: list[Integration] = []
        accounts = {name: dict(accs) for name, accs in settings.accounts.items()}
        for integ in settings.integrations:
            if integ.emulator is None:
                integrations.append(integ)
                continue
            names = sorted(accounts[integ.name])
            folder = scratch / integ.name
            folder.mkdir()
            session = integ.emulator.start(names, folder)
            stack.callback(session.stop)
            keys = session.keys
            accounts[integ.name] = {
                acc: dataclasses.replace(
                    accounts[integ.name][acc],
                    api_key=keys.get(acc),
                    base_url=session.base_url,
                    source="--emulator",
                    key_source="--emulator (generated)",
                )
                for acc in names
            }
            integrations.append(dataclasses.replace(integ, open_client=session.open_client))
        yield dataclasses.replace(settings, integrations=tuple(integrations), accounts=accounts)
