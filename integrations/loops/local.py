"""What ``--emulator`` runs for the Loops pack: a seeded emulator with one team per account.

Each account gets its own team and a fresh key, so emulated accounts stay as isolated as real
ones. The contact directory of an emulated run lives in the run's scratch folder, so it never
touches the user's real one, and is filled from each team's audience when the account
opens. The emulator is imported only when asked for.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from luabridge.accounts import AccountSettings
from luabridge.action import Emulator, SupportsClose
from luabridge.errors import ConfigError

if TYPE_CHECKING:
    from .emulator import EmulatorServer

__all__ = ["EMULATED_ACCOUNTS", "LoopsEmulatorSession", "emulator", "serve", "start"]

#: The accounts an emulated run gets when no config file names any, as in the seed documents.
EMULATED_ACCOUNTS = ("default", "marketing", "transactional")


class LoopsEmulatorSession:
    """A running, seeded Loops emulator serving one team per account (see ``Emulator``)."""

    def __init__(self, server: EmulatorServer, keys: Mapping[str, str], scratch: Path) -> None:
        self._server = server
        self._keys = dict(keys)
        self._directory = scratch / "loops-contacts.sqlite3"

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def keys(self) -> Mapping[str, str]:
        return self._keys

    def open_client(self, settings: AccountSettings) -> SupportsClose:
        """The account, with its contact directory filled from its team's audience first, so
        ``list_contacts`` in an emulated run lists what the team holds."""
        from .account import open_account

        account = open_account(settings, directory_path=self._directory)
        try:
            team = self._server.team_for_key(settings.api_key or "")
        except KeyError:
            return account
        contacts = [dict(c) for c in team.find_all()]
        account.directory.import_contacts(account.account_id, contacts, source="emulator")
        return account

    def stop(self) -> None:
        self._server.stop()


def start(accounts: Sequence[str], scratch: Path) -> LoopsEmulatorSession:
    """Start the emulator on a free loopback port with the demo data in every team."""
    from .emulator import EmulatorServer, EmulatorStartError

    keys = {name: f"emu_{name}_{secrets.token_hex(12)}" for name in accounts}
    try:
        server = EmulatorServer(keys=keys, seed=True).start()
    except (EmulatorStartError, ValueError) as exc:
        raise ConfigError(f"the Loops emulator could not start: {exc}") from exc
    return LoopsEmulatorSession(server, keys, scratch)


def serve(host: str, port: int, keys: Sequence[str], rate_limit: int, seed: bool) -> None:
    """``luabridge emulator``: serve until interrupted; without keys, the demo teams."""
    from .emulator import EmulatorStartError, serve_forever

    try:
        serve_forever(host, port, list(keys) or None, rate_limit, seed)
    except (EmulatorStartError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


#: The pack's ``Integration.emulator``.
emulator = Emulator(accounts=EMULATED_ACCOUNTS, start=start, serve=serve)
