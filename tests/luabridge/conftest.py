"""Fixtures for the runtime tests: a small in-memory "notes" integration and bridges over it.

The runtime must not know any integration by name, so its tests use this one rather than Loops.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import Field

from luabridge import (
    AccountSettings,
    Action,
    ActionInput,
    ActionResult,
    APIError,
    Bridge,
    CallContext,
    Example,
    Integration,
)

NOTES_KEYS = {"default": "notes-key-default-0123456789", "work": "notes-key-work-9876543210"}


class NotesClient:
    """One account's in-memory notebook; holds the key the way a real client would."""

    def __init__(self, settings: AccountSettings) -> None:
        self.api_key = settings.api_key
        self.account = settings.name
        self.notes: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        self.closed = True


class NoteIn(ActionInput):
    note_id: str = Field(description="The note's id")


class ListIn(ActionInput):
    limit: int = Field(10, ge=1, le=50, description="How many notes to return")
    tag: str | None = Field(None, description="Only notes with this tag")


class CreateIn(ActionInput):
    title: str = Field(description="Title", max_length=100)
    body: str = Field("", description="Body text")
    tags: list[str] = Field(default_factory=list, description="Tags")
    meta: dict[str, Any] = Field(default_factory=dict, description="Free-form metadata")
    score: float = Field(0.0, description="A float field")


class Note(ActionResult):
    note_id: str | None = Field(None, description="id")
    title: str | None = Field(None, description="title")
    tags: list[str] = Field(default_factory=list, description="tags")
    meta: dict[str, Any] = Field(default_factory=dict, description="meta")
    account: str | None = Field(None, description="which account served it")


class NoteList(ActionResult):
    notes: list[dict[str, Any]] = Field(default_factory=list, description="the notes")


class Echo(ActionResult):
    key_echo: str | None = Field(None, description="what the remote side echoed")


def _get(ctx: CallContext, p: NoteIn) -> dict[str, Any]:
    note = ctx.client.notes.get(p.note_id)
    if note is None:
        raise APIError(f"note {p.note_id} not found", code="notes.not_found", status=404)
    return {**note, "account": ctx.account}


def _list(ctx: CallContext, p: ListIn) -> dict[str, Any]:
    notes = [n for n in ctx.client.notes.values() if p.tag is None or p.tag in n["tags"]]
    return {"notes": notes[: p.limit]}


def _create(ctx: CallContext, p: CreateIn) -> dict[str, Any]:
    with ctx.client.lock:
        note_id = f"n{next(ctx.client.ids)}"
        note = {"note_id": note_id, "title": p.title, "tags": p.tags, "meta": p.meta}
        ctx.client.notes[note_id] = note
    return {**note, "account": ctx.account}


def _delete(ctx: CallContext, p: NoteIn) -> dict[str, Any]:
    ctx.client.notes.pop(p.note_id, None)
    return {"note_id": p.note_id}


def _leak(ctx: CallContext, p: ActionInput) -> dict[str, Any]:
    # A remote side that echoes the credential back, to prove redaction by value.
    raise APIError(
        f"bad request with key {ctx.client.api_key}", status=400, body={"k": ctx.client.api_key}
    )


def _echo(ctx: CallContext, p: ActionInput) -> dict[str, Any]:
    return {"key_echo": f"your key is {ctx.client.api_key}"}


def _plan(ctx: CallContext, p: Any) -> dict[str, Any]:
    return {"method": "POST", "url": "https://notes.invalid/notes", "json": p.model_dump()}


NOTES = Integration(
    name="notes",
    title="Notes",
    env_prefix="NOTES",
    default_base_url="https://notes.invalid",
    open_client=NotesClient,
    docs_notes="Notes live in memory, one notebook per account.",
    actions=(
        Action(
            name="get_note",
            summary="Get one note.",
            input=NoteIn,
            output=Note,
            effect="read",
            handler=_get,
            examples=(Example('local r = app.integrations.notes.get_note({note_id = "n1"})'),),
        ),
        Action(
            name="list_notes",
            summary="List notes.",
            input=ListIn,
            output=NoteList,
            effect="read",
            handler=_list,
            examples=(Example("local r = app.integrations.notes.list_notes({})", "List"),),
        ),
        Action(
            name="create_note",
            summary="Create a note.",
            input=CreateIn,
            output=Note,
            effect="write",
            handler=_create,
            plan=_plan,
            examples=(Example('app.integrations.notes.create_note({title = "hi"})'),),
        ),
        Action(
            name="delete_note",
            summary="Delete a note.",
            input=NoteIn,
            output=Note,
            effect="destructive",
            handler=_delete,
            plan=_plan,
            examples=(Example('app.integrations.notes.delete_note({note_id = "n1"})'),),
        ),
        Action(
            name="leak_key",
            summary="Fails with an error that echoes the key.",
            input=ActionInput,
            output=Echo,
            effect="read",
            handler=_leak,
            examples=(Example("app.integrations.notes.leak_key()"),),
        ),
        Action(
            name="echo_key",
            summary="Succeeds with a field that echoes the key.",
            input=ActionInput,
            output=Echo,
            effect="read",
            handler=_echo,
            examples=(Example("app.integrations.notes.echo_key()"),),
        ),
    ),
)


def make_bridge(**options: Any) -> Bridge:
    env = {"NOTES_API_KEY": NOTES_KEYS["default"], "NOTES_API_KEY_WORK": NOTES_KEYS["work"]}
    options.setdefault("isolation", "inprocess")
    return Bridge.from_config(environ=env, integrations=[NOTES], **options)


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    """A fresh in-process bridge over the notes integration with two accounts."""
    b = make_bridge()
    yield b
    b.close()
