"""The Loops integration pack: ``app.integrations.loops.*`` for Lua scripts.

``integration`` is what the runtime registers. ``LoopsClient`` (HTTP), ``ContactDirectory``
(the local record behind ``list_contacts`` and ``get_contact``) and ``LoopsAccount`` (what each
account's actions receive as ``ctx.client``) are exported for hosts and tests.
"""

from __future__ import annotations

from luabridge.action import Integration

from .account import LoopsAccount, open_account
from .actions import ACTIONS
from .audience import import_contacts
from .client import DEFAULT_BASE_URL, LoopsClient
from .directory import ENV_VAR, ContactDirectory, default_directory_path
from .local import emulator
from .webhooks import webhooks

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
`list_contacts` pages over that record. On its own it holds only the contacts this integration
has seen, as it last saw them; three sources fill it with the whole team:

- **Loops webhooks.** `luabridge serve` receives them at `/webhooks/loops/<account>` (one URL
  per account: enter it in Loops under Settings, Webhooks, and put that endpoint's signing
  secret in `LOOPS_WEBHOOK_SECRET` for `default` or `LOOPS_WEBHOOK_SECRET_<NAME>`). Each
  delivery is verified with the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
  `webhook-signature`); a bad signature or a timestamp more than five minutes off is refused
  with 401, a `webhook-id` seen before with 409, and nothing changes. `contact.created`,
  `contact.deleted`, `contact.unsubscribed` and `contact.mailingList.subscribed` /
  `unsubscribed` update the directory; Loops sends no webhook for property changes, which
  reach it through `find_contact` or a new export.
- **An audience CSV export**: `luabridge loops import-contacts FILE --account A`. Headers map by
  property key (`firstName`) or label (`First Name`); rows are matched by id (a `Contact ID`
  column) or email, so importing the same file again changes nothing; the report counts rows
  added, updated and unchanged, and gives the line and reason of each rejected row.
- **`--emulator` runs** fill it from the emulator's audience before the script starts.

Its result says how fresh it is: `source` (`webhooks`, `import`, `emulator`, or `seen` when
none of these has filled it) and `synced_at` (when, in UTC). `get_contact` and `update_contact` /
`delete_contact` with a `contact_id` look the id up there, then ask Loops for the contact by its
email, so they always act on fresh data; an id the directory does not know returns
`code = "loops.unknown_contact_id"` (call `find_contact` with `email` or `user_id` instead).

The file is `$XDG_DATA_HOME/luabridge/loops-contacts.sqlite3`
(`~/.local/share/luabridge/loops-contacts.sqlite3` when `XDG_DATA_HOME` is not set); set
`{ENV_VAR}` to another file path to move it. Rows are kept apart per account (its name plus a
fingerprint of its base URL and API key), so two teams never see each other's contacts.

A call's contact is written to the file behind the call: the row is queued, and the queue is
written in one transaction once it is 50 ms old or 64 rows long, by the call that finds it due,
or by a timer when the process goes quiet. Anything that reads or changes the file in the same
process writes the queue first, so the process always reads what it recorded; another process
sees a row within about 100 ms. When the queue cannot be written, the call that wrote it says
so in `directory_error`, naming the contacts lost; when the timer could not, the next call that
records a contact does. A process killed with SIGKILL can lose its last 100 ms of rows:
`find_contact` records such a contact again.
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
    webhooks=webhooks,
    commands=(import_contacts,),
    example_accounts=("marketing", "transactional"),
)
