"""Docs from action metadata: the Markdown reference, JSON schemas and LuaLS stubs.

The Markdown reference has this format, and this module is the only place it lives:

- a title line ``# <Title> — Lua API Reference``, then the integration's notes paragraph;
- one ``## <action>`` section per action, in declaration order, holding the description, the
  effect (for write and destructive actions), ``### Parameters`` as a table with the columns
  Name / Type / Required / Description (or ``None.``), where each description ends with its
  constraints in one parenthesis, e.g. ``(default: 50, min: 1, max: 50)``, and names its accepted
  aliases; ``### Returns`` as a table of the success fields; ``### Examples`` as ``lua`` blocks,
  each example's title as a ``--`` comment;
- ``---`` between sections; last, ``## Multi-Account Usage``, naming the configured accounts.

JSON schemas are pydantic's, by field name (the canonical Lua names). LuaLS stubs declare one
class per action's parameters and result, an account class with every action, and ``app``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from luabridge.action import Action, Integration, built
from luabridge.dispatch import accepted_names, suggest
from luabridge.errors import LuabridgeError

__all__ = [
    "action_schema",
    "help_text",
    "render_luals",
    "render_markdown",
    "render_schema_bundle",
    "render_section",
]

if TYPE_CHECKING:
    from pydantic import BaseModel


@functools.cache
def _base_result_fields() -> frozenset[str]:
    """The fields every result carries (``ActionResult``'s), which the docs list once."""
    from luabridge.models import ActionResult

    return frozenset(ActionResult.model_fields)


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return built(model).model_json_schema(by_alias=False)


def _input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The parameters' schema as a script may write them: each alias is a property too.

    pydantic lists only the canonical names, and input models forbid extra keys, so without
    this a validator (or the LuaLS stubs) would reject a call that the bridge accepts.
    """
    schema = _schema(model)
    props = schema.get("properties", {})
    required = schema.get("required", [])
    either = []
    for alias, canonical in accepted_names(model).items():
        if alias == canonical or canonical not in props or alias in props:
            continue
        node = dict(props[canonical])
        node["description"] = f"Alias of `{canonical}`; give one or the other."
        props[alias] = node
        if canonical in required:
            either.append({"anyOf": [{"required": [canonical]}, {"required": [alias]}]})
    if either:
        names = {e["anyOf"][0]["required"][0] for e in either}
        schema["required"] = [r for r in required if r not in names]
        schema["allOf"] = either
    return schema


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(defs.get(ref.split("/")[-1], {}))
    return node


def _type_name(node: dict[str, Any], defs: dict[str, Any]) -> str:
    node = _resolve(node, defs)
    if "enum" in node:
        return "string (" + " \\| ".join(json.dumps(v) for v in node["enum"]) + ")"
    if "const" in node:
        return json.dumps(node["const"])
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        names = [_type_name(o, defs) for o in options if o.get("type") != "null"]
        unique = list(dict.fromkeys(names))
        return " or ".join(unique) if unique else "null"
    typ = node.get("type")
    if typ == "array":
        items = node.get("items")
        return (
            f"array of {_type_name(items, defs)}" if isinstance(items, dict) and items else "array"
        )
    if typ == "object" or "properties" in node:
        return "object"
    if isinstance(typ, str):
        return typ
    return "any"


def _constraints(node: dict[str, Any], required: bool) -> str:
    bits = []
    if not required and "default" in node and node["default"] is not None:
        bits.append(f"default: {json.dumps(node['default'])}")
    for key, label in (
        ("minimum", "min"),
        ("exclusiveMinimum", "greater than"),
        ("maximum", "max"),
        ("exclusiveMaximum", "less than"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("pattern", "pattern"),
    ):
        if key in node:
            bits.append(f"{label}: {node[key]}")
    for option in node.get("anyOf", []):
        for key, label in (("minimum", "min"), ("maximum", "max"), ("maxLength", "max length")):
            if key in option:
                bits.append(f"{label}: {option[key]}")
    return f" ({', '.join(bits)})" if bits else ""


def _escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _parameter_rows(action: Action) -> list[str]:
    schema = _schema(action.input)
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    names = accepted_names(action.input)
    rows = []
    for name, node in schema.get("properties", {}).items():
        is_req = name in required
        desc = str(node.get("description", "")).rstrip(".")
        aliases = sorted(a for a, canonical in names.items() if canonical == name and a != name)
        if aliases:
            desc += ". Also accepted as " + ", ".join(f"`{a}`" for a in aliases)
        desc += _constraints(node, is_req)
        rows.append(
            f"| `{name}` | {_escape_cell(_type_name(node, defs))} | {'yes' if is_req else 'no'} "
            f"| {_escape_cell(desc)} |"
        )
    return rows


def _return_rows(action: Action) -> list[str]:
    schema = _schema(action.output)
    defs = schema.get("$defs", {})
    rows = ["| `success` | boolean | true when the call did what was asked |"]
    for name, node in schema.get("properties", {}).items():
        if name in _base_result_fields():
            continue
        desc = str(node.get("description", "")).rstrip(".")
        rows.append(f"| `{name}` | {_escape_cell(_type_name(node, defs))} | {_escape_cell(desc)} |")
    rows.append(
        "| `error`, `code`, `status`, `retryable` | string, string, integer, boolean "
        "| set when `success` is false: message, stable code, HTTP status, "
        "whether a retry can help |"
    )
    return rows


def render_section(integration: Integration, action: Action) -> str:
    """One action's ``##`` section (without the trailing ``---``)."""
    lines = [f"## {action.name}", "", action.summary.strip(), ""]
    description = (action.description or "").strip()
    if description and description != action.summary.strip():
        lines += [description, ""]
    if action.effect != "read":
        lines += [
            f"Effect: **{action.effect}**. Allowed only when the run allows `{action.effect}`; "
            "a dry run validates and records the request without sending it.",
            "",
        ]
    lines += ["### Parameters", ""]
    rows = _parameter_rows(action)
    if rows:
        lines += [
            "| Name | Type | Required | Description |",
            "|------|------|----------|-------------|",
        ]
        lines += rows
    else:
        lines.append("None.")
    lines += [
        "",
        "### Returns",
        "",
        "| Field | Type | Description |",
        "|-------|------|-------------|",
    ]
    lines += _return_rows(action)
    lines += ["", "### Examples", "", "```lua"]
    for i, example in enumerate(action.examples):
        if i:
            lines.append("")
        if example.title:
            lines.append(f"-- {example.title}")
        lines.append(example.code.strip("\n"))
    lines.append("```")
    return "\n".join(lines)


def render_markdown(integration: Integration, accounts: Sequence[str] = ()) -> str:
    """The whole Lua API reference of one integration."""
    name = integration.name
    parts = [f"# {integration.title} — Lua API Reference"]
    if integration.docs_notes:
        parts.append(integration.docs_notes.strip())
    for action in integration.actions:
        parts.append(render_section(integration, action))
        parts.append("---")
    named = [a for a in accounts if a != "default"]
    shown = named or list(integration.example_accounts) or ["<account>"]
    account_lines = "\n".join(f"app.integrations.{name}.{a}.function_name({{...}})" for a in shown)
    if accounts:
        configured = ", ".join(f"`{a}`" for a in accounts)
        where = f"Accounts configured here: {configured}."
    else:
        where = (
            f"No account is configured here yet: set `{integration.env_prefix}_API_KEY` for "
            f"`default` and `{integration.env_prefix}_API_KEY_<NAME>` for each named account."
        )
    parts.append(
        "\n".join(
            [
                "## Multi-Account Usage",
                "",
                f"If you have multiple {integration.title} accounts configured, use "
                "account-specific namespaces:",
                "",
                "```lua",
                "-- Default account",
                f"app.integrations.{name}.function_name({{...}})",
                "",
                "-- Explicit default (portable across setups)",
                f"app.integrations.{name}.default.function_name({{...}})",
                "",
                "-- Named accounts",
                account_lines,
                "```",
                "",
                "Every account exposes the same functions; only the credentials differ. "
                "A run sees only the accounts it was granted. " + where,
            ]
        )
    )
    return "\n\n".join(parts) + "\n"


def action_schema(integration: Integration, action: Action) -> dict[str, Any]:
    """Input and output JSON schema of one action, with its metadata."""
    return {
        "name": f"{integration.name}.{action.name}",
        "summary": action.summary,
        "effect": action.effect,
        "endpoint": action.endpoint,
        "input": _input_schema(action.input),
        "output": _schema(action.output),
    }


def render_schema_bundle(integration: Integration) -> dict[str, Any]:
    """Every action's schema, keyed by action name."""
    return {
        "integration": integration.name,
        "title": integration.title,
        "actions": {a.name: action_schema(integration, a) for a in integration.actions},
    }


_LUA_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "object": "table<string, any>",
    "array": "any[]",
    "null": "nil",
}


def _lua_type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    node = _resolve(node, defs)
    if "enum" in node:
        return "|".join(json.dumps(v) for v in node["enum"])
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        names = [_lua_type(o, defs) for o in options if o.get("type") != "null"]
        return "|".join(dict.fromkeys(names)) or "nil"
    typ = node.get("type")
    if typ == "array":
        items = node.get("items")
        if isinstance(items, dict) and items:
            inner = _lua_type(items, defs)
            return f"({inner})[]" if "|" in inner else f"{inner}[]"
        return "any[]"
    if typ == "object" and "properties" not in node:
        return "table<string, any>"
    if "properties" in node:
        return "table"
    return _LUA_TYPES.get(str(typ), "any")


def _lua_class(
    name: str, model: type[BaseModel], lines: list[str], *, aliases: bool = False
) -> None:
    schema = _input_schema(model) if aliases else _schema(model)
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    lines.append(f"---@class {name}")
    for field, node in schema.get("properties", {}).items():
        opt = "" if field in required else "?"
        desc = str(node.get("description", "")).replace("\n", " ")
        lines.append(f"---@field {field}{opt} {_lua_type(node, defs)} {desc}".rstrip())
    lines.append("")


def render_luals(integrations: Sequence[Integration], accounts: dict[str, Sequence[str]]) -> str:
    """LuaLS annotation stubs (``---@meta``) for ``app`` and every integration."""
    lines = [
        "---@meta",
        "-- Generated by scripts/docs from the action metadata; do not edit.",
        "",
    ]
    for integ in integrations:
        prefix = integ.name
        account_class = f"{prefix}.Account"
        for action in integ.actions:
            _lua_class(f"{prefix}.{action.name}.params", action.input, lines, aliases=True)
            _lua_class(f"{prefix}.{action.name}.result", action.output, lines)
        lines.append(f"---@class {account_class}")
        lines.append(f"local {prefix}_account = {{}}")
        lines.append("")
        for action in integ.actions:
            lines.append(f"---{action.summary} [{action.effect}]")
            lines.append(f"---@param params? {prefix}.{action.name}.params")
            lines.append(f"---@return {prefix}.{action.name}.result")
            lines.append(f"function {prefix}_account.{action.name}(params) end")
            lines.append("")
        lines.append(f"---@class {prefix}.Integration: {account_class}")
        lines.append(f"---@field default {account_class}")
        for acc in accounts.get(integ.name, ()):
            if acc != "default":
                lines.append(f"---@field {acc} {account_class}")
        lines.append("")
    lines.append("---@class app.Integrations")
    for integ in integrations:
        lines.append(f"---@field {integ.name} {integ.name}.Integration")
    lines += [
        "",
        "---@class app.Json",
        "---@field encode fun(value: any): string",
        "---@field decode fun(text: string): any",
        "",
        "---@class app",
        "---@field integrations app.Integrations",
        "---@field null table The JSON null: clears a property; marks empty array slots",
        "---@field array fun(t?: table): table Mark a table to convert as a JSON array",
        "---@field object fun(t?: table): table Mark a table to convert as a JSON object",
        "---@field help fun(topic?: string): string The reference: app.help('<name>.<action>')",
        "---@field schema fun(name: string): table Input and output JSON schema of an action",
        "---@field accounts fun(integration: string): table[] This run's accounts and rights",
        "---@field json app.Json",
        "app = {}",
        "",
    ]
    return "\n".join(lines)


def help_text(
    integrations: Mapping[str, Integration],
    accounts: Mapping[str, Sequence[str]],
    topic: str | None,
) -> str:
    """What ``app.help(topic)`` returns: an overview, one reference, or one action's section."""
    if topic is None or topic == "":
        lines = ["luabridge: call app.help('<integration>') or app.help('<integration>.<action>')."]
        for name, each in integrations.items():
            accs = ", ".join(accounts.get(name, ())) or "none"
            lines.append(f"- {name}: {each.title}; accounts in this run: {accs}")
            for act in each.actions:
                lines.append(f"  - {name}.{act.name} [{act.effect}]: {act.summary}")
        return "\n".join(lines) + "\n"
    integ_name, _, action_name = topic.partition(".")
    integ = integrations.get(integ_name)
    if integ is None:
        raise LuabridgeError(
            f"unknown topic '{topic}'{suggest(integ_name, integrations)}; "
            f"integrations: {', '.join(integrations) or 'none'}"
        )
    if not action_name:
        return render_markdown(integ, accounts.get(integ_name, ()))
    action = integ.action(action_name)
    if action is None:
        raise LuabridgeError(
            f"unknown action '{integ_name}.{action_name}'"
            f"{suggest(action_name, integ.action_names)}; "
            f"actions: {', '.join(integ.action_names)}"
        )
    return render_section(integ, action) + "\n"
