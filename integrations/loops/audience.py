"""Audience CSV exports into the contact directory: ``luabridge loops import-contacts``.

A Loops audience export (or any CSV with the columns of Loops' CSV upload) is read row by row.
A header maps to a contact key by the key itself (``firstName``) or its label (``First Name``),
case and spaces aside; any other header that is a property key (letters and digits, as Loops
keys are) becomes a custom property, the columns Loops sets itself (``Created At``) are left out,
and the rest are reported as not imported. Every good row
is laid over the account's directory rows in one transaction (importing the same file again
changes nothing); a bad row is rejected with its line and the reason. The command is the pack's
``Integration.commands`` entry and reads accounts with the runtime's settings loader.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import click

__all__ = ["AudienceFile", "import_contacts", "read_audience"]

#: Normalised header (lower case, no spaces, dashes or underscores) -> contact key.
_STANDARD_COLUMNS: Final = {
    "id": "id",
    "contactid": "id",
    "email": "email",
    "emailaddress": "email",
    "firstname": "firstName",
    "lastname": "lastName",
    "source": "source",
    "subscribed": "subscribed",
    "usergroup": "userGroup",
    "userid": "userId",
    "optinstatus": "optInStatus",
}
#: Columns of a Loops export that Loops sets itself (a contact's creation time): not contact
#: data to import, and reported apart from the unknown columns.
_LOOPS_SET_COLUMNS: Final = frozenset({"createdat", "updatedat"})
_PROPERTY_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_INT = re.compile(r"^-?\d{1,15}$")
_FLOAT = re.compile(r"^-?\d+\.\d+$")
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


@dataclass
class AudienceFile:
    """What a CSV held: the good rows (Loops' contact keys), the rejected rows and the columns
    that were not imported."""

    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _normal(header: str) -> str:
    return re.sub(r"[\s_\-]+", "", header.strip().lower())


def _value(key: str, raw: str) -> Any:
    if key in ("subscribed",):
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"subscribed must be true or false (got {raw!r})")
    if key in _STANDARD_COLUMNS.values():
        return raw
    if _INT.match(raw):
        return int(raw)
    if _FLOAT.match(raw):
        return float(raw)
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


def read_audience(text: str) -> AudienceFile:
    """Parse a CSV export (see the module docstring). Raises ``ValueError`` for a file without
    an email column."""
    out = AudienceFile()
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration as exc:
        raise ValueError("the file is empty; an audience export starts with a header row") from exc
    columns: list[str | None] = []
    for name in header:
        if _normal(name) in _LOOPS_SET_COLUMNS:
            out.skipped.append(name)
            columns.append(None)
            continue
        key = _STANDARD_COLUMNS.get(_normal(name))
        if key is None and _PROPERTY_KEY.match(name.strip()):
            key = name.strip()
        if key is None or key in columns:
            out.unmapped.append(name)
            key = None
        columns.append(key)
    if "email" not in columns:
        raise ValueError(
            "no email column: the header needs an Email (or email) column; found: "
            + ", ".join(header)
        )
    seen: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        contact: dict[str, Any] = {}
        try:
            if len(cells) > len(columns):
                raise ValueError(f"{len(cells)} cells for {len(columns)} columns")
            for key, raw in zip(columns, cells, strict=False):
                if key is not None and raw.strip() != "":
                    contact[key] = _value(key, raw.strip())
            email = contact.get("email")
            if not email:
                raise ValueError("no email (the email cell is empty)")
            if not _EMAIL.match(email):
                raise ValueError(f"{email!r} is not an email address")
            lowered = email.lower()
            if lowered in seen:
                raise ValueError(f"{email} is already on line {seen[lowered]}")
            seen[lowered] = line
        except ValueError as exc:
            out.rejected.append({"line": line, "error": str(exc)})
            continue
        out.rows.append((line, contact))
    return out


def _local_id(email: str) -> str:
    """The directory id of a row whose export had no id column: stable per email, so a
    re-import finds it; replaced by the real id once find_contact or a webhook records it."""
    from .directory import LOCAL_ID_PREFIX

    return LOCAL_ID_PREFIX + hashlib.sha256(email.lower().encode()).hexdigest()[:20]


@click.command("import-contacts")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--account", default="default", show_default=True, help="The Loops account.")
@click.option(
    "--config", type=click.Path(dir_okay=False), default=None, help="luabridge.toml to read."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def import_contacts(file: Path, account: str, config: str | None, as_json: bool) -> None:
    """Import an audience CSV export into the contact directory of one Loops account.

    Rows are matched by id, or by email when the file has no id column; importing the same
    file again changes nothing. Prints how many rows were added, updated, unchanged and
    rejected (with each rejected row's line). Exit codes: 0 every row imported, 1 some rows
    rejected (the others are imported), 2 the file or the account cannot be used.
    """
    from luabridge.config import load_settings
    from luabridge.errors import ConfigError

    from . import integration
    from .account import open_account
    from .directory import DirectoryError

    try:
        settings = load_settings(config, integrations=[integration])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    accounts = settings.accounts.get("loops", {})
    if account not in accounts:
        known = ", ".join(sorted(accounts)) or "none (set LOOPS_API_KEY)"
        raise click.UsageError(f"unknown Loops account {account!r}; configured: {known}")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise click.UsageError(
            f"{file}: line {line} is not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file "
            "as UTF-8 (in a spreadsheet: CSV UTF-8) and import it again"
        ) from exc
    try:
        parsed = read_audience(text)
    except (ValueError, csv.Error) as exc:
        raise click.UsageError(f"{file}: {exc}") from exc
    try:
        handle = open_account(accounts[account])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        directory = handle.directory
        contacts = []
        for _, contact in parsed.rows:
            if "id" not in contact:
                known_row = directory.lookup(handle.account_id, email=contact["email"])
                contact["id"] = known_row["id"] if known_row else _local_id(contact["email"])
            contacts.append(contact)
        counts = directory.import_contacts(handle.account_id, contacts, source="import")
    except DirectoryError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        handle.close()
    report = {
        "ok": not parsed.rejected,
        "account": account,
        "file": str(file),
        **counts,
        "rejected": parsed.rejected,
        "unmapped_columns": parsed.unmapped,
        "skipped_columns": parsed.skipped,
    }
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(
            f"Imported {file} into Loops account {account!r}: {counts['added']} added, "
            f"{counts['updated']} updated, {counts['unchanged']} unchanged, "
            f"{len(parsed.rejected)} rejected"
        )
        for row in parsed.rejected:
            click.echo(f"  line {row['line']}: {row['error']}")
        if parsed.unmapped:
            click.echo(
                "Columns not imported: "
                + ", ".join(parsed.unmapped)
                + " (name a custom property by its key, for example favouriteColour)"
            )
        if parsed.skipped:
            click.echo("Columns Loops sets itself, left out: " + ", ".join(parsed.skipped))
    if parsed.rejected:
        sys.exit(1)
