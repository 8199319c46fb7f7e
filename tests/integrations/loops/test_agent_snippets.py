"""Lua the way agents write it, through the Lua surface against the emulator.

One test (or more) per class of snippet that used to fail or mislead: standard Lua that must
work, and mistakes whose message must name the line, say what was wrong and give the fix.
Each message test asserts the line and the fix, so a message that stops repairing fails here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from integrations.loops.emulator import ADA_EMAIL, DEMO_KEYS, NEWSLETTER_LIST_ID
from luabridge import Bridge, RunResult

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

BridgeFactory = Callable[[Mapping[str, str]], Bridge]
ALLOW = {"read", "write"}


@pytest.fixture(scope="module")
def shared_bridge(loops_bridges: BridgeFactory) -> Bridge:
    return loops_bridges({"default": DEMO_KEYS["default"]})


@pytest.fixture
def bridge(shared_bridge: Bridge, emulator: EmulatorServer) -> Bridge:
    return shared_bridge


def run(bridge: Bridge, source: str, **options: Any) -> RunResult:
    options.setdefault("allow", ALLOW)
    return bridge.run(source, **options)


def failure(bridge: Bridge, source: str, **options: Any) -> tuple[str, str, int | None]:
    result = run(bridge, source, **options)
    assert not result.ok and result.error is not None, result.value
    return result.error.type, result.error.message, result.error.line


def sent(emulator: EmulatorServer) -> list[str]:
    """The API paths the emulator served since its reset (its request log)."""
    return [entry["path"] for entry in emulator.requests()]


# --- standard Lua that works --------------------------------------------------------------


def test_snippet_class_with_setmetatable_calls_actions(bridge: Bridge) -> None:
    src = f"""
    local Audience = {{}}
    Audience.__index = Audience
    function Audience.new(loops) return setmetatable({{loops = loops, seen = 0}}, Audience) end
    function Audience:find(email)
      self.seen = self.seen + 1
      return self.loops.find_contact({{email = email}}).contact
    end
    local a = Audience.new(app.integrations.loops)
    local c = a:find("{ADA_EMAIL}")
    return {{c.first_name, a.seen, bit.band(a.seen, 1), rawequal(getmetatable(a), Audience)}}
    """
    result = run(bridge, src)
    assert result.ok, result.error
    assert result.value == ["Ada", 1, 1, True]


def test_snippet_discovers_actions_with_pairs(bridge: Bridge) -> None:
    src = """
    local reads = {}
    for name, f in pairs(app.integrations.loops) do
      if type(f) == "function" and name:find("^list_") then reads[#reads + 1] = name end
    end
    table.sort(reads)
    return reads
    """
    result = run(bridge, src)
    assert result.ok, result.error
    assert "list_contacts" in result.value and "list_mailing_lists" in result.value


# --- messages that repair -------------------------------------------------------------------


def test_snippet_floor_division_points_at_math_floor(bridge: Bridge) -> None:
    kind, message, line = failure(bridge, "local n = 7\nlocal pages = n // 2\nreturn pages")
    assert (kind, line) == ("SyntaxError", 2)
    assert "LuaJIT is Lua 5.1: write math.floor(a / b)" in message


@pytest.mark.parametrize(
    ("line", "fix"),
    [
        ("local x = 6 & 3", "write bit.band(a, b)"),
        ("local x = 6 | 3", "write bit.bor(a, b)"),
        ("local x = 6 ~ 3", "write bit.bxor(a, b)"),
        ("local x = 1 << 4", "write bit.lshift(a, n)"),
        ("local x = 256 >> 4", "write bit.rshift(a, n)"),
        ("if 1 != 2 then end", "write ~= for 'not equal'"),
        ("local x = 1\nx += 1", "Lua has no compound assignment: write x = x + 1"),
    ],
)
def test_snippet_other_languages_operators_get_the_lua_spelling(
    bridge: Bridge, line: str, fix: str
) -> None:
    kind, message, _ = failure(bridge, line + "\nreturn x")
    assert kind == "SyntaxError"
    assert fix in message


def test_snippet_floor_division_in_a_string_gets_no_hint(bridge: Bridge) -> None:
    kind, message, line = failure(bridge, 'local u = "https://example.com" = 1\nreturn u')
    assert (kind, line) == ("SyntaxError", 1) and "math.floor" not in message


@pytest.mark.parametrize(
    "src",
    ['local json = require("json")\nreturn json.encode({a = 1})', "return json.encode({a = 1})"],
)
def test_snippet_json_module_points_at_app_json(bridge: Bridge, src: str) -> None:
    kind, message, line = failure(bridge, src)
    assert (kind, line) == ("RuntimeError", 1)
    assert "app.json.encode(value) and app.json.decode(text)" in message


@pytest.mark.parametrize("src", ["local n = #arg\nreturn n", "local email = arg[1]\nreturn email"])
def test_snippet_arg_points_at_chunk_arguments(bridge: Bridge, src: str) -> None:
    kind, message, line = failure(bridge, src, input={"email": ADA_EMAIL})
    assert (kind, line) == ("RuntimeError", 1)
    assert "write 'local input = ...' on the first line" in message


def test_snippet_colon_call_says_use_dot(bridge: Bridge, emulator: EmulatorServer) -> None:
    src = (
        f'local loops = app.integrations.loops\nreturn loops:find_contact{{email = "{ADA_EMAIL}"}}'
    )
    kind, message, line = failure(bridge, src)
    assert (kind, line) == ("ValidationError", 2)
    assert "called with ':'" in message and "use '.': loops.find_contact{...}" in message
    assert sent(emulator) == []


def test_snippet_positional_call_shows_named_parameters(
    bridge: Bridge, emulator: EmulatorServer
) -> None:
    src = 'local loops = app.integrations.loops\nreturn loops.send_event("a@b.co", "signup")'
    kind, message, line = failure(bridge, src)
    assert (kind, line) == ("ValidationError", 2)
    assert 'write loops.send_event{email = "a@b.co", event_name = "signup"}' in message
    assert sent(emulator) == []


def test_snippet_tail_called_action_gets_its_line(bridge: Bridge) -> None:
    src = (
        "local loops = app.integrations.loops\n"
        f'local r = loops.update_contact{{email = "{ADA_EMAIL}", first_name = "Ada"}}\n'
        "if r.success then\n"
        f'  return loops.update_contact{{email = "{ADA_EMAIL}", frist_name = "B"}}\n'
        "end"
    )
    kind, message, line = failure(bridge, src)
    assert (kind, line) == ("ValidationError", 4)
    assert "unknown parameter 'frist_name' (did you mean 'first_name'?)" in message


def test_snippet_helper_keeps_the_action_call_line(bridge: Bridge) -> None:
    src = (
        "local loops = app.integrations.loops\n"
        "local function rename(email, name)\n"
        "  return loops.update_contact{email = email, frist_name = name}\n"
        "end\n"
        f'local r = rename("{ADA_EMAIL}", "Ada")\n'
        "return r"
    )
    kind, message, line = failure(bridge, src)
    assert (kind, line) == ("ValidationError", 3)
    assert message.startswith("script.lua:3: loops.update_contact: unknown parameter")


def test_snippet_mailing_lists_as_list_shows_the_map_with_its_ids(
    bridge: Bridge, emulator: EmulatorServer
) -> None:
    src = (
        "local loops = app.integrations.loops\n"
        'return loops.create_contact{email = "x@example.com",\n'
        f'  mailing_lists = {{"{NEWSLETTER_LIST_ID}", "id2"}}}}'
    )
    kind, message, line = failure(bridge, src)
    assert (kind, line) == ("ValidationError", 2)
    assert f'write mailing_lists = {{["{NEWSLETTER_LIST_ID}"] = true, ["id2"] = true}}' in message
    assert sent(emulator) == []


def test_snippet_nested_array_in_event_properties_is_one_sentence(bridge: Bridge) -> None:
    src = (
        "local loops = app.integrations.loops\n"
        f'return loops.send_event{{email = "{ADA_EMAIL}", event_name = "signup",\n'
        '  event_properties = {tags = {"a", "b"}}}'
    )
    kind, message, line = failure(bridge, src)
    assert (kind, line) == ("ValidationError", 2)
    assert "must be a string, a number or a boolean (got an array of 2 item(s))" in message
    for noise in (".str", ".int", ".float", ".bool"):
        assert noise not in message
    assert message.count("parameter '") == 1


def test_snippet_number_keys_with_holes_suggest_string_keys(bridge: Bridge) -> None:
    src = (
        "local counts = {}\n"
        "counts[5] = 1\n"
        "counts[9] = 2\n"
        f'return app.integrations.loops.send_event{{email = "{ADA_EMAIL}", event_name = "x",\n'
        "  event_properties = {counts = counts}}"
    )
    kind, message, line = failure(bridge, src)
    assert (kind, line) == ("ValidationError", 4)
    assert "use string keys (counts[tostring(k)] = v)" in message


# --- API behaviour ----------------------------------------------------------------------------


def test_snippet_reused_idempotency_key_is_a_deduplicated_success(
    bridge: Bridge, emulator: EmulatorServer
) -> None:
    """A caller-supplied key Loops has already seen: success = true, deduplicated = true, one
    event recorded."""
    src = f"""
    local loops = app.integrations.loops
    local p = {{email = "{ADA_EMAIL}", event_name = "signup", idempotency_key = "order-1234"}}
    local first = loops.send_event(p)
    local again = loops.send_event(p)
    return {{first.success, first.deduplicated or false, again.success, again.deduplicated,
      again.idempotency_key}}
    """
    result = run(bridge, src)
    assert result.ok, result.error
    assert result.value == [True, False, True, True, "order-1234"]
    assert sent(emulator).count("/api/v1/events/send") == 2
    assert len(emulator.team("default").snapshot("events")) == 1


def property_reads(emulator: EmulatorServer) -> int:
    return sent(emulator).count("/api/v1/contacts/properties")


@pytest.mark.parametrize("action", ["update_contact", "create_contact"])
def test_snippet_unknown_custom_property_is_refused_unsent(
    loops_bridges: BridgeFactory, emulator: EmulatorServer, action: str
) -> None:
    bridge = loops_bridges({"default": DEMO_KEYS["default"]})
    email = ADA_EMAIL if action == "update_contact" else "new@example.com"
    src = (
        f'return app.integrations.loops.{action}{{email = "{email}",\n'
        '  properties = {plan = "pro", favouriteColour = "red"}}'
    )
    result = run(bridge, src)
    assert result.ok, result.error
    value = result.value
    assert value["success"] is False and value["code"] == "loops.unknown_property"
    assert value["retryable"] is False
    assert "no contact property 'favouriteColour'" in value["error"]
    assert 'create_contact_property{name = "favouriteColour", type = "string"}' in value["error"]
    assert "nothing was sent" in value["error"]
    writes = [p for p in sent(emulator) if p.endswith(("/contacts/update", "/contacts/create"))]
    assert writes == []
    # The team's list was read twice: once into the cache, once more on the miss.
    assert property_reads(emulator) == 2


def test_snippet_known_properties_are_read_once_per_ttl(
    loops_bridges: BridgeFactory, emulator: EmulatorServer
) -> None:
    bridge = loops_bridges({"default": DEMO_KEYS["default"]})
    src = f"""
    local loops = app.integrations.loops
    local a = loops.update_contact{{email = "{ADA_EMAIL}", properties = {{plan = "team"}}}}
    local b = loops.update_contact{{email = "{ADA_EMAIL}", properties = {{seats = 9}}}}
    return {{a.success, b.success}}
    """
    assert run(bridge, src).value == [True, True]
    assert run(bridge, src).value == [True, True]
    assert property_reads(emulator) == 1
    contact = emulator.team("default").find_contact(email=ADA_EMAIL)
    assert contact is not None


def test_snippet_property_created_in_the_run_is_accepted(
    loops_bridges: BridgeFactory, emulator: EmulatorServer
) -> None:
    """A miss refreshes the cached list, so a property created a moment ago passes."""
    bridge = loops_bridges({"default": DEMO_KEYS["default"]})
    src = f"""
    local loops = app.integrations.loops
    local warm = loops.update_contact{{email = "{ADA_EMAIL}", properties = {{plan = "pro"}}}}
    local made = loops.create_contact_property{{name = "favouriteColour", type = "string"}}
    local r = loops.update_contact{{email = "{ADA_EMAIL}",
      properties = {{favouriteColour = "red"}}}}
    local found = loops.find_contact{{email = "{ADA_EMAIL}"}}.contact
    return {{warm.success, made.success, r.success, found.properties.favouriteColour}}
    """
    result = run(bridge, src)
    assert result.ok, result.error
    assert result.value == [True, True, True, "red"]


def test_snippet_unknown_property_fails_the_dry_run_plan(
    loops_bridges: BridgeFactory, emulator: EmulatorServer
) -> None:
    bridge = loops_bridges({"default": DEMO_KEYS["default"]})
    src = (
        f'return app.integrations.loops.update_contact{{email = "{ADA_EMAIL}",\n'
        "  properties = {favouriteColour = 'red'}}"
    )
    result = run(bridge, src, dry_run=True)
    assert result.ok, result.error
    assert result.value["code"] == "loops.unknown_property"
    assert result.value["dry_run"] is True


def test_snippet_empty_count_table_comes_back_as_an_object(
    loops_bridges: BridgeFactory, emulator: EmulatorServer
) -> None:
    bridge = loops_bridges({"default": DEMO_KEYS["default"]})
    src = """
    local by_source, emails = {}, {}
    local page = app.integrations.loops.list_contacts{}
    for _, c in ipairs(page.contacts) do
      by_source[c.source or "unknown"] = (by_source[c.source or "unknown"] or 0) + 1
      table.insert(emails, c.email)
    end
    return {total = page.total, by_source = by_source, emails = emails}
    """
    result = run(bridge, src)
    assert result.ok, result.error
    assert result.value == {"total": 0, "by_source": {}, "emails": []}
