"""Docs from metadata: the Markdown reference (seed 001's layout), JSON schemas, LuaLS stubs, and
the same text from inside a script through ``app.help``, ``app.schema`` and ``app.accounts``."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from conftest import NOTES

from luabridge import Bridge, ConfigError
from luabridge.docs import render_markdown

ACTIONS = NOTES.action_names


def sections(markdown: str) -> dict[str, str]:
    """The text of each ``## name`` section, without its heading."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def lua_blocks(text: str) -> list[str]:
    return re.findall(r"```lua\n(.*?)```", text, flags=re.S)


def without_none(value: Any) -> Any:
    """A JSON value as a Lua table gives it back: object members holding null are gone."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


# -- Markdown reference --------------------------------------------------------------------------


def test_markdown_title_and_notes(bridge: Bridge) -> None:
    lines = bridge.docs("notes").splitlines()
    assert lines[0] == "# Notes — Lua API Reference"
    assert lines[2] == "Notes live in memory, one notebook per account."


def test_markdown_one_section_per_action_in_order(bridge: Bridge) -> None:
    headings = re.findall(r"^## (.+)$", bridge.docs("notes"), flags=re.M)
    assert headings == [*ACTIONS, "Multi-Account Usage"]


def test_markdown_sections_separated_by_rules(bridge: Bridge) -> None:
    text = bridge.docs("notes")
    chunks = text.split("\n---\n")
    assert len(chunks) == len(ACTIONS) + 1
    for chunk, name in zip(chunks[1:], [*ACTIONS[1:], "Multi-Account Usage"], strict=True):
        assert chunk.lstrip("\n").startswith(f"## {name}\n")


def test_markdown_section_has_description_parameters_examples(bridge: Bridge) -> None:
    for name, body in sections(bridge.docs("notes")).items():
        if name == "Multi-Account Usage":
            continue
        action = NOTES.action(name)
        assert action is not None
        assert body.lstrip("\n").startswith(action.summary)
        order = [body.index(h) for h in ("### Parameters", "### Returns", "### Examples")]
        assert order == sorted(order), name
        assert len(lua_blocks(body)) == 1


def test_markdown_parameter_table_columns(bridge: Bridge) -> None:
    body = sections(bridge.docs("notes"))["create_note"]
    assert (
        "| Name | Type | Required | Description |\n|------|------|----------|-------------|\n"
        in (body)
    )
    assert "| `title` | string | yes | Title (max length: 100) |" in body
    assert "| `tags` | array of string | no | Tags |" in body
    assert "| `meta` | object | no | Free-form metadata |" in body
    assert '| `body` | string | no | Body text (default: "") |' in body


def test_markdown_defaults_and_limits(bridge: Bridge) -> None:
    body = sections(bridge.docs("notes"))["list_notes"]
    assert (
        "| `limit` | integer | no | How many notes to return (default: 10, min: 1, max: 50) |"
        in (body)
    )
    assert "| `tag` | string | no | Only notes with this tag |" in body


def test_markdown_no_parameters(bridge: Bridge) -> None:
    body = sections(bridge.docs("notes"))["leak_key"]
    assert "### Parameters\n\nNone.\n" in body


def test_markdown_effect_shown_for_writes(bridge: Bridge) -> None:
    docs = sections(bridge.docs("notes"))
    assert "Effect: **write**" in docs["create_note"]
    assert "Effect: **destructive**" in docs["delete_note"]
    assert "Effect:" not in docs["get_note"]


def test_markdown_example_titles_are_comments(bridge: Bridge) -> None:
    (block,) = lua_blocks(sections(bridge.docs("notes"))["list_notes"])
    assert block == "-- List\nlocal r = app.integrations.notes.list_notes({})\n"


def test_markdown_examples_compile(bridge: Bridge) -> None:
    for block in lua_blocks(bridge.docs("notes")):
        result = bridge.run(block.replace("{...}", "{}"), allow={"write", "destructive"})
        assert result.error is None or result.error.type != "SyntaxError", (block, result.error)


def test_markdown_multi_account_names_accounts(bridge: Bridge) -> None:
    body = sections(bridge.docs("notes"))["Multi-Account Usage"]
    assert "app.integrations.notes.function_name({...})" in body
    assert "app.integrations.notes.default.function_name({...})" in body
    assert "app.integrations.notes.work.function_name({...})" in body
    assert "Accounts configured here: `default`, `work`." in body


def test_markdown_without_accounts_says_how_to_add_them() -> None:
    text = render_markdown(NOTES, [])
    assert "No account is configured here yet: set `NOTES_API_KEY`" in text
    assert "`NOTES_API_KEY_<NAME>`" in text


def test_markdown_one_action(bridge: Bridge) -> None:
    text = bridge.docs("notes", "create_note")
    assert text.startswith("## create_note\n")
    in_full = "## create_note" + sections(bridge.docs("notes"))["create_note"]
    assert text.strip() == in_full.strip().removesuffix("---").strip()


def test_docs_unknown_names_are_config_errors(bridge: Bridge) -> None:
    with pytest.raises(ConfigError, match="unknown integration 'nots' \\(did you mean 'notes'"):
        bridge.docs("nots")
    with pytest.raises(ConfigError, match="did you mean 'create_note'"):
        bridge.schema("notes", "creat_note")
    with pytest.raises(ConfigError, match="unknown docs format 'html'"):
        bridge.docs("notes", format="html")


# -- JSON schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIONS)
def test_schema_valid_json_schema(bridge: Bridge, name: str) -> None:
    schema = bridge.schema("notes", name)
    action = NOTES.action(name)
    assert action is not None
    assert (schema["name"], schema["effect"], schema["summary"]) == (
        f"notes.{name}",
        action.effect,
        action.summary,
    )
    for part in ("input", "output"):
        jsonschema.Draft202012Validator.check_schema(schema[part])
        assert schema[part]["type"] == "object"
    assert "success" in schema["output"]["properties"]


def test_schema_input_describes_parameters(bridge: Bridge) -> None:
    schema = bridge.schema("notes", "list_notes")["input"]
    assert set(schema["properties"]) == {"limit", "tag"}
    limit = schema["properties"]["limit"]
    assert (limit["type"], limit["minimum"], limit["maximum"], limit["default"]) == (
        "integer",
        1,
        50,
        10,
    )
    assert schema["additionalProperties"] is False
    assert bridge.schema("notes", "create_note")["input"]["required"] == ["title"]


def test_schema_validates_real_results_and_params(bridge: Bridge) -> None:
    schema = bridge.schema("notes", "create_note")
    params = {"title": "t", "tags": ["a"], "meta": {"k": 1}}
    jsonschema.validate(params, schema["input"])
    result = bridge.run(
        "local p = ... return app.integrations.notes.create_note(p)", input=params, allow={"write"}
    )
    jsonschema.validate(result.value, schema["output"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"titel": "t"}, schema["input"])


def test_schema_bundle_json(bridge: Bridge) -> None:
    bundle = json.loads(bridge.docs("notes", format="json"))
    assert (bundle["integration"], bundle["title"]) == ("notes", "Notes")
    assert list(bundle["actions"]) == ACTIONS
    assert bundle["actions"]["get_note"] == bridge.schema("notes", "get_note")
    assert json.loads(bridge.docs("notes", "get_note", format="json")) == bridge.schema(
        "notes", "get_note"
    )


# -- LuaLS stubs ---------------------------------------------------------------------------------


def test_luals_mentions_every_action(bridge: Bridge) -> None:
    stubs = bridge.docs("notes", format="luals")
    assert stubs.startswith("---@meta\n")
    for name in ACTIONS:
        assert f"function notes_account.{name}(params) end" in stubs
        assert f"---@class notes.{name}.params" in stubs
        assert f"---@class notes.{name}.result" in stubs
        assert f"---@return notes.{name}.result" in stubs


def test_luals_fields_and_accounts(bridge: Bridge) -> None:
    stubs = bridge.docs("notes", format="luals")
    assert "---@field title string Title" in stubs
    assert "---@field limit? integer How many notes to return" in stubs
    assert "---@field tags? string[] Tags" in stubs
    assert "---@field work notes.Account" in stubs
    assert "---@field notes notes.Integration" in stubs
    assert "---@field help fun(topic?: string): string" in stubs


# -- from inside a script ------------------------------------------------------------------------


def test_help_overview_lists_integrations_and_accounts(bridge: Bridge) -> None:
    text = bridge.run("return app.help()").value
    assert "- notes: Notes; accounts in this run: default, work" in text
    for name in ACTIONS:
        action = NOTES.action(name)
        assert action is not None
        assert f"  - notes.{name} [{action.effect}]: {action.summary}" in text


def test_help_integration_equals_docs(bridge: Bridge) -> None:
    assert bridge.run("return app.help('notes')").value == bridge.docs("notes")


def test_help_integration_shows_granted_accounts_only(bridge: Bridge) -> None:
    text = bridge.run("return app.help('notes')", accounts={"notes": ["work"]}).value
    assert "Accounts configured here: `work`." in text


def test_help_action_equals_docs_section(bridge: Bridge) -> None:
    text = bridge.run("return app.help('notes.create_note')").value
    assert text == bridge.docs("notes", "create_note")
    assert text.startswith("## create_note\n") and "### Parameters" in text


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        ("app.help('nope')", "app.help: unknown topic 'nope'"),
        ("app.help('notes.creat_note')", "(did you mean 'create_note'?)"),
        ("app.help(5)", "app.help: expected a string, got a number"),
        ("app.schema('notes')", "app.schema: expected '<integration>.<action>', got 'notes'"),
        ("app.schema('notes.nope')", "app.schema: unknown action 'notes.nope'"),
        ("app.schema()", "app.schema: expected a string, got a nil"),
        ("app.accounts('nots')", "app.accounts: unknown integration 'nots' (did you mean"),
    ],
)
def test_help_bad_topic_raises_at_script_line(bridge: Bridge, call: str, fragment: str) -> None:
    result = bridge.run(f"local x\nlocal y = {call}")
    assert result.error is not None
    assert (result.error.type, result.error.line) == ("RuntimeError", 2)
    assert result.error.message.startswith("script.lua:2: ")
    assert fragment in result.error.message


def test_schema_from_script_is_a_table(bridge: Bridge) -> None:
    src = """
    local s = app.schema('notes.create_note')
    return {kind = type(s), title = s.input.properties.title.type,
            required = s.input.required, all = s}
    """
    value = bridge.run(src).value
    assert (value["kind"], value["title"], value["required"]) == ("table", "string", ["title"])
    assert value["all"] == without_none(bridge.schema("notes", "create_note"))


def test_accounts_from_script(bridge: Bridge) -> None:
    value = bridge.run("return app.accounts('notes')", allow={"write"}, dry_run=True).value
    assert value == [
        {"name": "default", "default": True, "allowed": ["read", "write"], "dry_run": True},
        {"name": "work", "default": False, "allowed": ["read", "write"], "dry_run": True},
    ]
