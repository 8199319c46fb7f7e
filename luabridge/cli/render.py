"""Output for people: the call summary under a run and the error report on standard error."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from luabridge.bridge import RunResult
    from luabridge.dispatch import CallRecord

# -- output -----------------------------------------------------------------------------------


__all__ = [
    "call_line",
    "dumps",
    "lua_path",
    "name_chunk",
    "report_error",
    "summary",
]


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def lua_path(record: CallRecord) -> str:
    account = "" if record.account == "default" else f"{record.account}."
    return f"{record.integration}.{account}{record.action}"


def call_line(record: CallRecord, width: int) -> str:
    name = lua_path(record)
    if record.outcome == "dry_run":
        request = record.request or {}
        body = request.get("json")
        shown = "" if body is None else " " + json.dumps(body, ensure_ascii=False)
        target = f"{request.get('method', '?')} {request.get('url', '?')}"
        if request.get("params"):
            target += " " + json.dumps(request["params"], ensure_ascii=False)
        return f"  DRY RUN  {name}  {target}{shown}"
    tag = {"read": "read", "write": "WRITE", "destructive": "DELETE"}.get(record.effect, "?")
    if record.dry_run and record.effect != "read":
        tag = "PLAN"  # a dry-run write whose plan could not be made
    outcome = {"ok": "ok", "failed": "FAILED"}.get(record.outcome, record.outcome.upper())
    if record.replayed:
        outcome = "replayed"
    line = f"  {tag:<7}  {name:<{width}}  {outcome:<7} {record.duration_ms:>5.0f} ms"
    if record.outcome != "ok":
        detail = " ".join(str(p) for p in (record.code, record.status) if p is not None)
        line += f"  {detail + ': ' if detail else ''}{record.error or ''}".rstrip()
    return line


def summary(calls: Sequence[CallRecord]) -> list[str]:
    """The calls of a run, one line each, writes and dry-run plans easy to spot."""
    if not calls:
        return []
    sent = sum(
        1
        for c in calls
        if c.effect != "read"
        and not c.dry_run
        and not c.replayed
        and c.outcome in ("ok", "failed", "unknown")
    )
    planned = sum(1 for c in calls if c.outcome == "dry_run")
    replayed = sum(1 for c in calls if c.replayed)
    unknown = sum(1 for c in calls if c.outcome == "unknown" and c.effect != "read")
    notes = []
    if sent:
        notes.append(f"{sent} write{'s' if sent != 1 else ''} sent")
    if unknown:
        notes.append(f"{unknown} of unknown outcome (see docs/ledger.md)")
    if replayed:
        notes.append(f"{replayed} replayed from the run ledger (not sent again)")
    if planned:
        notes.append(f"{planned} planned and not sent (dry run)")
    head = f"{len(calls)} call{'s' if len(calls) != 1 else ''}"
    head = ", ".join([head, *notes]) + ":"
    width = max(len(lua_path(c)) for c in calls)
    return ["", head, *(call_line(c, width) for c in calls)]


#: Where a run's messages name its chunk (``script.lua:3: ...``).
_CHUNK = re.compile(r"(?<![\w./-])script\.lua(?=:)")
#: A file name safe to show in its place: no directories, no control or odd characters.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def name_chunk(message: str, label: str) -> str:
    """``message`` with the run's chunk name ``script.lua`` replaced by the file's own name
    (its last path part, when that is a plain file name); ``<stdin>`` keeps ``script.lua``."""
    name = os.path.basename(label)
    if label == "<stdin>" or not _SAFE_NAME.fullmatch(name):
        return message
    return _CHUNK.sub(name, message)


def report_error(result: RunResult, source: str | None, label: str) -> None:
    """``TypeName: message`` on stderr, then the script line it points at."""
    error = result.error
    if error is None:
        return
    click.echo(f"{error.type}: {name_chunk(error.message, label)}", err=True)
    if error.line is not None and source is not None:
        lines = source.splitlines()
        if 0 < error.line <= len(lines):
            click.echo(f"  {label}:{error.line}: {lines[error.line - 1].strip()}", err=True)
