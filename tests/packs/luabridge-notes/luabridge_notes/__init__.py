"""A sample luabridge pack: ``app.integrations.notes``, a keyless notes store kept in memory.

Everything luabridge needs to know about the service is declared on ``integration``: its
actions, that it needs no key, how to open a client, and an extra command
(``luabridge notes about``).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from typing import Any

import click
from pydantic import BaseModel, Field

from luabridge.accounts import AccountSettings
from luabridge.action import Action, ActionInput, ActionResult, CallContext, Example, Integration
from luabridge.errors import NotFoundError

__all__ = ["NotesClient", "integration"]


class NotesClient:
    """One account's notes, in memory (a stand-in for a remote service)."""

    def __init__(self, settings: AccountSettings) -> None:
        self.account = settings.name
        self._notes: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, text: str, tags: list[str]) -> dict[str, Any]:
        with self._lock:
            note = {"id": f"note_{next(self._ids)}", "text": text, "tags": list(tags)}
            self._notes[note["id"]] = note
            return dict(note)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(n) for n in self._notes.values()]

    def delete(self, note_id: str) -> None:
        with self._lock:
            if self._notes.pop(note_id, None) is None:
                raise NotFoundError(f"no note has the id {note_id!r}", code="notes.not_found")

    def close(self) -> None:
        self._notes.clear()


class AddNoteInput(ActionInput):
    text: str = Field(min_length=1, max_length=2000, description="the note's text")
    tags: list[str] = Field(default_factory=list, description="labels to find it by")


class Note(ActionResult):
    id: str | None = Field(default=None, description="the note's id")
    text: str | None = Field(default=None, description="the note's text")
    tags: list[str] | None = Field(default=None, description="its labels")


class ListNotesInput(ActionInput):
    tag: str | None = Field(default=None, description="only notes with this label")


class NoteRow(BaseModel):
    id: str = Field(description="the note's id")
    text: str = Field(description="the note's text")
    tags: list[str] = Field(description="its labels")


class ListNotesOutput(ActionResult):
    notes: list[NoteRow] | None = Field(default=None, description="the notes, oldest first")


class DeleteNoteInput(ActionInput):
    id: str = Field(min_length=1, description="the id add_note returned")


class DeleteNoteOutput(ActionResult):
    pass


def _client(ctx: CallContext) -> NotesClient:
    client: NotesClient = ctx.client
    return client


def _add(ctx: CallContext, params: AddNoteInput) -> Mapping[str, Any]:
    return _client(ctx).add(params.text, params.tags)


def _list(ctx: CallContext, params: ListNotesInput) -> Mapping[str, Any]:
    notes = _client(ctx).all()
    if params.tag is not None:
        notes = [n for n in notes if params.tag in n["tags"]]
    return {"notes": notes}


def _delete(ctx: CallContext, params: DeleteNoteInput) -> Mapping[str, Any]:
    _client(ctx).delete(params.id)
    return {}


def _plan(operation: str) -> Any:
    def plan(ctx: CallContext, params: Any) -> Mapping[str, Any]:
        return {"operation": operation, "account": ctx.account, "params": params.model_dump()}

    return plan


ACTIONS = (
    Action(
        name="add_note",
        summary="Write a note down.",
        input=AddNoteInput,
        output=Note,
        effect="write",
        handler=_add,
        plan=_plan("add"),
        endpoint="memory: add",
        examples=(
            Example(
                title="Remember something",
                code='local note = app.integrations.notes.add_note({text = "call Ada", '
                'tags = {"todo"}})\nprint(note.id)',
            ),
        ),
    ),
    Action(
        name="list_notes",
        summary="List the notes, optionally only those with one label.",
        input=ListNotesInput,
        output=ListNotesOutput,
        effect="read",
        handler=_list,
        endpoint="memory: list",
        examples=(
            Example(
                title="Every note labelled todo",
                code='local found = app.integrations.notes.list_notes({tag = "todo"})\n'
                "print(#found.notes)",
            ),
        ),
    ),
    Action(
        name="delete_note",
        summary="Delete a note by its id.",
        input=DeleteNoteInput,
        output=DeleteNoteOutput,
        effect="destructive",
        handler=_delete,
        plan=_plan("delete"),
        endpoint="memory: delete",
        examples=(
            Example(
                title="Write a note, then delete it",
                code="local notes = app.integrations.notes\n"
                'local note = notes.add_note({text = "temporary"})\n'
                "local gone = notes.delete_note({id = note.id})\n"
                "assert(gone.success, gone.error)",
            ),
        ),
    ),
)


@click.command()
def about() -> None:
    """Say what this pack is."""
    click.echo("notes: a keyless, in-memory sample pack for luabridge")


integration = Integration(
    name="notes",
    title="Notes",
    actions=ACTIONS,
    open_client=NotesClient,
    env_prefix="NOTES",
    default_base_url="memory://notes",
    needs_key=False,
    commands=(about,),
    docs_notes="## Where notes live\n\nIn the memory of the process that runs the script.",
)
