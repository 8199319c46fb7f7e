"""Value conversion across the Lua boundary: each rule of ``luabridge.convert``, both directions.

Lua → Python is exercised through what a script returns and what it passes to an action; Python
→ Lua through the run's input, action results and ``app.json.decode``. Property tests round-trip
arbitrary JSON-compatible values through all of them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import NOTES, make_bridge
from hypothesis import given, settings, strategies as st

from luabridge import Bridge, Limits
from luabridge.convert import MAX_DEPTH, copy_json, decode_lua_json, shape_for_schema
from luabridge.errors import ValidationError
from luabridge.sandbox import _State

WRITE = {"write"}


def value_of(bridge: Bridge, src: str, **options: Any) -> Any:
    result = bridge.run(src, **options)
    assert result.ok, result.error
    return result.value


def refused(bridge: Bridge, src: str, fragment: str, **options: Any) -> str:
    """Run ``src``, expect a ValidationError whose message holds ``fragment``; return it."""
    result = bridge.run(src, **options)
    assert not result.ok, result.value
    assert result.error is not None
    assert result.error.type == "ValidationError", result.error
    assert fragment in result.error.message, result.error.message
    return result.error.message


def nested(depth: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


def lua_nested(depth: int) -> str:
    """Lua building ``depth`` tables nested in one another, the innermost holding 1."""
    return f"local t = 1 for i = 1, {depth} do t = {{t}} end"


# -- Lua → Python: scalars -----------------------------------------------------------------------


def test_result_nil_is_none(bridge: Bridge) -> None:
    assert value_of(bridge, "return nil") is None


def test_result_null_is_none(bridge: Bridge) -> None:
    assert value_of(bridge, "return {a = app.null, b = {app.null}}") == {"a": None, "b": [None]}


def test_result_booleans_and_strings_unchanged(bridge: Bridge) -> None:
    value = value_of(bridge, 'return {true, false, "", "héllo\\0world", "\\n\\t\\"\\\\"}')
    assert value == [True, False, "", "héllo\0world", '\n\t"\\']


def test_result_integral_number_is_int(bridge: Bridge) -> None:
    value = value_of(bridge, "return {3, 3.0, -7, 2^53, -2^53, 0}")
    assert value == [3, 3, -7, 2**53, -(2**53), 0]
    assert all(type(v) is int for v in value)


def test_result_fractional_or_huge_number_is_float(bridge: Bridge) -> None:
    value = value_of(bridge, "return {1.5, -0.25, 2^53 * 4, 1e300, 0.1}")
    assert value == [1.5, -0.25, float(2**55), 1e300, 0.1]
    assert all(type(v) is float for v in value)


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [("0/0", "NaN"), ("math.huge", "infinity"), ("-math.huge", "infinity")],
)
def test_result_non_finite_number_refused(bridge: Bridge, expr: str, fragment: str) -> None:
    message = refused(bridge, f"return {{x = {{1, {expr}}}}}", fragment)
    assert "(at result.x[2])" in message


# -- Lua → Python: tables ------------------------------------------------------------------------


def test_result_sequence_is_list(bridge: Bridge) -> None:
    assert value_of(bridge, "return {'a', 'b', {1, 2}}") == ["a", "b", [1, 2]]


def test_result_string_keys_are_object(bridge: Bridge) -> None:
    assert value_of(bridge, "return {a = 1, ['b c'] = {d = true}}") == {"a": 1, "b c": {"d": True}}


def test_result_empty_table_is_array(bridge: Bridge) -> None:
    assert value_of(bridge, "return {x = {}}") == {"x": []}


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        (
            "local counts = {}\n"
            "for _, c in ipairs({}) do counts[c] = (counts[c] or 0) + 1 end\n"
            "return {counts = counts}",
            {"counts": {}},
        ),
        (
            "local seen = {}\nfor k, v in pairs({}) do seen[k] = v end\nreturn seen",
            {},
        ),
        (
            "local stats = {}\nif false then stats.total = 1 end\n"
            "return {by_source = stats, rows = {{stats = stats}}}",
            {"by_source": {}, "rows": [{"stats": {}}]},
        ),
        (
            'local m = {}\nif false then m["k"] = 1 end\nreturn {m = m}',
            {"m": {}},
        ),
    ],
)
def test_result_empty_map_built_with_string_keys_is_object(
    bridge: Bridge, src: str, expected: Any
) -> None:
    """An empty table the script fills with string keys keeps its object shape."""
    assert value_of(bridge, src) == expected


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        (
            "local tags = {}\nfor _, t in ipairs({}) do table.insert(tags, t) end\n"
            "return {tags = tags}",
            {"tags": []},
        ),
        (
            "local ids = {}\nfor _, t in ipairs({}) do ids[#ids + 1] = t end\nreturn {ids = ids}",
            {"ids": []},
        ),
        ("local rows = {}\nfor i = 1, 0 do rows[i] = i end\nreturn {rows = rows}", {"rows": []}),
        (
            "local out = {}\nfor i, v in ipairs({}) do out[i] = v end\nreturn {out = out}",
            {"out": []},
        ),
        (
            "local out, n = {}, 0\nfor _, v in ipairs({}) do n = n + 1 out[n] = v end\n"
            "return {out = out}",
            {"out": []},
        ),
        ("local m = {}\nif false then m.x = 1 end\nreturn {other = {}}", {"other": []}),
        ("local m = {}\nif false then m.x = 1 end\nreturn app.json.encode({m = m})", '{"m":[]}'),
    ],
)
def test_result_empty_list_stays_array(bridge: Bridge, src: str, expected: Any) -> None:
    """Appended-to tables, number-indexed tables and unrelated empty tables stay arrays (and
    app.json.encode keeps the plain rule)."""
    assert value_of(bridge, src) == expected


def test_result_object_marker_forces_object(bridge: Bridge) -> None:
    value = value_of(bridge, "return {e = app.object{}, f = app.object({a = 1}), g = app.object()}")
    assert value == {"e": {}, "f": {"a": 1}, "g": {}}


def test_result_array_marker_forces_array(bridge: Bridge) -> None:
    assert value_of(bridge, "return {app.array{}, app.array{1, 2}, app.array()}") == [
        [],
        [1, 2],
        [],
    ]


def test_result_array_marker_with_string_keys_refused(bridge: Bridge) -> None:
    refused(bridge, "return app.array{a = 1}", "mixes string keys")


def test_result_marker_refuses_non_table(bridge: Bridge) -> None:
    result = bridge.run("\nreturn app.array('x')")
    assert result.error is not None and "app.array: expected a table, got a string" in (
        result.error.message
    )


def test_result_cycle_refused(bridge: Bridge) -> None:
    message = refused(bridge, "local t = {a = {}} t.a.back = t return t", "cycle")
    assert "(at result.a.back)" in message


def test_result_shared_table_not_a_cycle(bridge: Bridge) -> None:
    """The same table twice, side by side, is fine: only a table inside itself is a cycle."""
    assert value_of(bridge, "local s = {1} return {s, s}") == [[1], [1]]


def test_result_depth_at_limit_accepted(bridge: Bridge) -> None:
    assert value_of(bridge, lua_nested(MAX_DEPTH) + " return t") == nested(MAX_DEPTH)


def test_result_depth_over_limit_refused(bridge: Bridge) -> None:
    refused(bridge, lua_nested(MAX_DEPTH + 1) + " return t", f"nested deeper than {MAX_DEPTH}")


def test_result_function_refused(bridge: Bridge) -> None:
    message = refused(bridge, "return {f = print}", "a function cannot be converted")
    assert message.endswith("(at result.f)")


def test_result_coroutine_refused(bridge: Bridge) -> None:
    refused(bridge, "return {coroutine.create(print)}", "a thread cannot be converted")


def test_result_userdata_refused() -> None:
    """A userdata (here a Python object smuggled in by the host) is refused by the encoder."""

    class Host:
        spec: dict[str, Any] = {}  # noqa: RUF012 - a test double, never mutated

    state = _State()
    runner = state.start(Host(), Limits(), time.monotonic() + 5)  # type: ignore[arg-type]
    status, kind, message, *_ = runner(b"local u = ... return {u}", object())
    assert (status, kind) == (b"error", b"ValidationError")
    assert b"a userdata cannot be converted" in message


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ("{1, 2, a = 3}", "mixes string keys and array items"),
        ("{[true] = 1}", "has a boolean key"),
        ("{[1.5] = 1}", "has a number key"),
        ("{[0] = 1}", "has a number key"),
        ("{[-1] = 1}", "has a number key"),
        ("{[{}] = 1}", "has a table key"),
    ],
)
def test_result_bad_keys_refused(bridge: Bridge, table: str, fragment: str) -> None:
    refused(bridge, f"return {table}", fragment)


def test_result_holes_refused(bridge: Bridge) -> None:
    refused(bridge, "return {1, nil, 3}", "table has number keys with gaps")
    refused(bridge, "local t = {} t[2] = 'x' return t", "use string keys (t[tostring(k)] = v)")


def test_result_key_with_nul_refused(bridge: Bridge) -> None:
    refused(bridge, "return {['a\\0b'] = 1}", "NUL")


@pytest.mark.parametrize(
    "src", ["return '\\255'", "return {['\\192\\128'] = 1}", "return 'a\\237\\160\\128'"]
)
def test_result_invalid_utf8_refused(bridge: Bridge, src: str) -> None:
    refused(bridge, src, "not valid UTF-8")


def test_result_valid_multibyte_utf8_kept(bridge: Bridge) -> None:
    assert value_of(bridge, "return '\\226\\130\\172 \\240\\159\\152\\128'") == "€ 😀"


# -- Lua → Python: action parameters -------------------------------------------------------------


def stored_note(bridge: Bridge, account: str = "default") -> dict[str, Any]:
    client = bridge._client("notes", account)
    (note,) = client.notes.values()  # type: ignore[attr-defined]
    return note  # type: ignore[no-any-return]


def test_params_empty_table_for_array_field_is_list(bridge: Bridge) -> None:
    value_of(
        bridge,
        "local r = app.integrations.notes.create_note({title = 't', tags = {}})",
        allow=WRITE,
    )
    assert stored_note(bridge)["tags"] == []


def test_params_empty_table_for_object_field_is_dict(bridge: Bridge) -> None:
    result = bridge.run(
        "return app.integrations.notes.create_note({title = 't', meta = {}})", allow=WRITE
    )
    assert result.ok and result.value["meta"] == {}
    assert stored_note(bridge)["meta"] == {}
    assert result.calls[0].params == {"title": "t", "meta": {}}


def test_params_object_marker_for_array_field_refused(bridge: Bridge) -> None:
    src = (
        "local x = 1\n"
        "local r = app.integrations.notes.create_note({title = 't', tags = app.object{}})"
    )
    message = refused(bridge, src, "parameter 'tags'", allow=WRITE)
    assert message.startswith("script.lua:2: notes.create_note:")


def test_params_integer_field_refuses_fraction(bridge: Bridge) -> None:
    message = refused(
        bridge, "local r = app.integrations.notes.list_notes({limit = 1.5})", "valid integer"
    )
    assert "'limit'" in message and "1.5" in message


def test_params_integer_field_accepts_integral_float(bridge: Bridge) -> None:
    assert value_of(bridge, "return app.integrations.notes.list_notes({limit = 5.0})")["success"]


def test_params_float_field_accepts_int(bridge: Bridge) -> None:
    result = bridge.run(
        "return app.integrations.notes.create_note({title = 't', score = 1})", allow=WRITE
    )
    assert result.ok and result.value["success"] is True


def test_params_null_is_none(bridge: Bridge) -> None:
    assert value_of(bridge, "return app.integrations.notes.list_notes({tag = app.null})")["success"]


def test_params_null_in_array_survives(bridge: Bridge) -> None:
    src = "app.integrations.notes.create_note({title = 't', meta = {xs = {1, app.null, 3}}})"
    value_of(bridge, src, allow=WRITE)
    assert stored_note(bridge)["meta"] == {"xs": [1, None, 3]}


@pytest.mark.parametrize(
    ("param", "fragment"),
    [
        ("title = '\\255'", "string is not valid UTF-8 (at params.title)"),
        ("title = 't', meta = {['\\255'] = 1}", "not valid UTF-8"),
        (
            "title = 't', meta = {a = 0/0}",
            "NaN cannot be converted; use a number or app.null (at params.meta.a)",
        ),
        ("title = 't', meta = {a = math.huge}", "infinity"),
        ("title = print", "a function cannot be converted"),
        ("title = coroutine.create(print)", "a thread cannot be converted"),
        ("title = 't', meta = {1, a = 2}", "mixes string keys"),
        ("title = 't', meta = {[true] = 1}", "boolean key"),
        ("title = 't', tags = {'a', nil, 'c'}", "gaps"),
    ],
)
def test_params_unconvertible_value_refused(bridge: Bridge, param: str, fragment: str) -> None:
    """Each refusal is a ValidationError naming the action and the path, raised at the call line."""
    src = f"local x = 1\nlocal r = app.integrations.notes.create_note({{{param}}})\nreturn r"
    message = refused(bridge, src, fragment, allow=WRITE)
    assert message.startswith("script.lua:2: notes.create_note: ")
    assert bridge.run(src, allow=WRITE).error.line == 2  # type: ignore[union-attr]


def test_params_cycle_refused(bridge: Bridge) -> None:
    src = "local m = {} m.self = m\napp.integrations.notes.create_note({title = 't', meta = m})"
    refused(bridge, src, "cycle", allow=WRITE)


def test_params_depth_limit(bridge: Bridge) -> None:
    call = (
        "local r = app.integrations.notes.create_note({title = 't', meta = {x = t}}) "
        "return r.success"
    )
    # params (1) and meta (2) hold the nested tables, so MAX_DEPTH - 2 of them still fit.
    assert value_of(bridge, lua_nested(MAX_DEPTH - 2) + " " + call, allow=WRITE) is True
    refused(bridge, lua_nested(MAX_DEPTH - 1) + " " + call, "nested deeper", allow=WRITE)


def test_params_invalid_utf8_never_reaches_handler(bridge: Bridge) -> None:
    bridge.run("app.integrations.notes.create_note({title = '\\255'})", allow=WRITE)
    assert bridge._client("notes", "default").notes == {}  # type: ignore[attr-defined]


# -- Python → Lua: input -------------------------------------------------------------------------


def test_input_none_is_nil(bridge: Bridge) -> None:
    assert value_of(bridge, "local i = ... return i == nil") is True


def test_input_none_in_dict_reads_as_nil(bridge: Bridge) -> None:
    src = "local i = ... return {i.a == nil, i.b}"
    assert value_of(bridge, src, input={"a": None, "b": 1}) == [True, 1]


def test_input_none_in_list_is_null(bridge: Bridge) -> None:
    src = "local i = ... return {i[2] == app.null, #i, i}"
    assert value_of(bridge, src, input=[1, None, 3]) == [True, 3, [1, None, 3]]


def test_input_empty_dict_and_list_keep_shape(bridge: Bridge) -> None:
    src = "local i = ... return {i, app.json.encode(i)}"
    value = value_of(bridge, src, input={"d": {}, "l": [], "n": {"x": None}})
    assert value[0] == {"d": {}, "l": [], "n": {}}
    assert json.loads(value[1]) == {"d": {}, "l": [], "n": {}}


def test_input_scalars(bridge: Bridge) -> None:
    src = "local i = ... return {type(i.s), type(i.n), type(i.f), type(i.b), i.s, i.f}"
    value = value_of(bridge, src, input={"s": "é", "n": 3, "f": 0.5, "b": False})
    assert value == ["string", "number", "number", "boolean", "é", 0.5]


def test_input_tuple_is_array(bridge: Bridge) -> None:
    assert value_of(bridge, "local i = ... return i", input=(1, "a")) == [1, "a"]


def test_input_big_int_becomes_float(bridge: Bridge) -> None:
    value = value_of(bridge, "local i = ... return i", input=[2**53, 2**60])
    assert value == [2**53, float(2**60)]
    assert type(value[0]) is int and type(value[1]) is float


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (math.nan, "input: nan cannot be sent"),
        ({"a": [math.inf]}, "input.a[1]: inf cannot be sent"),
        ({"a": -math.inf}, "input.a: -inf"),
        ({1: "a"}, "input: object key 1 is not a string"),
        ({"a": {True: 1}}, "object key True is not a string"),
        ({"s": {1, 2}}, "input.s: a Python set cannot be sent"),
        (b"bytes", "a Python bytes cannot be sent"),
        ([object()], "a Python object cannot be sent"),
        ("\ud800", "not valid UTF-8"),
        ({"\udfff": 1}, "not valid UTF-8"),
        (nested(MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH}"),
    ],
)
@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_input_unconvertible_refused(
    bridge: Bridge, process_bridge: Bridge, data: Any, fragment: str, isolation: str
) -> None:
    """Bad input fails the run with a ValidationError in both isolation modes, never a crash."""
    chosen = process_bridge if isolation == "process" else bridge
    result = chosen.run("return 'ran'", input=data)
    assert result.error is not None and result.error.type == "ValidationError", result.error
    assert fragment in result.error.message
    assert chosen.run("return 'next'").value == "next"


def test_input_depth_at_limit_accepted(bridge: Bridge) -> None:
    assert value_of(bridge, "local i = ... return i", input=nested(MAX_DEPTH)) == nested(MAX_DEPTH)


def test_input_is_not_shared_with_caller(bridge: Bridge) -> None:
    data = {"l": [1]}
    value_of(bridge, "local i = ... i.l[1] = 2 i.x = 1 return i", input=data)
    assert data == {"l": [1]}


# -- Python → Lua: action results and app.json.decode --------------------------------------------


def test_action_result_null_in_object_is_nil_in_array_is_null(bridge: Bridge) -> None:
    bridge._client("notes", "default").notes["n9"] = {  # type: ignore[attr-defined]
        "note_id": "n9",
        "title": None,
        "tags": [],
        "meta": {"gone": None, "xs": [1, None, 3], "empty": {}, "list": []},
    }
    src = """
    local n = app.integrations.notes.get_note({note_id = "n9"})
    return {title_nil = n.title == nil, gone_nil = n.meta.gone == nil,
            hole = n.meta.xs[2] == app.null, len = #n.meta.xs, meta = n.meta}
    """
    value = value_of(bridge, src)
    assert value == {
        "title_nil": True,
        "gone_nil": True,
        "hole": True,
        "len": 3,
        "meta": {"xs": [1, None, 3], "empty": {}, "list": []},
    }


def test_action_result_is_plain_table(bridge: Bridge) -> None:
    src = """
    local r = app.integrations.notes.list_notes({})
    local keys = {}
    for k in pairs(r) do keys[#keys + 1] = k end
    table.sort(keys)
    r.extra = 1
    return {keys = keys, extra = r.extra, tags = type(r.notes)}
    """
    assert value_of(bridge, src) == {"keys": ["notes", "success"], "extra": 1, "tags": "table"}


def test_json_decode_null_rules(bridge: Bridge) -> None:
    src = """local v = app.json.decode('{"a": null, "l": [1, null], "o": {}, "e": []}')
    return {v.a == nil, v.l[2] == app.null, app.json.encode(v.o), app.json.encode(v.e)}"""
    assert value_of(bridge, src) == [True, True, "{}", "[]"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{bad", "not valid JSON"),
        ("[NaN]", "nan cannot be sent"),
        ("1e999", "inf cannot be sent"),
        ('"\\ud800"', "not valid UTF-8"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper"),
        ("[" * 100_000, "app.json.decode"),
    ],
)
def test_json_decode_refusals_are_validation_errors(
    bridge: Bridge, text: str, fragment: str
) -> None:
    src = f"local x = 1\nlocal v = app.json.decode({json.dumps(text)})\nreturn v"
    message = refused(bridge, src, fragment)
    assert message.startswith("script.lua:2:")


def test_json_encode_refusal_is_validation_error_with_line(bridge: Bridge) -> None:
    src = "local x = 1\nlocal s = app.json.encode({f = print})\nreturn s"
    message = refused(bridge, src, "app.json.encode: a function cannot be converted")
    assert message.endswith("(at value.f)")
    assert message.startswith("script.lua:2:")


def test_json_encode_refusal_catchable(bridge: Bridge) -> None:
    src = "local ok, e = pcall(app.json.encode, 0/0) return {ok, e}"
    ok, message = value_of(bridge, src)
    assert ok is False and "NaN" in message


# -- direct: the helpers of luabridge.convert ----------------------------------------------------


def test_decode_lua_json_accepts_bytes_and_text() -> None:
    assert decode_lua_json(b'{"a": [1, null]}') == {"a": [1, None]}
    assert decode_lua_json('"\\u00e9"') == "é"


def test_copy_json_copies_deeply() -> None:
    data = {"a": [1, {"b": None}], "t": (1, 2)}
    copy = copy_json(data)
    assert copy == {"a": [1, {"b": None}], "t": [1, 2]}
    copy["a"][1]["b"] = 2
    assert data["a"][1] == {"b": None}


def test_copy_json_names_path() -> None:
    with pytest.raises(ValidationError, match=r"^input\.a\[2\]: a Python set"):
        copy_json({"a": [1, set()]}, path="input")


def test_shape_for_schema_only_touches_object_fields() -> None:
    create = NOTES.action("create_note")
    assert create is not None
    shaped = shape_for_schema({"tags": [], "meta": [], "title": "t"}, create.input)
    assert shaped == {"tags": [], "meta": {}, "title": "t"}


# -- property tests ------------------------------------------------------------------------------

KEYS = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=12)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=16,
)


def expected(value: Any) -> Any:
    """What a value looks like after a trip through Lua: dict entries holding None are gone."""
    if isinstance(value, dict):
        return {k: expected(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [expected(v) for v in value]
    return value


@pytest.fixture(scope="module")
def shared_bridge() -> Iterator[Bridge]:
    b = make_bridge()
    yield b
    b.close()


@pytest.fixture(scope="module")
def process_bridge() -> Iterator[Bridge]:
    b = make_bridge(isolation="process", workers=1)
    yield b
    b.close()


@settings(max_examples=150, deadline=None)
@given(value=JSON_VALUES)
def test_roundtrip_input_to_result(shared_bridge: Bridge, value: Any) -> None:
    result = shared_bridge.run("local input = ... return input", input=value)
    assert result.ok, result.error
    assert result.value == expected(value)


@settings(max_examples=100, deadline=None)
@given(value=JSON_VALUES)
def test_roundtrip_through_app_json(shared_bridge: Bridge, value: Any) -> None:
    src = (
        "local input = ... local text = app.json.encode(input) return {text, app.json.decode(text)}"
    )
    result = shared_bridge.run(src, input=[value])
    assert result.ok, result.error
    text, decoded = result.value
    assert json.loads(text) == [expected(value)]
    assert decoded == [expected(value)]


@settings(max_examples=50, deadline=None)
@given(meta=st.dictionaries(KEYS, JSON_VALUES, max_size=4))
def test_roundtrip_through_action(shared_bridge: Bridge, meta: dict[str, Any]) -> None:
    """A free-form object parameter reaches the handler and comes back in the result unchanged."""
    src = "local m = ... return app.integrations.notes.create_note({title = 't', meta = m}).meta"
    result = shared_bridge.run(src, input=meta, allow=WRITE)
    assert result.ok, result.error
    assert result.value == expected(meta)


# -- Python → Lua: large values go as JSON text ------------------------------------------------
#
# A value with convert.JSON_PATH_ITEMS items or more is written with json.dumps and built by the
# state's trusted decoder (lua/json.lua); smaller ones with table_from. The decoder never decides
# what is valid: whatever it cannot carry exactly goes the table_from way. So both ways must give
# the same outcome, value or error, for every value.

WEIRD = (
    SCALARS
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from(
        [math.nan, math.inf, -0.0, 5e-324, 1.7976931348623157e308, "\ud800", 'a"b\\c\n\t\x01\x7f']
    )
)
WEIRD_VALUES = st.recursive(
    WEIRD,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(
            KEYS | st.integers(0, 3) | st.sampled_from(["\udfff", "k\0"]), inner, max_size=4
        )
    ),
    max_leaves=16,
)


def _execute(value: Any, threshold: int, monkeypatch: pytest.MonkeyPatch) -> Any:
    import luabridge.convert as convert
    from luabridge.sandbox import execute

    monkeypatch.setattr(convert, "JSON_PATH_ITEMS", threshold)
    host = _EmptyHost()
    outcome = execute("local v = ... return {v}", value, host=host, limits=Limits())
    return outcome.ok, outcome.value, outcome.error


class _EmptyHost:
    spec: dict[str, Any] = {}  # noqa: RUF012 - the Host protocol names a plain attribute

    def call(self, *args: Any) -> Any:
        return ("raise", "no actions", "RuntimeError")

    help = schema = accounts = call

    def explain(self, *args: Any) -> str:
        return "unknown name"


@settings(max_examples=300, deadline=None)
@given(value=WEIRD_VALUES)
def test_input_json_path_same_outcome_as_tables(value: Any) -> None:
    with pytest.MonkeyPatch.context() as mp:
        via_json = _execute(value, 0, mp)
        via_tables = _execute(value, 10**9, mp)
    assert via_json[:2] == via_tables[:2]
    got, want = via_json[2], via_tables[2]
    if want is not None and want["message"].startswith("input"):
        assert got == want  # the input's conversion: the same message, naming the same place
    elif want is not None:
        # Refused by the encoder on the way back: which bad key it meets first follows Lua's
        # table order, which neither way fixes; the error is the same but for its place.
        assert got is not None and got["type"] == want["type"]
        assert got["message"].split(" (at ")[0] == want["message"].split(" (at ")[0]
    else:
        assert got is None


@pytest.mark.parametrize(
    "value",
    [
        [2**53 + 1, 2**63, -(2**63) - 1, 10**20 + 1, 12345678901234567890123],
        [0.1, 1 / 3, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e16, 1e-7],
        ["", "é", "日本語", "😀", 'q"b\\n\x00\x01\x1f\x7f', "\u2028", "a\nb\rc\td\be\ff"],
        {"": 1, "é": 3, 'q"b': 4, "a\\b": 5, "\n": 6},
        {"d": {}, "l": [], "n": {"x": None}, "m": [None, {}, []]},
        nested(MAX_DEPTH - 1),
        # Objects get room for as many entries as the last one at their depth: sizes that
        # change from row to row, rows holding only nulls, and one of 40 keys among small ones.
        [{f"k{j}": j for j in range(i % 40)} | {"x": None} for i in range(300)],
        [
            {"a": {f"k{j}": [j, {"n": None}] for j in range(40)}},
            *({"a": {"b": i}} for i in range(200)),
        ],
    ],
)
def test_input_json_path_edge_values(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Numbers, strings, keys and shapes that need care arrive exactly as table_from makes them."""
    via_json = _execute(value, 0, monkeypatch)
    assert via_json[0], via_json[2]
    assert via_json == _execute(value, 10**9, monkeypatch)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({1: "a"}, "object key 1 is not a string"),
        ({True: 1}, "object key True is not a string"),
        (math.nan, "nan cannot be sent"),
        ("\ud800", "not valid UTF-8"),
        ((1, 2), None),
        (nested(MAX_DEPTH), f"nested deeper than {MAX_DEPTH}"),
        (10**400, None),
    ],
)
def test_input_large_value_refused_as_before(
    bridge: Bridge, bad: Any, fragment: str | None
) -> None:
    """One bad item deep inside a value large enough for the JSON path: the same outcome (the
    same message, naming the same place) as for a small value holding it."""
    import luabridge.convert as convert

    rows = [{"id": i, "name": f"n{i}"} for i in range(convert.JSON_PATH_ITEMS)]
    big = {"rows": rows, "last": {"x": [bad]}}
    small = {"rows": rows[:1], "last": {"x": [bad]}}
    got, want = bridge.run("return 1", input=big), bridge.run("return 1", input=small)
    assert (got.ok, got.value) == (want.ok, want.value)
    if fragment is not None:
        assert got.error is not None and want.error is not None
        assert got.error.message == want.error.message
        assert fragment in got.error.message and "input.last.x[1]" in got.error.message


def test_action_result_large_goes_through_decoder(bridge: Bridge) -> None:
    """A large app.json.decode result (and so an action's) comes back exactly; the hook still
    counts after the decoder ran with the JIT on."""
    src = """
    local parts = {}
    local row = '{"id":%d,"name":"n\\\\"%d","x":null,"l":[null,{}]}'
    for i = 1, 2000 do parts[i] = string.format(row, i, i) end
    local v = app.json.decode("[" .. table.concat(parts, ",") .. "]")
    local ok = #v == 2000 and v[7].name == 'n"7' and v[7].x == nil and v[7].l[1] == app.null
    ok = ok and getmetatable(v[7].l[2]) == "app.object"
    return {ok, v[2000]}
    """
    assert value_of(bridge, src) == [True, {"id": 2000, "name": 'n"2000', "l": [None, {}]}]
    hot = src.replace("return {ok, v[2000]}", "local x = 0 for i = 1, 1e15 do x = x + i % 7 end")
    result = bridge.run(hot, limits={"instructions": 20_000_000})
    assert result.error is not None and result.error.type == "InstructionLimitError"


def test_input_json_path_taken_for_plain_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests above compare something: a plain value at the threshold goes as JSON text, and
    one item short of it does not even try."""
    import luabridge.convert as convert

    built: list[Any] = []
    real = convert._via_json
    monkeypatch.setattr(
        convert,
        "_via_json",
        lambda v, m, *cap: built.append(real(v, m, *cap)[0]) or real(v, m, *cap),
    )
    # 1 + 3n items: the smallest n that reaches the threshold.
    n = -(-(convert.JSON_PATH_ITEMS - 1) // 3)
    value = {"rows": [{"id": i, "s": "é\n"} for i in range(n)]}
    assert _execute(value, convert.JSON_PATH_ITEMS, monkeypatch)[1] == [value]
    assert built == [True]
    value["rows"].pop()
    assert _execute(value, convert.JSON_PATH_ITEMS, monkeypatch)[1] == [value]
    assert built == [True]


def test_input_json_path_leaves_no_garbage_after_giving_up() -> None:
    """When the decoder gives up, the host collects what it left (the text, the tables built so
    far) before building the value the usual way, which happens outside any protected call; and
    a value whose text would not fit with room to spare never goes as text."""
    import luabridge.convert as convert
    from luabridge.sandbox import _State

    state = _State()
    state.start(_EmptyHost(), Limits(memory=64 << 20), time.monotonic() + 60)
    session = state.session
    markers = session.markers
    assert markers is not None and session.lua is not None
    rows = [{"id": i, "name": "x" * 200} for i in range(5000)]
    before = session.lua.get_memory_used()
    # A number beyond a double makes the decoder give up near the end of 1 MB of text.
    assert convert._via_json([*rows, 10**400], markers) == (False, None)
    assert session.lua.get_memory_used() - before < 256 * 1024
    done, table = convert._via_json(rows, markers)
    assert done and len(table) == 5000
    session.lua.set_max_memory(session.lua.get_memory_used() + (3 << 20))
    assert convert._via_json(rows, markers) == (False, None)  # 1 MB of text, 3 MB of room
    state.close()
