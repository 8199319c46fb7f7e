"""The agent front door: luabridge as a Model Context Protocol server (the official ``mcp`` SDK).

:func:`build_server` puts the tools, their annotations and the resources on an ``MCPServer``
over one :class:`luabridge.Bridge`; ``luabridge mcp`` serves it over stdio and
``luabridge serve`` over streamable HTTP. It is a thin face over the bridge: every run, plan,
doc and schema comes from there.

Tools: ``lua_list_docs``, ``lua_search_docs``, ``lua_read_doc``, ``lua_schema`` (read only),
``execute_lua`` (code, input, dry_run) and ``apply_plan`` (plan_id). The operator's
:class:`ServerPolicy` (allowed effects, granted accounts, limits) applies to every run; no tool
argument can widen it, and the annotations of ``execute_lua`` and ``apply_plan`` follow it.

Results are the run envelope as structured content, and a text that leads with what happened
(for an error: its type, line and the fix) followed by the same envelope as JSON. An
``output`` or ``result`` over :data:`RESULT_LIMIT` bytes is cut with a marker saying how to
get less.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver.resources import FunctionResource
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from luabridge.cli.options import CHUNK_PREFIX
from luabridge.errors import ConfigError, LuabridgeError, PlanError, error_envelope
from luabridge.plans import iso_time, render_mismatch
from luabridge.search import MAX_QUERY, DocIndex, build_index

if TYPE_CHECKING:
    from luabridge.bridge import Bridge

__all__ = ["GUIDES", "RESULT_LIMIT", "ServerPolicy", "build_server", "cut_envelope"]

#: Bytes of ``output`` or of the JSON ``result`` a tool returns before it is cut.
RESULT_LIMIT = 24 * 1024

#: The guide pages ``lua_read_doc`` serves besides the references: topic -> package file.
GUIDES = {"guide": "guides/scripts.md"}

_EFFECT_ORDER = ("read", "write", "destructive")

#: Writes a dry run's text lists one per line; the others are counted by action.
_WRITE_LINES = 10

#: Most sections one ``lua_search_docs`` call returns.
_MAX_HITS = 20

#: What to do about each kind of failure, after its message.
_FIXES = {
    "SyntaxError": "correct the Lua syntax on that line (LuaJIT, Lua 5.1) and run it again",
    "RuntimeError": "the message names what is wrong; an unknown name lists the ones that exist, "
    "and lua_read_doc('<integration>.<action>') shows an action's parameters",
    "ValidationError": "a value does not fit the action: lua_read_doc('<integration>.<action>') "
    "lists each parameter with its type and limits",
    "PermissionError": "this server allows only: {allow}. The operator sets that (luabridge "
    "mcp --allow ...); no tool argument can change it. Ask the person to allow it, or leave "
    "the call out",
    "TimeoutError": "the run reached its time limit (set by the operator): make fewer calls or "
    "do less work per run",
    "InstructionLimitError": "the run used its instruction budget: do less work per run",
    "MemoryError": "the run reached its memory limit: build smaller tables and strings",
    "OutputLimitError": "print less: return only what is needed instead of printing it",
    "CallLimitError": "make fewer action calls per run: page through data or split the work "
    "over several runs",
    "ResultLimitError": "return less: only the fields or rows that are needed",
    "PlanMismatchError": "the script took another path than its dry run and nothing differing "
    "was sent. Dry-run it again, show the person the new plan, and apply that one",
    "WorkerCrashError": "the process running the script died; run it again, and if it "
    "happens again simplify the script",
    "InternalError": "a bug in luabridge; the message says what happened",
}

_RULES = """\
Rules that matter:
- Read the docs first: lua_search_docs finds the action, lua_read_doc('<integration>.<action>') \
shows its parameters, results and examples.
- An action takes ONE table of named parameters: \
app.integrations.<integration>.<action>({name = value, ...}); \
app.integrations.<integration>.<account>.<action> uses a named account.
- Remote failures are RETURNED, not raised: check r.success, then r.error, r.code and \
r.retryable. Mistakes in the script (unknown parameter, wrong type) raise with the line number.
- app.null is JSON null (for example to clear a property). `local input = ...` reads the \
input; `return` gives the result; print() is captured.
- To change anything, dry-run first (dry_run = true): it sends no writes and returns a \
plan_id with the exact requests. Show them to the person; after they approve, \
apply_plan(plan_id) sends exactly those writes and nothing else."""


@dataclass(frozen=True)
class ServerPolicy:
    """What every run the server makes may do; set by the operator, never by a tool call.

    - ``allow``: effects besides ``read`` (``{"write"}``...); read only by default
    - ``accounts``: ``{integration: [account]}`` granted to runs (None: every configured one)
    - ``limits``: overrides of the bridge's limits for every run
    """

    allow: frozenset[str] = frozenset({"read"})
    accounts: Mapping[str, list[str]] | None = None
    limits: Mapping[str, Any] = field(default_factory=dict)

    @property
    def effects(self) -> list[str]:
        return [e for e in _EFFECT_ORDER if e in self.allow]


# -- results ----------------------------------------------------------------------------------


def _cut_text(text: str, limit: int, marker: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore") + marker


def _size(value: Any) -> int:
    """Bytes ``value`` takes in a tool's text (the envelope is shown with ``indent=1``)."""
    return len(json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8"))


#: Bytes of one request body kept in ``calls`` or ``plan.writes`` once those are cut.
_BODY_LIMIT = 300


def _slim_records(records: list[Any], budget: int, what: str) -> tuple[list[Any], bool]:
    """``records`` (call records or planned writes) in at most ``budget`` bytes: without
    ``params``, with long request bodies replaced by a marker, then only the first ones."""
    if _size(records) <= budget:
        return records, False
    slim: list[Any] = []
    for record in records:
        item = {k: v for k, v in record.items() if k != "params"}
        request = item.get("request")
        if isinstance(request, dict) and request.get("json") is not None:
            body = _size(request["json"])
            if body > _BODY_LIMIT:
                item["request"] = {
                    **request,
                    "json": f"[luabridge: body cut, {body} bytes; make fewer or smaller "
                    f"{what} per run to see each in full]",
                }
        slim.append(item)
    kept: list[Any] = []
    used = 2
    for item in slim:
        used += _size(item) + 2
        if used > budget:
            break
        kept.append(item)
    return kept, True


def cut_envelope(envelope: dict[str, Any], limit: int = RESULT_LIMIT) -> dict[str, Any]:
    """``envelope`` in about ``limit`` bytes in all, each cut part with a marker.

    ``calls`` and a dry run's ``plan.writes`` get an eighth of ``limit`` each: over it they
    lose ``params`` and long request bodies, then the records past what fits. ``output`` and
    ``result`` share the rest (a small one leaves more to the other). A cut result becomes a
    string: the start of its JSON and the marker. ``truncated`` lists what was cut: the full
    size in bytes of ``output`` and ``result``, the number of ``calls`` and ``plan_writes``.
    """
    out = dict(envelope)
    truncated: dict[str, int] = {}
    calls = list(out.get("calls") or [])
    kept, cut = _slim_records(calls, limit // 8, "calls")
    if cut:
        truncated["calls"] = len(calls)
        out["calls"] = kept
    plan = out.get("plan")
    if isinstance(plan, dict) and isinstance(plan.get("writes"), list):
        writes = plan["writes"]
        kept, cut = _slim_records(writes, limit // 8, "writes")
        if cut:
            truncated["plan_writes"] = len(writes)
            out["plan"] = {**plan, "writes": kept}
    rest = max(limit - _size({k: v for k, v in out.items() if k not in ("output", "result")}), 0)
    output = str(out.get("output") or "")
    output_size = len(output.encode("utf-8"))
    result_text = (
        None if out.get("result") is None else json.dumps(out["result"], ensure_ascii=False)
    )
    result_size = 0 if result_text is None else len(result_text.encode("utf-8"))
    output_share = max(rest - result_size, rest // 2)
    result_share = max(rest - output_size, rest // 2)
    if output_size > output_share:
        truncated["output"] = output_size
        out["output"] = _cut_text(
            output,
            output_share,
            f"\n[luabridge: output cut at {output_share} of {output_size} bytes; print less, "
            "for example a count or the first few rows, and return the rest only if it is "
            "needed]",
        )
    if result_text is not None and result_size > result_share:
        truncated["result"] = result_size
        out["result"] = _cut_text(
            result_text,
            result_share,
            f" [luabridge: result cut at {result_share} of {result_size} bytes of JSON; return "
            "only the fields or rows you need (for example the first 20 items and a count), or "
            "page through the data over several runs]",
        )
    if truncated:
        out["truncated"] = truncated
    return out


def _cut_line(envelope: Mapping[str, Any]) -> str:
    """The lead's line saying what of the envelope was cut (empty when nothing was)."""
    truncated = envelope.get("truncated") or {}
    parts = []
    if "output" in truncated:
        parts.append(f"output cut ({truncated['output']:,} bytes)")
    if "result" in truncated:
        parts.append(
            f"result cut ({truncated['result']:,} bytes of JSON; it is now a string holding "
            "the start)"
        )
    if "calls" in truncated:
        shown = len(envelope.get("calls") or [])
        parts.append(f"calls shown without params, {shown} of {truncated['calls']}")
    if "plan_writes" in truncated:
        shown = len((envelope.get("plan") or {}).get("writes") or [])
        parts.append(f"plan writes shown {shown} of {truncated['plan_writes']}")
    if not parts:
        return ""
    return "Cut to fit: " + "; ".join(parts) + ". The markers say how to get less."


def _lead(envelope: Mapping[str, Any], allow: list[str]) -> str:
    """The first lines of a tool's text: the error's type, line and fix, or what happened."""
    error = envelope.get("error")
    if error:
        line = f" at line {error['line']}" if error.get("line") else ""
        message = CHUNK_PREFIX.sub("", str(error.get("message", "")))
        fix = _FIXES.get(str(error.get("type")), "").format(allow=", ".join(allow))
        if error.get("type") == "ValidationError" and message.startswith("input"):
            # The tool's own input argument, not an action's parameter.
            fix = "the input argument does not fit: pass plain JSON, less deeply nested"
        text = f"{error.get('type')}{line}: {message}"
        text += f"\nFix: {fix}" if fix else ""
        cut = _cut_line(envelope)
        return text + (f"\n{cut}" if cut else "")
    calls = envelope.get("calls") or []
    sent = sum(1 for c in calls if c.get("effect") != "read" and c.get("outcome") == "ok")
    failed = [c for c in calls if c.get("outcome") == "failed"]
    parts = [f"ok: {len(calls)} action call{'s' if len(calls) != 1 else ''}"]
    if sent:
        parts.append(f"{sent} write{'s' if sent != 1 else ''} sent")
    if failed:
        parts.append(
            f"{len(failed)} returned success = false ("
            + "; ".join(f"{c['integration']}.{c['action']}: {c.get('code')}" for c in failed[:3])
            + ")"
        )
    cut = _cut_line(envelope)
    return ", ".join(parts) + (f"\n{cut}" if cut else "")


def _tool_result(lead: str, envelope: dict[str, Any], *, error: bool) -> CallToolResult:
    text = lead + "\n\n" + json.dumps(envelope, ensure_ascii=False, indent=1)
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=envelope,
        is_error=error,
    )


def _failure(error_type: str, message: str, fix: str = "") -> CallToolResult:
    envelope = error_envelope(error_type, message)
    lead = f"{error_type}: {message}" + (f"\nFix: {fix}" if fix else "")
    return _tool_result(lead, envelope, error=True)


def _write_line(index: int, write: Mapping[str, Any]) -> str:
    request = write.get("request") or {}
    body = request.get("json")
    shown = "" if body is None else " " + json.dumps(body, ensure_ascii=False)
    if len(shown) > 300:
        shown = shown[:297] + "..."
    account = write.get("account")
    return (
        f"  {index}. {write['integration']}.{write['action']} ({write['effect']}, account "
        f"{account}): {request.get('method', '?')} {request.get('url', '?')}{shown}"
    )


# -- the server -------------------------------------------------------------------------------


@cache
def _guide(name: str) -> str:
    return resources.files("luabridge").joinpath(GUIDES[name]).read_text(encoding="utf-8")


def build_server(bridge: Bridge, policy: ServerPolicy | None = None) -> MCPServer:
    """The MCP server over ``bridge``, whose runs all follow ``policy`` (default read only)."""
    from luabridge import __version__

    policy = policy or ServerPolicy()
    allow = policy.effects
    granted = bridge._grants(policy.accounts)
    index: list[DocIndex] = []

    def doc_index() -> DocIndex:
        if not index:
            guides = {name: _guide(name) for name in GUIDES}
            index.append(build_index(bridge.integrations.values(), granted, guides))
        return index[0]

    accounts_line = "; ".join(
        f"{name}: {', '.join(accs) or 'none'}" for name, accs in granted.items()
    )
    policy_line = (
        f"This server allows: {', '.join(allow)}. Accounts: {accounts_line or 'none'}. "
        "The operator decides both; no tool argument can change them."
    )
    server = MCPServer(
        "luabridge",
        version=__version__,
        # The SDK sets the root logger's level; at INFO every HTTP request of a run is logged.
        log_level="WARNING",
        instructions=(
            "luabridge runs Lua snippets in a sandbox with app.integrations.* bound to real "
            "APIs. " + policy_line + "\n\n" + _RULES
        ),
    )
    reading = ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
    )
    writes = bool({"write", "destructive"} & policy.allow)
    running = ToolAnnotations(
        read_only_hint=not writes,
        destructive_hint="destructive" in policy.allow,
        idempotent_hint=False,
        open_world_hint=True,
    )

    # -- docs ------------------------------------------------------------------------------

    def lua_list_docs() -> CallToolResult:
        """List the integrations, their actions (name, effect, one-line summary), the
        accounts scripts can use, the guide pages and what this server allows. Start here."""
        integrations = []
        lines = [policy_line, ""]
        for name, integ in bridge.integrations.items():
            actions = [
                {
                    "name": a.name,
                    "effect": a.effect,
                    "summary": a.summary,
                    "allowed": a.effect in policy.allow,
                }
                for a in integ.actions
            ]
            default = bridge.default_accounts.get(name)
            accs = granted.get(name, [])
            integrations.append(
                {
                    "name": name,
                    "title": integ.title,
                    "accounts": accs,
                    "default_account": default if default in accs else None,
                    "actions": actions,
                    "topic": name,
                }
            )
            lines.append(f"{integ.title} ({name}), accounts: {', '.join(accs) or 'none'}")
            for a in actions:
                mark = "" if a["allowed"] else " [not allowed here]"
                lines.append(f"  {name}.{a['name']} ({a['effect']}){mark}: {a['summary']}")
        lines.append("")
        lines.append("Guides: " + ", ".join(GUIDES) + ". Read one with lua_read_doc(topic).")
        data = {
            "integrations": integrations,
            "guides": list(GUIDES),
            "policy": {
                "allow": allow,
                "accounts": granted,
                "limits": bridge.limits.merged(dict(policy.limits)).as_dict(),
            },
        }
        return _tool_result("\n".join(lines), data, error=False)

    # The bounds are in the schema for the client, and checked here rather than by the SDK,
    # so that a value out of range gets the usual envelope with a Fix line.
    def lua_search_docs(
        query: Annotated[
            str,
            Field(
                description="what you are looking for, in words: 'send an email'",
                json_schema_extra={"maxLength": MAX_QUERY},
            ),
        ],
        limit: Annotated[
            int,
            Field(
                description="most sections to return",
                json_schema_extra={"minimum": 1, "maximum": _MAX_HITS},
            ),
        ] = 5,
    ) -> CallToolResult:
        """Search the Lua API reference and the guide: ranked matches over action names,
        summaries, parameter names and descriptions. Returns the best sections (the top 3
        in full), not whole pages; read any other with lua_read_doc(topic)."""
        if len(query) > MAX_QUERY:
            return _failure(
                "ValidationError",
                f"query is {len(query)} characters; at most {MAX_QUERY} are searched",
                "ask in a few words, for example 'send an email' or an action's name",
            )
        if not 1 <= limit <= _MAX_HITS:
            return _failure(
                "ValidationError",
                f"limit must be between 1 and {_MAX_HITS} (got {limit})",
                f"give a limit from 1 to {_MAX_HITS}, or leave it out for 5",
            )
        hits = doc_index().search(query, limit)
        if not hits:
            topics = ", ".join(bridge.integrations)
            return _tool_result(
                f"no section matches {_cut_text(query, 80, '...')!r}; try other words, or "
                f"lua_list_docs to see every action ({topics})",
                {"query": query, "hits": []},
                error=False,
            )
        found = [h.to_dict(with_text=i < 3) for i, h in enumerate(hits)]
        lines = [f"{len(hits)} section(s) for {_cut_text(query, 80, '...')!r}, best first:"]
        for i, hit in enumerate(hits):
            lines.append(f"{i + 1}. {hit.section.topic}: {hit.section.summary}")
        lines.append("")
        for hit in hits[:3]:
            lines.append(hit.section.text)
            lines.append("")
        envelope = {"query": query, "hits": found}
        return CallToolResult(
            content=[TextContent(type="text", text="\n".join(lines).rstrip())],
            structured_content=envelope,
        )

    def lua_read_doc(
        topic: Annotated[
            str,
            Field(
                description="an integration ('<integration>'), one action "
                "('<integration>.<action>'), a section from lua_search_docs, or 'guide'"
            ),
        ],
    ) -> CallToolResult:
        """Read one page of the reference: a whole integration, one action's section
        (parameters with types and limits, results, examples), or a guide page."""
        if topic in GUIDES:
            text = _guide(topic)
        elif "#" in topic:
            section = next((s for s in doc_index().sections if s.topic == topic), None)
            if section is None:
                return _failure(
                    "ValidationError",
                    f"unknown section {topic!r}",
                    "use a topic from lua_search_docs or lua_list_docs",
                )
            text = section.text
        else:
            try:
                text = bridge.docs(topic)
            except LuabridgeError as exc:
                return _failure(
                    "ValidationError",
                    f"{exc}; guides: {', '.join(GUIDES)}",
                    "give an integration, '<integration>.<action>' or a guide name",
                )
        size = len(text.encode("utf-8"))
        if size > RESULT_LIMIT:
            text = _cut_text(
                text,
                RESULT_LIMIT,
                f"\n[luabridge: page cut at {RESULT_LIMIT} of {size} bytes; read one action "
                "with lua_read_doc('<integration>.<action>') or search with lua_search_docs]",
            )
        return CallToolResult(content=[TextContent(type="text", text=text)])

    def lua_schema(
        action: Annotated[
            str, Field(description="'<integration>.<action>', as lua_list_docs names them")
        ],
    ) -> CallToolResult:
        """The JSON schemas of one action's parameters (input) and result (output)."""
        integration, _, name = action.partition(".")
        try:
            if not name:
                raise ConfigError(f"expected '<integration>.<action>', got {action!r}")
            data = bridge.schema(integration, name)
        except LuabridgeError as exc:
            return _failure("ValidationError", str(exc), "lua_list_docs lists every action")
        return _tool_result(f"schemas of {action}:", data, error=False)

    # -- runs -------------------------------------------------------------------------------

    def execute_lua(
        code: Annotated[str, Field(description="the Lua script; `return` gives the result")],
        input: Annotated[
            Any, Field(description="JSON value the script reads with `local input = ...`")
        ] = None,
        dry_run: Annotated[
            bool,
            Field(
                description="true: perform reads, send no writes, return a plan_id with the "
                "exact requests the writes would send"
            ),
        ] = False,
    ) -> CallToolResult:
        try:
            if dry_run:
                plan = bridge.plan(
                    code,
                    input,
                    allow=policy.allow,
                    accounts=granted,
                    limits=dict(policy.limits),
                )
                assert plan.run is not None
                if not plan.ok:
                    envelope = cut_envelope(plan.run.to_dict())
                    return _tool_result(_lead(envelope, allow), envelope, error=True)
                envelope = cut_envelope(
                    {**plan.run.to_dict(), "plan_id": plan.plan_id, "plan": plan.summary()}
                )
                count = len(plan.writes)
                lines = [
                    f"dry run: {count} write{'s' if count != 1 else ''} planned, nothing sent. "
                    f"plan_id: {plan.plan_id} (valid until {iso_time(plan.expires_at)})."
                ]
                lines += [_write_line(i + 1, w) for i, w in enumerate(plan.writes[:_WRITE_LINES])]
                if count > _WRITE_LINES:
                    rest = Counter(
                        f"{w['integration']}.{w['action']}" for w in plan.writes[_WRITE_LINES:]
                    )
                    lines.append(
                        f"  ... and {count - _WRITE_LINES} more: "
                        + ", ".join(f"{n} x {name}" for name, n in rest.most_common())
                    )
                cut = _cut_line(envelope)
                if cut:
                    lines.append(cut)
                if count:
                    lines.append(
                        "Show these to the person; once they approve, call apply_plan with "
                        "this plan_id to send exactly these writes."
                    )
                return _tool_result("\n".join(lines), envelope, error=False)
            result = bridge.run(
                code,
                input,
                allow=policy.allow,
                accounts=granted,
                limits=dict(policy.limits),
            )
        except LuabridgeError as exc:
            return _failure("ConfigError", str(exc))
        envelope = cut_envelope(result.to_dict())
        return _tool_result(_lead(envelope, allow), envelope, error=not result.ok)

    execute_lua.__doc__ = (
        "Run a Lua script in luabridge's sandbox, with app.integrations.* bound to real APIs. "
        "Returns the run envelope: ok, result, error (type, message, line), output, calls. "
        + policy_line
        + "\n\n"
        + _RULES
    )

    def apply_plan(
        plan_id: Annotated[str, Field(description="the plan_id a dry run returned")],
    ) -> CallToolResult:
        """Send the writes a dry run planned: runs the same script and input for real. Before
        each write is sent it is compared with the plan; the first that differs (another
        action, account or request) or that the plan does not have stops the run unsent, and
        the result shows the planned and actual write side by side. A plan is applied once,
        within 15 minutes of its dry run. Call it only after the person approved the plan."""
        try:
            # The server's policy is a ceiling: a plan made elsewhere with more is refused.
            applied = bridge.apply(plan_id, allow=policy.allow, accounts=granted)
        except PlanError as exc:
            kind = type(exc).__name__
            if exc.beyond_policy:
                # A new dry run here would be refused too: only the operator can widen this.
                fix = (
                    f"this server allows only: {', '.join(allow)}, and the plan needs more. "
                    "The operator sets that (luabridge mcp --allow ..., --account ...); ask the "
                    "person to allow it, or to apply the plan where it was made"
                )
            else:
                fix = "dry-run the script again to get a fresh plan"
            return _failure(kind, str(exc), fix)
        except LuabridgeError as exc:
            return _failure("ConfigError", str(exc))
        envelope = cut_envelope(applied.to_dict())
        if applied.mismatch is not None:
            lead = _lead(envelope, allow) + "\n\n" + render_mismatch(applied.mismatch)
        elif not applied.ok:
            lead = _lead(envelope, allow)
        else:
            lead = (
                f"applied plan {plan_id}: {applied.sent} of {applied.planned} planned writes "
                "sent" + ("" if applied.complete else " (the script ended before the others)")
            )
        return _tool_result(lead, envelope, error=not applied.ok)

    for fn in (lua_list_docs, lua_search_docs, lua_read_doc, lua_schema):
        server.add_tool(fn, annotations=reading, structured_output=False)
    server.add_tool(execute_lua, annotations=running, structured_output=False)
    server.add_tool(apply_plan, annotations=running, structured_output=False)

    # -- resources --------------------------------------------------------------------------

    for name, integ in bridge.integrations.items():
        server.add_resource(
            FunctionResource.from_function(
                fn=_docs_reader(bridge, name, "markdown"),
                uri=f"luabridge://reference/{name}.md",
                name=f"{name}-reference",
                title=f"{integ.title} Lua API reference",
                description=f"Every {integ.title} action: parameters, results, examples",
                mime_type="text/markdown",
            )
        )
        server.add_resource(
            FunctionResource.from_function(
                fn=_docs_reader(bridge, name, "luals"),
                uri=f"luabridge://stubs/{name}.lua",
                name=f"{name}-stubs",
                title=f"{integ.title} LuaLS type stubs",
                description="Type annotations for editors running the Lua language server",
                mime_type="text/x-lua",
            )
        )
    for guide in GUIDES:
        server.add_resource(
            FunctionResource.from_function(
                fn=lambda guide=guide: _guide(guide),
                uri=f"luabridge://guides/{guide}.md",
                name=guide,
                title="Writing luabridge scripts",
                mime_type="text/markdown",
            )
        )
    return server


def _docs_reader(bridge: Bridge, name: str, fmt: str) -> Any:
    def read() -> str:
        return bridge.docs(name, format=fmt)

    return read
