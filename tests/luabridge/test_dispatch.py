"""The per-run dispatcher: argument validation, the namespace tree, result shaping, call records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import NOTES, NOTES_KEYS
from pydantic import Field

from luabridge import (
    Action,
    ActionInput,
    ActionResult,
    Bridge,
    CallContext,
    CallRecord,
    Example,
    Integration,
)
from luabridge.accounts import AccountSettings

WRITE = {"write"}


def failure(bridge: Bridge, src: str, **options: Any) -> tuple[str, str, int | None]:
    """Run ``src`` expecting it to fail; return the error's type, message and line."""
    result = bridge.run(src, **options)
    assert not result.ok, result.value
    assert result.error is not None
    return result.error.type, result.error.message, result.error.line


def value_of(bridge: Bridge, src: str, **options: Any) -> Any:
    result = bridge.run(src, **options)
    assert result.ok, result.error
    return result.value


def notes_of(bridge: Bridge, account: str) -> dict[str, Any]:
    return bridge._client("notes", account).notes  # type: ignore[attr-defined,no-any-return]


# -- argument validation -------------------------------------------------------------------------


def test_call_unknown_parameter_suggests_fix(bridge: Bridge) -> None:
    src = "local a = 1\nlocal b = 2\n\nlocal r = app.integrations.notes.create_note({titel = 'x'})"
    kind, message, line = failure(bridge, src, allow=WRITE)
    assert kind == "ValidationError" and line == 4
    assert message.startswith(
        "script.lua:4: notes.create_note: unknown parameter 'titel' (did you mean 'title'?)"
    )
    assert "parameters: body, meta, score, tags, title" in message


@pytest.mark.parametrize(
    "src",
    [
        "local a = 1\n\nreturn app.integrations.notes.create_note({titel = 'x'})",
        "local a = 1\n\nreturn app.integrations.notes.create_note('x')",
        "local a = 1\n\nreturn app.integrations.notes.default.create_note({title = 1})",
    ],
)
def test_call_tail_called_mistake_keeps_its_line(bridge: Bridge, src: str) -> None:
    """`return action(...)` drops the script's frame; the line is found from the action name."""
    kind, message, line = failure(bridge, src, allow=WRITE)
    assert kind == "ValidationError" and line == 3
    assert message.startswith("script.lua:3: notes.create_note: ")


def test_call_tail_called_mistake_name_in_a_comment_is_no_call_site(bridge: Bridge) -> None:
    """Only a call (the name followed by an argument list) counts when the line is looked for."""
    src = "-- create_note below\nreturn app.integrations.notes.create_note({titel = 'x'})"
    kind, message, line = failure(bridge, src, allow=WRITE)
    assert kind == "ValidationError" and line == 2
    assert message.startswith("script.lua:2: notes.create_note: unknown parameter 'titel'")


def test_call_tail_called_mistake_found_by_its_parameter_names(bridge: Bridge) -> None:
    """With the action called twice, the parameter names of the failing call pick the line."""
    src = (
        "local N = app.integrations.notes\n"
        "local r = N.create_note({title = 'a'})\n"
        "if r.success then\n"
        "  return N.create_note({titel = 'b'})\n"
        "end"
    )
    kind, message, line = failure(bridge, src, allow=WRITE)
    assert kind == "ValidationError" and line == 4
    assert message.startswith("script.lua:4: notes.create_note: unknown parameter 'titel'")


def test_call_tail_called_mistake_ambiguous_lists_the_candidates(bridge: Bridge) -> None:
    """Two calls that look alike cannot be told apart: the message names both lines."""
    src = (
        "local N = app.integrations.notes\n"
        "if N.list_notes().success then return N.create_note({titel = 'a'}) end\n"
        "return N.create_note({titel = 'b'})"
    )
    kind, message, line = failure(bridge, src, allow=WRITE)
    assert kind == "ValidationError" and line is None
    assert message.startswith("script.lua: notes.create_note: unknown parameter 'titel'")
    assert message.endswith("(the failing call is one of the create_note calls on lines 2, 3)")


def test_call_helper_function_mistake_keeps_the_call_line(bridge: Bridge) -> None:
    """A helper that tail-calls the action is blamed on its own line, not its caller's."""
    src = (
        "local N = app.integrations.notes\n"
        "local function add(t)\n"
        "  return N.create_note({titel = t})\n"
        "end\n"
        "local r = add('x')\n"
        "return r"
    )
    kind, message, line = failure(bridge, src, allow=WRITE)
    assert kind == "ValidationError" and line == 3
    assert message.startswith("script.lua:3: notes.create_note: unknown parameter 'titel'")


def test_call_unknown_parameter_without_close_match_lists_choices(bridge: Bridge) -> None:
    kind, message, _ = failure(bridge, "local r = app.integrations.notes.list_notes({zzz = 1})")
    assert kind == "ValidationError"
    assert "unknown parameter 'zzz'; parameters: limit, tag" in message
    assert "did you mean" not in message


def test_call_huge_unknown_parameter_name_is_cut(bridge: Bridge) -> None:
    """A 900,000-character parameter name gets no "did you mean" search (difflib over it took
    over a second) and is shown cut, in the message and in the call record."""
    src = 'local r = app.integrations.notes.list_notes({[string.rep("e", 9e5)] = 1})'
    result = bridge.run(src)
    assert result.error is not None and result.error.type == "ValidationError"
    message = result.error.message
    assert f"unknown parameter '{'e' * 80}...' (900000 characters); parameters: limit, tag" in (
        message
    )
    assert len(message) < 300
    (record,) = result.calls
    assert record.error is not None and len(record.error) < 300


def test_suggest_skips_names_no_real_name_has() -> None:
    from luabridge.effects import quote_name, suggest

    assert suggest("titel", ["title"]) == " (did you mean 'title'?)"
    assert suggest("title" + "x" * 200, ["title" + "x" * 199]) == ""
    assert quote_name("short") == "'short'"
    assert quote_name("n" * 81) == f"'{'n' * 80}...' (81 characters)"


def test_call_missing_required_parameter(bridge: Bridge) -> None:
    kind, message, line = failure(
        bridge, "local x\nlocal r = app.integrations.notes.create_note({body = 'b'})", allow=WRITE
    )
    assert (kind, line) == ("ValidationError", 2)
    assert message == "script.lua:2: notes.create_note: 'title' is required (got nil)"


def test_call_params_omitted_when_required(bridge: Bridge) -> None:
    kind, message, _ = failure(bridge, "local r = app.integrations.notes.get_note()")
    assert (
        kind == "ValidationError" and "notes.get_note: 'note_id' is required (got nil)" in message
    )


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (
            "limit = '5'",
            "parameter 'limit': Input should be a valid integer (got \"5\" (a string))",
        ),
        ("limit = true", "parameter 'limit': Input should be a valid integer (got true)"),
        ("limit = {}", "parameter 'limit': Input should be a valid integer (got an array of 0"),
        ("tag = 5", "parameter 'tag': Input should be a valid string (got 5 (a number))"),
    ],
)
def test_call_wrong_type(bridge: Bridge, params: str, fragment: str) -> None:
    kind, message, line = failure(
        bridge, f"local x\nlocal r = app.integrations.notes.list_notes({{{params}}})"
    )
    assert (kind, line) == ("ValidationError", 2)
    assert message.startswith("script.lua:2: notes.list_notes: ")
    assert fragment in message


@pytest.mark.parametrize(
    ("limit", "fragment"),
    [(51, "less than or equal to 50 (got 51 (a number))"), (0, "greater than or equal to 1")],
)
def test_call_out_of_range(bridge: Bridge, limit: int, fragment: str) -> None:
    kind, message, _ = failure(
        bridge, f"local r = app.integrations.notes.list_notes({{limit = {limit}}})"
    )
    assert kind == "ValidationError"
    assert "notes.list_notes: parameter 'limit': Input should be " + fragment in message


def test_call_in_range_edges_accepted(bridge: Bridge) -> None:
    src = "return {app.integrations.notes.list_notes({limit = 1}).success, "
    src += "app.integrations.notes.list_notes({limit = 50}).success}"
    assert value_of(bridge, src) == [True, True]


def test_call_too_long_string_shows_value_cut(bridge: Bridge) -> None:
    src = "local r = app.integrations.notes.create_note({title = string.rep('x', 101)})"
    _, message, _ = failure(bridge, src, allow=WRITE)
    assert "parameter 'title': String should have at most 100 characters" in message
    assert '"' + "x" * 57 + '..." (a string)' in message


def test_call_params_omitted_when_none_required(bridge: Bridge) -> None:
    value = value_of(bridge, "return app.integrations.notes.list_notes()")
    assert value == {"success": True, "notes": []}
    assert bridge.run("return app.integrations.notes.list_notes({})").value == value


def test_call_params_not_a_table_refused(bridge: Bridge) -> None:
    kind, message, line = failure(bridge, "local x\nlocal r = app.integrations.notes.list_notes(5)")
    assert (kind, line) == ("ValidationError", 2)
    assert (
        "notes.list_notes: takes one table of named parameters, not 1 positional argument(s); "
        "write notes.list_notes{limit = 5}"
    ) in message
    _, message, _ = failure(bridge, "local r = app.integrations.notes.list_notes(app.null)")
    assert "expected one table of named parameters" in message


def test_call_extra_arguments_refused(bridge: Bridge) -> None:
    _, message, _ = failure(bridge, "local r = app.integrations.notes.list_notes({}, {})")
    assert "notes.list_notes: takes one table of named parameters, got 2 arguments" in message


def test_call_validation_error_catchable(bridge: Bridge) -> None:
    src = "local ok, e = pcall(app.integrations.notes.list_notes, {limit = 99}) return {ok, e}"
    ok, message = value_of(bridge, src)
    assert ok is False and "parameter 'limit'" in message


def test_call_validation_error_never_reaches_handler(bridge: Bridge) -> None:
    bridge.run("app.integrations.notes.create_note({title = 1})", allow=WRITE)
    assert notes_of(bridge, "default") == {}


# -- namespaces ----------------------------------------------------------------------------------


def test_namespace_bare_is_default(bridge: Bridge) -> None:
    src = """
    local a = app.integrations.notes.create_note({title = 'one'})
    local b = app.integrations.notes.default.create_note({title = 'two'})
    local n = app.integrations.notes
    return {a.account, b.account, n.list_notes == n.default.list_notes}
    """
    assert value_of(bridge, src, allow=WRITE) == ["default", "default", True]
    assert sorted(n["title"] for n in notes_of(bridge, "default").values()) == ["one", "two"]


def test_namespace_named_account_uses_own_client(bridge: Bridge) -> None:
    src = """
    local w = app.integrations.notes.work.create_note({title = 'w'})
    return {w.account, #app.integrations.notes.list_notes().notes,
            #app.integrations.notes.work.list_notes().notes}
    """
    assert value_of(bridge, src, allow=WRITE) == ["work", 0, 1]
    work = bridge._client("notes", "work")
    assert work.api_key == NOTES_KEYS["work"]  # type: ignore[attr-defined]
    assert bridge._client("notes", "default").api_key == NOTES_KEYS["default"]  # type: ignore[attr-defined]
    assert [n["title"] for n in notes_of(bridge, "work").values()] == ["w"]


def test_namespace_unknown_account_lists_existing(bridge: Bridge) -> None:
    kind, message, line = failure(
        bridge, "local x\nlocal r = app.integrations.notes.personal.list_notes()"
    )
    assert (kind, line) == ("RuntimeError", 2)
    assert "unknown action or account 'personal'" in message
    assert "accounts in this run: default, work" in message


def test_namespace_unknown_account_suggests(bridge: Bridge) -> None:
    _, message, _ = failure(bridge, "local r = app.integrations.notes.wrok.list_notes()")
    assert "'wrok' (did you mean 'work'?)" in message


@pytest.mark.parametrize("prefix", ["app.integrations.notes", "app.integrations.notes.work"])
def test_namespace_unknown_action_suggests(bridge: Bridge, prefix: str) -> None:
    kind, message, line = failure(bridge, f"local x\nlocal r = {prefix}.creat_note")
    assert (kind, line) == ("RuntimeError", 2)
    assert "'creat_note' (did you mean 'create_note'?)" in message
    assert "actions: get_note, list_notes, create_note, delete_note" in message


def test_namespace_unknown_integration_suggests(bridge: Bridge) -> None:
    _, message, _ = failure(bridge, "return app.integrations.nots")
    assert "unknown integration 'nots' (did you mean 'notes'?); available: notes" in message


@pytest.mark.parametrize(
    "target",
    [
        "app.integrations.notes.list_notes",
        "app.integrations.notes.new_thing",
        "app.integrations.notes.work",
        "app.integrations.notes.work.list_notes",
        "app.integrations.notes",
        "app.integrations.other",
        "app.help",
        "app.json.encode",
    ],
)
def test_namespace_assignment_raises(bridge: Bridge, target: str) -> None:
    """Assigning anywhere in the namespace raises a catchable "read-only" error."""
    src = f"local ok, e = pcall(function() {target} = 1 end) return {{ok, e}}"
    ok, message = value_of(bridge, src)
    assert ok is False
    assert "read-only (cannot set" in message
    uncaught = failure(bridge, f"local x\n{target} = 1")
    assert uncaught[0] == "RuntimeError" and uncaught[2] == 2


def test_namespace_assignment_leaves_binding_working(bridge: Bridge) -> None:
    src = "pcall(function() app.integrations.notes.list_notes = nil end) "
    src += "return app.integrations.notes.list_notes().success"
    assert value_of(bridge, src) is True


@pytest.mark.parametrize(
    "expr",
    [
        "app.nope",
        "app.integrations.notes.nope",
        "app.integrations.notes.work.nope",
        "app.json.nope",
    ],
)
def test_namespace_unknown_name_raises(bridge: Bridge, expr: str) -> None:
    kind, message, line = failure(bridge, f"local x\nlocal y = {expr}")
    assert (kind, line) == ("RuntimeError", 2)
    assert "'nope'" in message


def test_namespace_tostring_is_one_line_summary(bridge: Bridge) -> None:
    value = value_of(
        bridge,
        "return {tostring(app.integrations.notes), tostring(app.integrations.notes.work), "
        "tostring(app.integrations)}",
    )
    summary, account, root = value
    assert "\n" not in summary and "app.help('notes')" in summary
    assert "6 actions" in summary and "accounts: default, work" in summary
    assert account == "<notes account 'work': call app.help('notes') for its actions>"
    assert "app.help()" in root


def test_namespace_tostring_shows_granted_accounts_only(bridge: Bridge) -> None:
    value = value_of(
        bridge, "return tostring(app.integrations.notes)", accounts={"notes": ["work"]}
    )
    assert "accounts: work;" in value


# -- results -------------------------------------------------------------------------------------


def test_result_shaped_by_output_model(bridge: Bridge) -> None:
    """Fields the output model does not declare are dropped, None fields are left out."""
    notes_of(bridge, "default")["n1"] = {
        "note_id": "n1",
        "title": None,
        "tags": ["a"],
        "meta": {},
        "internal_flag": True,
    }
    value = value_of(bridge, "return app.integrations.notes.get_note({note_id = 'n1'})")
    assert value == {
        "success": True,
        "note_id": "n1",
        "tags": ["a"],
        "meta": {},
        "account": "default",
    }


def test_result_remote_failure_returned_not_raised(bridge: Bridge) -> None:
    src = """
    local r = app.integrations.notes.get_note({note_id = 'missing'})
    return {r = r, after = 'still running'}
    """
    value = value_of(bridge, src)
    assert value["after"] == "still running"
    assert value["r"] == {
        "success": False,
        "error": "note missing not found",
        "code": "notes.not_found",
        "status": 404,
        "retryable": False,
    }


def test_result_remote_failure_code_gets_integration_prefix(bridge: Bridge) -> None:
    value = value_of(bridge, "return app.integrations.notes.leak_key()")
    assert value["code"] == "notes.api_error"
    assert value["status"] == 400 and value["retryable"] is False and value["success"] is False


class BrokenIn(ActionInput):
    mode: str = Field(description="how to fail")


class BrokenOut(ActionResult):
    count: int = Field(0, description="a number")


def _broken(ctx: CallContext, p: BrokenIn) -> dict[str, Any]:
    if p.mode == "raise":
        raise KeyError("boom")
    return {"count": "not a number"}


class _Client:
    def __init__(self, settings: AccountSettings) -> None:
        pass

    def close(self) -> None:
        pass


BROKEN = Integration(
    name="broken",
    title="Broken",
    env_prefix="BROKEN",
    default_base_url="https://broken.invalid",
    open_client=_Client,
    actions=(
        Action(
            name="fail",
            summary="Fails inside the handler.",
            input=BrokenIn,
            output=BrokenOut,
            effect="read",
            handler=_broken,
            examples=(Example("app.integrations.broken.fail({mode = 'raise'})"),),
        ),
    ),
)


@pytest.fixture
def broken_bridge() -> Iterator[Bridge]:
    b = Bridge.from_config(
        environ={"BROKEN_API_KEY": "broken-key-123456"},
        integrations=[BROKEN],
        isolation="inprocess",
    )
    yield b
    b.close()


@pytest.mark.parametrize("mode", ["raise", "bad_output"])
def test_result_handler_bug_returned_as_internal_error(broken_bridge: Bridge, mode: str) -> None:
    """A handler that raises or returns a malformed result fails the call, not the host."""
    result = broken_bridge.run(f"return app.integrations.broken.fail({{mode = '{mode}'}})")
    assert result.ok, result.error
    assert result.value["success"] is False
    assert result.value["code"] == "luabridge.internal_error"
    assert "internal error in broken.fail" in result.value["error"]
    assert result.calls[0].outcome == "failed"


def test_result_missing_key_returned_as_config_error() -> None:
    settings = {"default": AccountSettings(name="default", api_key=None, base_url="x")}
    with Bridge(
        integrations=[NOTES], accounts={"notes": settings}, isolation="inprocess"
    ) as keyless:
        value = keyless.run("return app.integrations.notes.list_notes()").value
    assert value["success"] is False and value["code"] == "notes.config_error"
    assert "has no API key; set NOTES_API_KEY" in value["error"]


# -- call records --------------------------------------------------------------------------------


def test_call_record_fields(bridge: Bridge) -> None:
    result = bridge.run(
        "app.integrations.notes.work.create_note({title = 't', tags = {'a'}})", allow=WRITE
    )
    assert result.ok, result.error
    (record,) = result.calls
    assert isinstance(record, CallRecord)
    assert (record.integration, record.account, record.action, record.effect) == (
        "notes",
        "work",
        "create_note",
        "write",
    )
    assert record.params == {"title": "t", "tags": ["a"]}
    assert (record.outcome, record.dry_run) == ("ok", False)
    assert 0 <= record.duration_ms < 5000
    as_dict = record.to_dict()
    assert set(as_dict) == {
        "integration",
        "account",
        "action",
        "effect",
        "params",
        "seq",
        "outcome",
        "duration_ms",
        "dry_run",
    }


def test_call_record_outcomes(bridge: Bridge) -> None:
    src = """
    app.integrations.notes.list_notes()
    app.integrations.notes.get_note({note_id = 'nope'})
    pcall(app.integrations.notes.list_notes, {limit = 'x'})
    pcall(app.integrations.notes.delete_note, {note_id = 'n1'})
    app.integrations.notes.list_notes()
    app.integrations.notes.list_notes()
    """
    result = bridge.run(src, limits={"calls": 5})
    assert result.error is not None and result.error.type == "CallLimitError"
    outcomes = [(c.action, c.outcome) for c in result.calls]
    assert outcomes == [
        ("list_notes", "ok"),
        ("get_note", "failed"),
        ("list_notes", "invalid"),
        ("delete_note", "refused"),
        ("list_notes", "ok"),
        ("list_notes", "limit"),
    ]
    failed = result.calls[1]
    assert (failed.code, failed.status, failed.error) == (
        "notes.not_found",
        404,
        "note nope not found",
    )
    assert "parameter 'limit'" in (result.calls[2].error or "")
    assert "destructive" in (result.calls[3].error or "")


def test_call_record_params_redacted(bridge: Bridge) -> None:
    """A key that reaches a parameter (here through the input) is redacted in the record."""
    key = NOTES_KEYS["work"]
    result = bridge.run(
        "local i = ... return app.integrations.notes.create_note({title = 'k:' .. i.k})",
        input={"k": key},
        allow=WRITE,
    )
    assert result.ok, result.error
    assert result.calls[0].params == {"title": "k:[REDACTED]"}
    assert result.value["title"] == "k:[REDACTED]"
    assert key not in repr(result)


def test_call_records_belong_to_their_run(bridge: Bridge) -> None:
    first = bridge.run("app.integrations.notes.list_notes()")
    second = bridge.run(
        "app.integrations.notes.list_notes() app.integrations.notes.work.list_notes()"
    )
    assert len(first.calls) == 1
    assert [c.account for c in second.calls] == ["default", "work"]
    assert second.usage["calls"] == 2


class UnbuildableOut(ActionResult):
    # A name that exists nowhere: the model cannot be built, which shows only on first use.
    rows: list[NoSuchRow] = Field(default_factory=list, description="never built")  # type: ignore[name-defined]  # noqa: F821


_handler_calls: list[str] = []


def _count_call(ctx: CallContext, p: BrokenIn) -> dict[str, Any]:
    _handler_calls.append(p.mode)
    return {}


def test_unbuildable_output_model_fails_before_the_handler_runs() -> None:
    """A deferred model that cannot be built stops the run before anything is sent."""
    integ = Integration(
        name="unbuildable",
        title="Unbuildable",
        env_prefix="UNBUILDABLE",
        default_base_url="https://unbuildable.invalid",
        open_client=_Client,
        actions=(
            Action(
                name="send",
                summary="Would send something.",
                input=BrokenIn,
                output=UnbuildableOut,
                effect="write",
                handler=_count_call,
                plan=lambda ctx, p: {"method": "POST", "url": "/send"},
                examples=(Example("app.integrations.unbuildable.send({mode = 'x'})"),),
            ),
        ),
    )
    b = Bridge.from_config(
        environ={"UNBUILDABLE_API_KEY": "unbuildable-key-1234"},
        integrations=[integ],
        isolation="inprocess",
    )
    try:
        result = b.run("return app.integrations.unbuildable.send({mode = 'x'})", allow="write")
    finally:
        b.close()
    assert result.error is not None and result.error.type == "InternalError"
    assert _handler_calls == []


def test_redactor_data_reaches_every_string() -> None:
    """Redaction of parameters and results: every string at every level (keys included) loses
    the secret, other values are kept as they are, and the input is left alone."""
    import enum

    from luabridge.redact import REDACTED, Redactor

    class Name(str):
        pass

    class Level(enum.IntEnum):
        HIGH = 3

    key = "s3cret-key-0123"
    value = {
        f"k-{key}": [key, (f"a{key}", 1), {"n": None, "b": True, "f": 0.5, "i": 7}],
        "s": Name(f"x{key}"),
        "e": Level.HIGH,
        "": "",
        Name(key): {"deep": [[f"{key}{key}"]]},
        3: "three",
    }
    before = repr(value)
    out = Redactor([key]).data(value)
    assert out == {
        f"k-{REDACTED}": [REDACTED, [f"a{REDACTED}", 1], {"n": None, "b": True, "f": 0.5, "i": 7}],
        "s": f"x{REDACTED}",
        "e": Level.HIGH,
        "": "",
        REDACTED: {"deep": [[REDACTED + REDACTED]]},
        3: "three",
    }
    assert repr(value) == before
    assert key not in repr(out)
    assert Redactor([]).data(value) is value
