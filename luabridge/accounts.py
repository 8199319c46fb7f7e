"""Accounts and their secrets: read from environment variables and ``luabridge.toml``.

Environment (for an integration whose ``env_prefix`` is ``LOOPS``):

- ``LOOPS_API_KEY`` defines the ``default`` account;
- ``LOOPS_API_KEY_<NAME>`` defines the account ``<name>`` (lower-cased);
- ``LOOPS_BASE_URL`` points every account of the integration at another base URL.

Config file (``luabridge.toml`` in the working directory, or an explicit path)::

    [loops.accounts.marketing]
    api_key_env = "MY_MARKETING_KEY"   # preferred: the key stays in the environment
    # api_key = "..."                  # allowed, but keep the file private
    base_url = "http://127.0.0.1:8787/api/v1"
    rate_limit = 5                     # client-side requests per second (0 turns it off)
    default = true                     # this account answers app.integrations.loops.<action>

Accounts named in the file override same-named ones from the environment. Keys never enter a
Lua state; ``AccountSettings.__repr__`` hides them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luabridge.errors import ConfigError

__all__ = ["AccountSettings", "load_accounts", "read_config_file"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KNOWN_KEYS = {"api_key_env", "api_key", "base_url", "rate_limit", "default", "timeout"}


@dataclass(frozen=True)
class AccountSettings:
    """One configured account of one integration.

    - ``name``: the Lua-visible account name (``default``, ``marketing``, ...)
    - ``api_key``: the secret; never shown by ``repr`` and never passed into Lua
    - ``base_url``: where its API lives
    - ``rate_limit``: client-side requests per second, ``None`` for the integration default,
      ``0`` for none
    - ``source``: where it was defined (an env var name or the config file), for ``accounts``
    - ``redis_url``: the fleet's Redis (see ``luabridge.fleet``), where the client keeps its
      rate limit so that every process shares it; ``None`` keeps it in this process
    """

    name: str
    api_key: str | None = field(repr=False)
    base_url: str
    rate_limit: float | None = None
    timeout: float | None = None
    source: str = ""
    key_source: str = ""
    redis_url: str | None = field(default=None, repr=False)

    @property
    def has_key(self) -> bool:
        return bool(self.api_key)


def _check_name(name: str, where: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"{where}: account name {name!r} is not valid; use lower-case letters, digits and "
            "underscores, starting with a letter (for example 'marketing')"
        )
    return name


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a ``luabridge.toml``; raises ``ConfigError`` with the file and the reason."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {str(p)!r} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror or exc}") from exc


def load_accounts(
    *,
    env_prefix: str,
    integration: str,
    default_base_url: str,
    environ: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    config_path: str = "luabridge.toml",
) -> tuple[dict[str, AccountSettings], str | None]:
    """The accounts of one integration and the name of its default account.

    Returns ``({name: settings}, default_name)``. ``default_name`` is ``"default"`` when such an
    account exists, else the one marked ``default = true`` in the file, else ``None``.
    """
    env = os.environ if environ is None else environ
    base_env = f"{env_prefix}_BASE_URL"
    base_url = env.get(base_env) or default_base_url
    accounts: dict[str, AccountSettings] = {}
    key_var = f"{env_prefix}_API_KEY"
    for var, value in sorted(env.items()):
        if var == key_var:
            name = "default"
        elif var.startswith(key_var + "_"):
            name = var[len(key_var) + 1 :].lower()
            if not _NAME.match(name):
                continue
        else:
            continue
        accounts[name] = AccountSettings(
            name=name, api_key=value, base_url=base_url, source=var, key_source=var
        )

    marked_default: str | None = None
    section = (config or {}).get(integration) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{config_path}: [{integration}] must be a table")
    file_accounts = section.get("accounts") or {}
    if not isinstance(file_accounts, Mapping):
        raise ConfigError(f"{config_path}: [{integration}.accounts] must be a table of accounts")
    for name, raw in file_accounts.items():
        where = f"{config_path} [{integration}.accounts.{name}]"
        _check_name(name, where)
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = set(raw) - _KNOWN_KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_KNOWN_KEYS))}"
            )
        for setting in ("api_key_env", "api_key", "base_url"):
            if setting in raw and (not isinstance(raw[setting], str) or not raw[setting]):
                raise ConfigError(
                    f"{where}: {setting} must be a non-empty string (got {raw[setting]!r})"
                )
        if "default" in raw and not isinstance(raw["default"], bool):
            raise ConfigError(f"{where}: default must be true or false (got {raw['default']!r})")
        key: str | None
        if "api_key_env" in raw:
            key_source = str(raw["api_key_env"])
            key = env.get(key_source)
        elif "api_key" in raw:
            key_source = f"{config_path} (api_key)"
            key = str(raw["api_key"])
        else:
            key_source = ""
            key = accounts[name].api_key if name in accounts else None
        rate = raw.get("rate_limit")
        if rate is not None and (not isinstance(rate, int | float) or rate < 0):
            raise ConfigError(f"{where}: rate_limit must be a number >= 0 (got {rate!r})")
        timeout = raw.get("timeout")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise ConfigError(f"{where}: timeout must be a number > 0 (got {timeout!r})")
        accounts[name] = AccountSettings(
            name=name,
            api_key=key,
            base_url=str(raw.get("base_url") or env.get(base_env) or default_base_url),
            rate_limit=None if rate is None else float(rate),
            timeout=None if timeout is None else float(timeout),
            source=config_path,
            key_source=key_source,
        )
        if raw.get("default") is True:
            if marked_default is not None:
                raise ConfigError(
                    f"{config_path}: both {marked_default!r} and {name!r} are marked default"
                )
            marked_default = name

    if marked_default is not None and marked_default != "default" and "default" in accounts:
        defined_by = accounts["default"].source
        raise ConfigError(
            f"{config_path}: {marked_default!r} is marked as the default {integration} account, "
            f"but {defined_by} also defines the account 'default', which would answer "
            f"app.integrations.{integration}.<action>; unset {defined_by} or drop "
            f"default = true from [{integration}.accounts.{marked_default}]"
        )
    default_name = "default" if "default" in accounts else marked_default
    return accounts, default_name
