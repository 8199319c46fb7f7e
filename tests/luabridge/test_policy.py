"""Run policy: effect tags against the run's ``allow``, and dry runs that plan without sending."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any, Literal

import pytest
from conftest import NOTES
from pydantic import BaseModel, Field

from luabridge import (
    Action,
    ActionInput,
    ActionResult,
    Bridge,
    CallContext,
    ConfigError,
    Example,
    Integration,
)
from luabridge.accounts import AccountSettings

CREATE = "local x\nlocal r = app.integrations.notes.create_note({title = 'planned'})\nreturn r"
DELETE = "local x\nlocal r = app.integrations.notes.delete_note({note_id = 'n1'})\nreturn r"


def notes_of(bridge: Bridge, account: str = "default") -> dict[str, Any]:
    return bridge._client("notes", account).notes  # type: ignore[attr-defined,no-any-return]


def seed(bridge: Bridge) -> None:
    notes_of(bridge)["n1"] = {"note_id": "n1", "title": "kept", "tags": ["t"], "meta": {}}


# -- allow ---------------------------------------------------------------------------------------


def test_policy_read_allowed_by_default(bridge: Bridge) -> None:
    seed(bridge)
    result = bridge.run("return app.integrations.notes.get_note({note_id = 'n1'}).title")
    assert result.ok and result.value == "kept"


def test_policy_write_refused_by_default(bridge: Bridge) -> None:
    result = bridge.run(CREATE)
    assert result.error is not None
    assert (result.error.type, result.error.line) == ("PermissionError", 2)
    message = result.error.message
    assert message.startswith("script.lua:2: notes.create_note is a write action")
    assert "this run allows only: read" in message
    assert "allow={..., 'write'}" in message and "--allow write" in message
    assert notes_of(bridge) == {}


def test_policy_refusal_catchable_by_pcall(bridge: Bridge) -> None:
    src = """
    local ok, e = pcall(app.integrations.notes.create_note, {title = 'x'})
    return {ok = ok, e = e, after = app.integrations.notes.list_notes().success}
    """
    result = bridge.run(src)
    assert result.ok, result.error
    assert result.value["ok"] is False
    assert "notes.create_note is a write action" in result.value["e"]
    assert result.value["after"] is True
    assert [c.outcome for c in result.calls] == ["refused", "ok"]


def test_policy_destructive_needs_destructive(bridge: Bridge) -> None:
    seed(bridge)
    result = bridge.run(DELETE, allow={"write"})
    assert result.error is not None and result.error.type == "PermissionError"
    assert "notes.delete_note is a destructive action" in result.error.message
    assert "this run allows only: read, write" in result.error.message
    assert "--allow destructive" in result.error.message
    assert "n1" in notes_of(bridge)


def test_policy_destructive_allowed(bridge: Bridge) -> None:
    seed(bridge)
    result = bridge.run(DELETE, allow={"write", "destructive"})
    assert result.ok, result.error
    assert notes_of(bridge) == {}


def test_policy_refusal_hint_is_accurate(bridge: Bridge) -> None:
    """Following the hint works: allowing the write with a dry run plans it."""
    refused = bridge.run(CREATE)
    assert refused.error is not None
    assert (
        "to plan it without sending, allow it and add dry_run=True (CLI: --dry-run)"
        in refused.error.message
    )
    planned = bridge.run(CREATE, allow={"write"}, dry_run=True)
    assert planned.ok and planned.value["dry_run"] is True


@pytest.mark.parametrize(
    "allow",
    [
        "write",
        "read,write",
        " write , destructive ",
        ["write"],
        ("read", "write"),
        {"write"},
        frozenset({"write", "destructive"}),
        (e for e in ["write"]),
    ],
)
def test_policy_allow_forms_accepted(bridge: Bridge, allow: str | Iterable[str]) -> None:
    result = bridge.run(CREATE, allow=allow)
    assert result.ok, result.error
    assert result.value["success"] is True


@pytest.mark.parametrize("allow", [None, "", "read", ["read"], ()])
def test_policy_allow_read_only_forms(bridge: Bridge, allow: str | Iterable[str] | None) -> None:
    result = bridge.run(CREATE, allow=allow)
    assert result.error is not None and result.error.type == "PermissionError"


def test_policy_allow_shown_to_script(bridge: Bridge) -> None:
    result = bridge.run("return app.accounts('notes')[1].allowed", allow="destructive,write")
    assert result.value == ["read", "write", "destructive"]


@pytest.mark.parametrize(("allow", "bad"), [("wirte", "wirte"), ({"write", "delete"}, "delete")])
def test_policy_unknown_effect_is_config_error(bridge: Bridge, allow: Any, bad: str) -> None:
    with pytest.raises(
        ConfigError, match=f"unknown effect '{bad}'.*; use one or more of read, write, destructive"
    ):
        bridge.run("return 1", allow=allow)


# -- dry run -------------------------------------------------------------------------------------


def test_dry_run_reads_performed(bridge: Bridge) -> None:
    seed(bridge)
    result = bridge.run("return app.integrations.notes.list_notes().notes[1].title", dry_run=True)
    assert result.ok and result.value == "kept"
    (call,) = result.calls
    assert (call.outcome, call.dry_run, call.request) == ("ok", True, None)


def test_dry_run_write_not_sent(bridge: Bridge) -> None:
    seed(bridge)
    src = """
    local c = app.integrations.notes.create_note({title = 'planned', tags = {'a'}})
    local d = app.integrations.notes.delete_note({note_id = 'n1'})
    return {c = c, d = d, left = #app.integrations.notes.list_notes().notes}
    """
    result = bridge.run(src, allow={"write", "destructive"}, dry_run=True)
    assert result.ok, result.error
    assert result.value["left"] == 1
    assert list(notes_of(bridge)) == ["n1"]
    assert [c.outcome for c in result.calls] == ["dry_run", "dry_run", "ok"]


def test_dry_run_placeholder_schema_valid_and_marked(bridge: Bridge) -> None:
    result = bridge.run(CREATE, allow={"write"}, dry_run=True)
    assert result.ok, result.error
    value = result.value
    assert value["success"] is True and value["dry_run"] is True
    create = NOTES.action("create_note")
    assert create is not None
    create.output.model_validate(value)
    assert value == {"success": True, "dry_run": True, "tags": [], "meta": {}}


def test_dry_run_records_exact_request(bridge: Bridge) -> None:
    src = "app.integrations.notes.work.create_note({title = 'p', meta = {}, score = 2})"
    result = bridge.run(src, allow={"write"}, dry_run=True)
    assert result.ok, result.error
    (call,) = result.calls
    assert (call.account, call.action, call.outcome, call.dry_run) == (
        "work",
        "create_note",
        "dry_run",
        True,
    )
    assert call.request == {
        "method": "POST",
        "url": "https://notes.invalid/notes",
        "json": {"title": "p", "body": "", "tags": [], "meta": {}, "score": 2.0},
    }
    assert call.to_dict()["request"] == call.request
    assert notes_of(bridge, "work") == {}


def test_dry_run_still_validates(bridge: Bridge) -> None:
    result = bridge.run(
        "local x\napp.integrations.notes.create_note({titel = 'p'})", allow={"write"}, dry_run=True
    )
    assert result.error is not None
    assert (result.error.type, result.error.line) == ("ValidationError", 2)
    assert result.calls[0].outcome == "invalid"


def test_dry_run_still_needs_allow(bridge: Bridge) -> None:
    result = bridge.run(CREATE, dry_run=True)
    assert result.error is not None and result.error.type == "PermissionError"
    assert "dry_run=True" not in result.error.message
    assert result.calls[0].outcome == "refused" and result.calls[0].dry_run is True


def test_dry_run_shown_to_script(bridge: Bridge) -> None:
    result = bridge.run("return app.accounts('notes')[1].dry_run", dry_run=True)
    assert result.value is True


# -- dry-run placeholders for output models with required fields ---------------------------------


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    name: str
    size: int


class StrictOut(ActionResult):
    count: int
    ratio: float
    label: str
    flag: bool
    items: list[str]
    mapping: dict[str, Any]
    maybe: str | None
    kind: Literal["a", "b"]
    colour: Colour
    inner: Inner
    inners: list[Inner]
    optional: int = Field(5, description="not required")


class PlanIn(ActionInput):
    x: int = 0


def _plan(ctx: CallContext, p: PlanIn) -> dict[str, Any]:
    return {"method": "POST", "url": "https://strict.invalid/", "json": p.model_dump()}


def _send(ctx: CallContext, p: PlanIn) -> dict[str, Any]:
    raise AssertionError("a dry run must not call the handler")


class _Client:
    def __init__(self, settings: AccountSettings) -> None:
        pass

    def close(self) -> None:
        pass


STRICT = Integration(
    name="strict",
    title="Strict",
    env_prefix="STRICT",
    default_base_url="https://strict.invalid",
    open_client=_Client,
    actions=(
        Action(
            name="make_thing",
            summary="Makes a thing.",
            input=PlanIn,
            output=StrictOut,
            effect="write",
            handler=_send,
            plan=_plan,
            examples=(Example("app.integrations.strict.make_thing({})"),),
        ),
    ),
)


def test_dry_run_placeholder_fills_required_fields() -> None:
    """Every required output field gets a neutral value the output model accepts."""
    with Bridge.from_config(
        environ={"STRICT_API_KEY": "strict-key-0000"}, integrations=[STRICT], isolation="inprocess"
    ) as b:
        result = b.run(
            "return app.integrations.strict.make_thing({x = 1})", allow="write", dry_run=True
        )
    assert result.ok, result.error
    value = result.value
    # A None field reads as nil, so it is missing from the table; put it back to validate.
    assert "maybe" not in value
    StrictOut.model_validate({"maybe": None, **value})
    assert value["success"] is True and value["dry_run"] is True
    assert value["optional"] == 5
    assert (value["kind"], value["colour"], value["inner"]) == ("a", "red", {"name": "", "size": 0})
    assert result.calls[0].request == {
        "method": "POST",
        "url": "https://strict.invalid/",
        "json": {"x": 1},
    }
