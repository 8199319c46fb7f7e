"""Value conversion between Lua and Python: every rule lives here and in the Lua encoder it drives.

Lua → Python (script results, action parameters, ``app.json.encode``). Trusted Lua in
``lua/bootstrap.lua`` walks the value with raw access (no metamethod ever runs) under the run's
limits and writes JSON text, which :func:`decode_lua_json` parses here:

- ``nil`` → ``None``; ``app.null`` → ``None`` (JSON null); booleans and strings as they are.
- Numbers: an integral value within ±2^53 becomes ``int``, anything else ``float``. NaN and
  ±inf are refused. Where an action's schema declares a float field, ints are accepted as floats;
  where it declares an integer, a fractional number is refused.
- Tables: a table whose keys are exactly ``1..n`` is an array (list); a table whose keys are all
  strings is an object (dict). An empty table is an array, unless marked with ``app.object{}``;
  ``app.array{}`` forces an array. Where an action's schema declares an object field, an empty
  unmarked table becomes ``{}`` (see :func:`shape_for_schema`).
- Refused, with a ``ValidationError`` naming the path (``result.items[3].name``): cycles,
  nesting deeper than ``limits.depth`` (64), functions, coroutines, userdata, tables with a
  metatable (other than the app.array/app.object marks), mixed or non-string keys, arrays with
  holes (use ``app.null``), keys containing NUL, and strings that are not valid UTF-8.
- Size: the encoded text may not pass ``limits.result_bytes`` (results; ``ResultLimitError``) or
  ``limits.argument_bytes`` (parameters; ``ValidationError``). The budget is checked while
  encoding, never after building the whole value.

Python → Lua (the script's input, action results, ``app.json.decode``): :func:`to_lua` accepts
JSON-compatible values only:

- ``None`` on its own (the input of a run without one, ``app.json.decode("null")``) → ``nil``.
- ``dict`` → table with string keys; a ``None`` value in a dict is left out (reads as ``nil``);
  an empty dict becomes ``app.object{}`` so it converts back to ``{}``.
- ``list``/``tuple`` → array table ``1..n``; ``None`` inside a list becomes ``app.null`` so
  positions survive; an empty list becomes ``app.array{}``.
- ``str`` → Lua string (UTF-8 bytes; a lone surrogate is refused); ``bool``; ``int`` (beyond
  ±2^53 it is sent as a float); ``float`` (NaN/inf refused). Nesting deeper than the depth limit
  is refused. Any other type, and a non-string dict key, is refused with a ``ValidationError``:
  Python objects never enter a Lua state. :func:`copy_json` applies the same checks to a run's
  input before it is handed to a worker, so both isolation modes refuse the same values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from luabridge.errors import ValidationError

if TYPE_CHECKING:
    # Imported where it is needed at run time: worker processes convert values but never
    # look at models, and pydantic is the slowest import of their start.
    from pydantic import BaseModel

__all__ = [
    "MAX_DEPTH",
    "LuaMarkers",
    "NoRoomError",
    "copy_json",
    "decode_lua_json",
    "shape_for_schema",
    "to_lua",
]

#: Deepest nesting accepted in either direction.
MAX_DEPTH = 64
_SAFE_INT = 2**53


def decode_lua_json(text: bytes | str) -> Any:
    """Parse the JSON text written by the trusted Lua encoder."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text)


class LuaMarkers:
    """Per-state makers for the values Python builds inside a Lua state.

    - ``null``: the state's ``app.null`` table
    - ``new_object`` / ``new_array``: Lua functions returning a fresh marked empty table
    - ``table_from``: the runtime's ``table_from``
    - ``decode``: the state's trusted JSON decoder (``lua/json.lua``), which takes JSON text
      and returns ``(True, value)``, or False when the value must be built from Python (called
      with None, it collects what a failed decode left); None where the state has none
    - ``room``: how many bytes the state may still allocate: up to the cap it is given, or
      by default its memory limit (with the headroom of a reply), less what it uses; needed
      with ``decode``, and used to refuse a value that would not fit (``NoRoomError``)
    """

    __slots__ = ("decode", "new_array", "new_object", "null", "room", "table_from")

    def __init__(
        self,
        null: Any,
        new_object: Callable[[], Any],
        new_array: Callable[[], Any],
        table_from: Callable[..., Any],
        decode: Callable[[bytes | None], Any] | None = None,
        room: Callable[[int | None], int] | None = None,
    ) -> None:
        self.null = null
        self.new_object = new_object
        self.new_array = new_array
        self.table_from = table_from
        self.decode = decode if room is not None else None
        self.room = room


def _utf8(text: str, path: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Lone surrogates (from json.loads of "\\ud800", say) have no UTF-8 form.
        raise ValidationError(f"{path}: string is not valid UTF-8 ({exc.reason})") from exc


def _not_json(value: Any, path: str) -> ValidationError:
    return ValidationError(
        f"{path}: a Python {type(value).__name__} cannot be sent to Lua; "
        "use JSON-compatible values (dict, list, str, int, float, bool, None)"
    )


def copy_json(value: Any, *, path: str = "value", depth: int = 0) -> Any:
    """A deep copy of JSON-compatible ``value``; refuses what :func:`to_lua` would refuse.

    Tuples become lists and ``None`` values in dicts are kept (``to_lua`` drops them later).
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValidationError(f"{path}: {value!r} cannot be sent to Lua; use a finite number")
        return value
    if isinstance(value, str):
        _utf8(value, path)
        return value
    if not isinstance(value, dict | list | tuple):
        raise _not_json(value, path)
    if depth >= MAX_DEPTH:
        raise ValidationError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValidationError(f"{path}: object key {k!r} is not a string")
            _utf8(k, path)
            out[k] = copy_json(v, path=f"{path}.{k}", depth=depth + 1)
        return out
    return [copy_json(v, path=f"{path}[{i + 1}]", depth=depth + 1) for i, v in enumerate(value)]


def _prepare(value: Any, markers: LuaMarkers, depth: int, path: str) -> Any:
    if value is None:
        return markers.null
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT <= value <= _SAFE_INT else float(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValidationError(f"{path}: {value!r} cannot be sent to Lua; use a finite number")
        return value
    if isinstance(value, str):
        return _utf8(value, path)
    if depth >= MAX_DEPTH:
        raise ValidationError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if not value:
            return markers.new_object()
        out: dict[bytes, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValidationError(f"{path}: object key {k!r} is not a string")
            if v is None:
                continue
            out[_utf8(k, path)] = _prepare(v, markers, depth + 1, f"{path}.{k}")
        return out if out else markers.new_object()
    if isinstance(value, list | tuple):
        if not value:
            return markers.new_array()
        return [_prepare(v, markers, depth + 1, f"{path}[{i + 1}]") for i, v in enumerate(value)]
    raise _not_json(value, path)


class NoRoomError(Exception):
    """A value would not fit in the state's memory: refused before any of it is pushed.

    lupa builds tables and strings from Python outside any protected Lua call, so a full heap
    there is not an error Lua can report: it aborts the process, or unwinds through Python's
    frames and deadlocks the thread. :func:`to_lua` therefore checks an upper bound of what the
    value will take (see ``_lua_bytes``) against the room the state has before it starts."""


#: Bytes a converted value takes in a Lua state at most, per item (a dict entry or list item:
#: its slot, a string's header, a nested table's header) and on top of its strings' bytes;
#: measured at 45-122 per item (a list of one-key dicts is the worst), with room to spare.
_ITEM_BYTES = 160
_BASE_BYTES = 4096


def _lua_bytes(value: Any, depth: int = 0) -> int:
    """An upper bound of the bytes a prepared value (what ``_prepare`` returns) takes in Lua."""
    if type(value) is bytes:
        return len(value) + _ITEM_BYTES
    if depth > MAX_DEPTH:
        return _ITEM_BYTES
    if isinstance(value, dict):
        return _ITEM_BYTES + sum(len(k) + _lua_bytes(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return _ITEM_BYTES + sum(_lua_bytes(v, depth + 1) for v in value)
    return _ITEM_BYTES


def _no_room(need: int, room: int) -> NoRoomError:
    return NoRoomError(
        f"memory limit reached: the value needs about {need} bytes in Lua and the run has "
        f"{max(room, 0)} left; use less memory per run, or ask for less data"
    )


class _Fallback(Exception):
    """Raised by the fast converter for anything it does not handle; the full one takes over."""


class _Large(Exception):
    """Raised by the fast converter when a value has more items than its budget: it is large
    enough to go as JSON text (see ``_via_json``)."""


def _prepare_fast(value: Any, markers: LuaMarkers, depth: int, budget: list[int]) -> Any:
    # The common case (exact dict, list, str, int, bool and finite float) without building a
    # path string per value: for a 10,000-contact result this halves the cost of ``to_lua``.
    # Anything unusual (tuples, subclasses, NaN, bad keys or strings) raises _Fallback, and
    # _prepare redoes the value with the exact error messages. ``budget`` (a two-item list)
    # counts down the items seen (past zero the walk stops with _Large) and adds up the bytes of
    # the strings, keys included.
    if depth >= MAX_DEPTH:
        raise _Fallback
    items: Any
    if type(value) is dict:
        if not value:
            return markers.new_object()
        out: Any = {}
        items = value.items()
    elif type(value) is list:
        if not value:
            return markers.new_array()
        out = []
        items = enumerate(value)
    else:
        raise _Fallback
    budget[0] -= len(value)
    if budget[0] < 0:
        raise _Large
    is_dict = type(out) is dict
    nbytes = 0
    for k, v in items:
        t = type(v)
        if t is str:
            v = v.encode("utf-8")
            nbytes += len(v)
        elif v is None:
            if is_dict:
                continue
            v = markers.null
        elif t is int:
            if not -_SAFE_INT <= v <= _SAFE_INT:
                v = float(v)
        elif t is dict or t is list:
            v = _prepare_fast(v, markers, depth + 1, budget)
        elif t is float:
            if not math.isfinite(v):
                raise _Fallback
        elif t is not bool:
            raise _Fallback
        if is_dict:
            if type(k) is not str:
                raise _Fallback
            k = k.encode("utf-8")
            nbytes += len(k)
            out[k] = v
        else:
            out.append(v)
    budget[1] += nbytes
    return out if out else markers.new_object()


#: Values with at least this many items (dict entries and list items, at every level) go to Lua
#: as JSON text; smaller ones are built with ``table_from``, whose fixed cost is lower.
JSON_PATH_ITEMS = 512

_JSON_TEXT = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, check_circular=False, separators=(",", ":")
)
_PLAIN = frozenset((str, int, float, bool, type(None)))
#: Room the JSON path needs, in multiples of the text: the text itself, the tables it decodes
#: to (a little less than twice the text for rows of short strings), and a margin.
_ROOM_FACTOR = 4


def _count_plain(value: Any, depth: int) -> int:
    """How many items ``value`` (an exact dict or list) holds at every level, or -1 unless every
    dict key is an exact ``str`` and every item an exact dict, list, str, int, float, bool or
    None, nested at most ``MAX_DEPTH`` levels: the values ``json.dumps`` writes as the Lua
    conversion would see them (it would turn an ``int`` key into a string, say)."""
    if depth >= MAX_DEPTH:
        return -1
    items: Any
    if type(value) is dict:
        for k in value:
            if type(k) is not str:
                return -1
        items = value.values()
    else:
        items = value
    n = len(items)
    for v in items:
        t = type(v)
        if t in _PLAIN:
            continue
        if t is dict or t is list:
            m = _count_plain(v, depth + 1)
            if m < 0:
                return -1
            n += m
        else:
            return -1
    return n


def _via_json(value: Any, markers: LuaMarkers, cap: int | None = None) -> tuple[bool, Any]:
    """``value`` built by the state's trusted decoder from JSON text: about half the time of
    building it with ``table_from`` for a large value. ``(False, None)`` when it is small, has
    anything the JSON text would not carry exactly (a non-string key, a tuple, a subclass,
    NaN, a lone surrogate, a cycle, deep nesting), or the decoder gives up (a full heap): the
    caller then converts it the usual way, which gives the exact error or the same value."""
    if markers.decode is None or _count_plain(value, 0) < JSON_PATH_ITEMS:
        return False, None
    try:
        text = _JSON_TEXT.encode(value).encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError):
        return False, None
    # The text goes into the state outside any protected call, where a full heap is fatal, and
    # the tables take about as much again: only with room for both, and some to spare.
    assert markers.room is not None
    if len(text) * _ROOM_FACTOR > markers.room(cap):
        return False, None
    done = markers.decode(text)
    del text
    if type(done) is tuple and done and done[0] is True:
        return True, done[1]
    markers.decode(None)
    return False, None


#: Values whose bound (``_lua_bytes``) is below this are pushed without asking the state for its
#: room: every push happens with at least this much headroom over what the run may use (a host
#: call's reply has 16 MiB, a run's input is checked against the limit after it is pushed).
_UNCHECKED_BYTES = 65536


def to_lua(value: Any, markers: LuaMarkers, *, path: str = "value", cap: int | None = None) -> Any:
    """Convert a JSON-compatible Python value into Lua values of one state (see module rules).

    ``cap`` is the heap size (bytes) the state may reach with the value in it (by default its
    current memory limit); a value that would not fit raises :class:`NoRoomError` before any
    of it is pushed.
    """
    if value is None:
        # Only inside a list does None need to hold a place; on its own it is nil.
        return None
    # Small values (nearly every action result) are walked once: the walk stops early when the
    # value turns out to be large, and only then is it checked for the JSON path.
    start = JSON_PATH_ITEMS - 1 if markers.decode is not None else _NO_LIMIT
    budget = [start, 0]
    try:
        try:
            prepared = _prepare_fast(value, markers, 0, budget)
        except _Large:
            done, table = _via_json(value, markers, cap)
            if done:
                return table
            start = _NO_LIMIT
            budget = [start, 0]
            prepared = _prepare_fast(value, markers, 0, budget)
        need = (start - budget[0]) * _ITEM_BYTES + budget[1] + _BASE_BYTES
    except (_Fallback, UnicodeEncodeError):
        prepared = _prepare(value, markers, 0, path)
        need = _lua_bytes(prepared) + _BASE_BYTES
    if need > _UNCHECKED_BYTES and markers.room is not None:
        room = markers.room(cap)
        if need > room:
            raise _no_room(need, room)
    if isinstance(prepared, dict | list):
        return markers.table_from(prepared, recursive=True)
    return prepared


_NO_LIMIT = 1 << 62


def _field_kind(annotation: Any) -> str | None:
    """'object', 'array' or None for a model field's (possibly optional) annotation."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = {_field_kind(a) for a in typing.get_args(annotation) if a is not type(None)}
        kinds.discard(None)
        return kinds.pop() if len(kinds) == 1 else None
    if origin is typing.Annotated:
        return _field_kind(typing.get_args(annotation)[0])
    if annotation is dict or origin is dict:
        return "object"
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    if annotation in (list, tuple) or origin in (list, tuple):
        return "array"
    return None


def shape_for_schema(params: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """Apply schema-directed shapes: an empty array ``[]`` given for an object field becomes ``{}``.

    Lua cannot tell an empty array from an empty object, and the encoder writes an unmarked
    empty table as ``[]``; the action's model decides. Keys are matched by field name and alias.
    """
    out = dict(params)
    for key in _object_keys(model):
        if out.get(key) == []:
            out[key] = {}
    return out


@lru_cache(maxsize=256)
def _object_keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The names and aliases of a model's object fields; worked out once per model, since
    walking the annotations took about a third of the dispatcher's own time per call."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        if _field_kind(info.annotation) != "object":
            continue
        keys.add(name)
        alias = info.validation_alias
        if isinstance(alias, str):
            keys.add(alias)
        elif alias is not None and hasattr(alias, "choices"):
            keys.update(c for c in alias.choices if isinstance(c, str))
    return tuple(sorted(keys))
