"""The Loops integration pack: ``app.integrations.loops.*`` for Lua scripts.

``integration`` is what the runtime registers. ``LoopsClient`` (HTTP), ``ContactDirectory``
(the local record behind ``list_contacts`` and ``get_contact``) and ``LoopsAccount`` (what each
account's actions receive as ``ctx.client``) are exported for hosts and tests.
"""

from __future__ import annotations

from luabridge.action import Integration

from .account import LoopsAccount, open_account
from .actions import ACTIONS
from .client import DEFAULT_BASE_URL, LoopsClient
from .directory import ENV_VAR, ContactDirectory, default_directory_path
from .local import emulator

__all__ = [
    "ContactDirectory",
    "LoopsAccount",
    "LoopsClient",
    "default_directory_path",
    "integration",
    "open_account",
]

_DOCS_NOTES = f"""\
## Where `list_contacts` and `get_contact` get their data

The Loops API has no way to list contacts or to fetch one by its id. These two actions are
served by the **contact directory**: a local SQLite file in which this integration records, for
each account, every contact it creates, updates, finds (`find_contact`), fetches or deletes.
`list_contacts` pages over that record, so it shows only contacts this integration has seen,
as it last saw them, not the whole Loops audience. `get_contact` and `update_contact` /
`delete_contact` with a `contact_id` look the id up there, then ask Loops for the contact by its
email, so they always act on fresh data; an id the directory does not know returns
`code = "loops.unknown_contact_id"` (call `find_contact` with `email` or `user_id` instead).

The file is `$XDG_DATA_HOME/luabridge/loops-contacts.sqlite3`
(`~/.local/share/luabridge/loops-contacts.sqlite3` when `XDG_DATA_HOME` is not set); set
`{ENV_VAR}` to another file path to move it. Rows are kept apart per account (its name plus a
fingerprint of its base URL and API key), so two teams never see each other's contacts.
"""

integration = Integration(
    name="loops",
    title="Loops",
    actions=ACTIONS,
    open_client=open_account,
    env_prefix="LOOPS",
    default_base_url=DEFAULT_BASE_URL,
    docs_notes=_DOCS_NOTES,
    emulator=emulator,
    example_accounts=("marketing", "transactional"),
)
