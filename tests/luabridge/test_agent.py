"""The MCP server (luabridge.agent), driven by the official SDK's client in memory.

The bridge's accounts point at the session's Loops emulator, so the emulator's request log
shows what each tool sent. ``test_agent_stdio.py`` drives a real ``luabridge mcp`` process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from integrations.loops.emulator import ADA_EMAIL, DEMO_KEYS, EmulatorServer
from luabridge import Bridge
from luabridge.agent import RESULT_LIMIT, ServerPolicy, build_server
from luabridge.search import MAX_QUERY, tokens

TOOLS = {
    "lua_list_docs",
    "lua_search_docs",
    "lua_read_doc",
    "lua_schema",
    "execute_lua",
    "apply_plan",
}

TWO_WRITES = """
local input = ...
local loops = app.integrations.loops
local ada = loops.find_contact({email = input.email})
local kind = (ada.contact and ada.contact.first_name == "Ada") and "welcome" or "hello"
loops.send_event({email = input.email, event_name = "signup"})
loops.send_event({email = input.email, event_name = kind})
return {kind = kind}
"""


@pytest.fixture
def make_bridge(emulator: EmulatorServer, tmp_path: Path) -> Iterator[Callable[..., Bridge]]:
    made: list[Bridge] = []

    def build(**options: Any) -> Bridge:
        environ = {
            "LOOPS_API_KEY": DEMO_KEYS["default"],
            "LOOPS_API_KEY_MARKETING": DEMO_KEYS["marketing"],
            "LOOPS_BASE_URL": emulator.base_url,
            "LUABRIDGE_LOOPS_DIRECTORY": str(tmp_path / "contacts.sqlite3"),
        }
        config = tmp_path / "luabridge.toml"
        config.write_text(
            "[loops.accounts.default]\nrate_limit = 0\n[loops.accounts.marketing]\n"
            "rate_limit = 0\n",
            encoding="utf-8",
        )
        options.setdefault("isolation", "inprocess")
        bridge = Bridge.from_config(config, environ=environ, **options)
        made.append(bridge)
        return bridge

    yield build
    for bridge in made:
        bridge.close()


def session(
    bridge: Bridge, policy: ServerPolicy | None = None
) -> Callable[[Callable[[Client], Awaitable[None]]], None]:
    """Run ``body(client)`` against a fresh server over ``bridge``."""

    def run(body: Callable[[Client], Awaitable[None]]) -> None:
        async def main() -> None:
            async with Client(build_server(bridge, policy)) as client:
                await body(client)

        anyio.run(main)

    return run


def text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def writes(emulator: EmulatorServer) -> list[tuple[str, str, Any]]:
    return [
        (r["method"], r["path"], r["body"]) for r in emulator.requests() if r["method"] != "GET"
    ]


WRITE = ServerPolicy(allow=frozenset({"read", "write"}))


def test_agent_lists_tools_with_annotations(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    seen: dict[str, Any] = {}

    async def body(client: Client) -> None:
        for policy_name, policy in (
            ("read", None),
            ("write", WRITE),
            ("destructive", ServerPolicy(allow=frozenset({"read", "write", "destructive"}))),
        ):
            async with Client(build_server(bridge, policy)) as other:
                seen[policy_name] = {t.name: t for t in (await other.list_tools()).tools}

    session(bridge)(body)
    assert set(seen["read"]) == TOOLS
    for name in ("lua_list_docs", "lua_search_docs", "lua_read_doc", "lua_schema"):
        ann = seen["write"][name].annotations
        assert ann is not None and ann.read_only_hint is True and ann.destructive_hint is False
    run_read = seen["read"]["execute_lua"].annotations
    run_write = seen["write"]["execute_lua"].annotations
    run_delete = seen["destructive"]["apply_plan"].annotations
    assert run_read is not None and run_read.read_only_hint is True
    assert run_write is not None and run_write.read_only_hint is False
    assert run_write.destructive_hint is False and run_write.open_world_hint is True
    assert run_delete is not None and run_delete.destructive_hint is True
    # The descriptions teach the rules that matter, and the server's policy.
    described = seen["write"]["execute_lua"].description or ""
    for rule in ("ONE table of named parameters", "RETURNED, not raised", "app.null", "dry_run"):
        assert rule in described
    assert "This server allows: read, write" in described
    schema = seen["write"]["execute_lua"].input_schema
    assert set(schema["properties"]) == {"code", "input", "dry_run"}


def test_agent_list_docs(make_bridge: Callable[..., Bridge]) -> None:
    async def body(client: Client) -> None:
        result = await client.call_tool("lua_list_docs", {})
        data = result.structured_content
        assert data is not None and not result.is_error
        (loops,) = data["integrations"]
        assert loops["accounts"] == ["default", "marketing"]
        actions = {a["name"]: a for a in loops["actions"]}
        assert actions["send_event"]["allowed"] is False  # a read-only server
        assert data["policy"]["allow"] == ["read"] and data["guides"] == ["guide"]
        assert "loops.send_event (write) [not allowed here]" in text(result)

    session(make_bridge())(body)


def test_agent_search_docs_ranks_sections(make_bridge: Callable[..., Bridge]) -> None:
    async def body(client: Client) -> None:
        result = await client.call_tool(
            "lua_search_docs", {"query": "send a transactional email", "limit": 4}
        )
        data = result.structured_content
        assert data is not None
        hits = data["hits"]
        assert hits[0]["topic"] == "loops.send_transactional_email"
        assert len(hits) == 4 and "text" in hits[0] and "text" not in hits[3]
        whole = await client.call_tool("lua_read_doc", {"topic": "loops"})
        # The best sections, not the whole page.
        assert len(text(result)) < len(text(whole)) / 2
        assert "## send_transactional_email" in text(result)
        by_param = await client.call_tool("lua_search_docs", {"query": "mailing lists"})
        assert by_param.structured_content is not None
        assert "loops.list_mailing_lists" in [
            h["topic"] for h in by_param.structured_content["hits"]
        ]
        guide = await client.call_tool("lua_search_docs", {"query": "app.null clear"})
        assert guide.structured_content is not None and guide.structured_content["hits"]
        create = await client.call_tool("lua_search_docs", {"query": "create a contact"})
        assert create.structured_content is not None
        # The action whose name the question covers wins over a longer one.
        assert create.structured_content["hits"][0]["topic"] == "loops.create_contact"
        nothing = await client.call_tool("lua_search_docs", {"query": "zzzqqq"})
        assert nothing.structured_content == {"query": "zzzqqq", "hits": []}
        assert "no section matches" in text(nothing)

    session(make_bridge())(body)


@pytest.mark.timeout(60)
def test_agent_search_docs_bounds_the_query_and_limit(make_bridge: Callable[..., Bridge]) -> None:
    async def body(client: Client) -> None:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        props = tools["lua_search_docs"].input_schema["properties"]
        assert props["query"]["maxLength"] == MAX_QUERY
        assert (props["limit"]["minimum"], props["limit"]["maximum"]) == (1, 20)
        # A long query is refused with the usual envelope, without echoing it back.
        huge = await client.call_tool("lua_search_docs", {"query": "x" * 100_000})
        assert huge.is_error and huge.structured_content is not None
        assert huge.structured_content["error"]["type"] == "ValidationError"
        assert huge.structured_content["meta"] == {
            "executionId": None,
            "resumed": False,
            "durationMs": None,
        }
        assert text(huge).startswith(
            f"ValidationError: query is 100000 characters; at most {MAX_QUERY} are searched"
        )
        assert "\nFix: ask in a few words" in text(huge) and "x" * 200 not in text(huge)
        # The longest query allowed is searched, and its echo is short.
        longest = await client.call_tool("lua_search_docs", {"query": "x" * MAX_QUERY})
        lead = text(longest).split("\n")[0]
        assert not longest.is_error and lead.startswith("no section matches 'xxx")
        assert "x" * 100 not in lead
        for bad in (0, 100):
            refused = await client.call_tool("lua_search_docs", {"query": "email", "limit": bad})
            assert refused.is_error and refused.structured_content is not None
            assert text(refused).startswith(
                f"ValidationError: limit must be between 1 and 20 (got {bad})"
            )
            assert "Fix: give a limit from 1 to 20" in text(refused)
            assert "pydantic" not in text(refused)

    session(make_bridge())(body)


@pytest.mark.timeout(30)
def test_tokens_of_a_long_word_take_linear_time() -> None:
    # The snake_case pattern once backtracked quadratically: 40,000 characters took 47 s.
    assert tokens("x" * 400_000) == ["x" * 400_000]
    assert tokens("send_event a__b_c sendEmail") == [
        "send",
        "event",
        "b",
        "c",
        "send",
        "email",
        "send_event",
        "b_c",
    ]


def test_agent_read_doc(make_bridge: Callable[..., Bridge]) -> None:
    async def body(client: Client) -> None:
        one = text(await client.call_tool("lua_read_doc", {"topic": "loops.send_event"}))
        assert one.startswith("## send_event") and "## create_contact" not in one
        assert "| `event_name` |" in one
        guide = text(await client.call_tool("lua_read_doc", {"topic": "guide"}))
        assert guide.startswith("# Writing luabridge scripts")
        search = await client.call_tool("lua_search_docs", {"query": "multi account"})
        assert search.structured_content is not None
        topic = search.structured_content["hits"][0]["topic"]
        assert topic == "loops#multi-account-usage"
        section = text(await client.call_tool("lua_read_doc", {"topic": topic}))
        assert section.startswith("## Multi-Account Usage")
        bad = await client.call_tool("lua_read_doc", {"topic": "loops.send_evnt"})
        assert bad.is_error and "did you mean 'send_event'" in text(bad)
        assert text(bad).startswith("ValidationError: ")
        bad_section = await client.call_tool("lua_read_doc", {"topic": "loops#nope"})
        assert bad_section.is_error

    session(make_bridge())(body)


def test_agent_schema(make_bridge: Callable[..., Bridge]) -> None:
    async def body(client: Client) -> None:
        result = await client.call_tool("lua_schema", {"action": "loops.send_event"})
        data = result.structured_content
        assert data is not None and "event_name" in data["input"]["properties"]
        assert "success" in data["output"]["properties"]
        for bad in ("loops", "loops.nope", "nope.send_event"):
            failed = await client.call_tool("lua_schema", {"action": bad})
            assert failed.is_error, bad

    session(make_bridge())(body)


def test_agent_execute_lua_returns_the_envelope(make_bridge: Callable[..., Bridge]) -> None:
    async def body(client: Client) -> None:
        result = await client.call_tool(
            "execute_lua",
            {"code": "local input = ...\nprint('hi')\nreturn {n = input.n + 1}", "input": {"n": 1}},
        )
        data = result.structured_content
        assert not result.is_error and data is not None
        assert data["ok"] is True and data["result"] == {"n": 2} and data["output"] == "hi\n"
        assert text(result).startswith("ok: 0 action calls")
        # The text carries the same envelope as JSON, for clients that read only text.
        assert json.loads(text(result).split("\n\n", 1)[1]) == data
        read = await client.call_tool(
            "execute_lua",
            {"code": f'return app.integrations.loops.find_contact({{email = "{ADA_EMAIL}"}})'},
        )
        assert read.structured_content is not None
        assert read.structured_content["result"]["contact"]["first_name"] == "Ada"

    session(make_bridge())(body)


def test_agent_execute_lua_bad_lua_gives_line_and_message(
    make_bridge: Callable[..., Bridge],
) -> None:
    async def body(client: Client) -> None:
        syntax = await client.call_tool("execute_lua", {"code": "local x = 1\nreturn x +"})
        assert syntax.is_error
        assert text(syntax).startswith("SyntaxError at line 2: ")
        assert "\nFix: correct the Lua syntax" in text(syntax)
        runtime = await client.call_tool(
            "execute_lua",
            {"code": "local t = nil\n\nreturn t.field"},
        )
        assert text(runtime).startswith("RuntimeError at line 3: attempt to index")
        assert runtime.structured_content is not None
        assert runtime.structured_content["error"]["line"] == 3
        typo = await client.call_tool(
            "execute_lua",
            {"code": 'app.integrations.loops.find_contact({emial = "a@b.co"})'},
        )
        assert "ValidationError at line 1: loops.find_contact: unknown parameter 'emial'" in text(
            typo
        )

    session(make_bridge())(body)


def test_agent_policy_refusal_and_no_way_to_raise_it(
    make_bridge: Callable[..., Bridge], emulator: EmulatorServer
) -> None:
    code = 'return app.integrations.loops.send_event({email = "a@b.co", event_name = "x"})'

    async def body(client: Client) -> None:
        for args in (
            {"code": code},
            {"code": code, "dry_run": True},
            {"code": code, "allow": ["write"]},  # not a parameter: ignored, never obeyed
        ):
            result = await client.call_tool("execute_lua", args)
            assert result.is_error, args
            assert text(result).startswith("PermissionError at line 1: loops.send_event is a write")
            assert "Fix: this server allows only: read. The operator sets that" in text(result)

    session(make_bridge())(body)
    assert writes(emulator) == []


def test_agent_account_grant_is_the_operators(make_bridge: Callable[..., Bridge]) -> None:
    policy = ServerPolicy(accounts={"loops": ["default"]})

    async def body(client: Client) -> None:
        result = await client.call_tool(
            "execute_lua", {"code": "return app.integrations.loops.marketing.get_current_user()"}
        )
        assert result.is_error and "marketing" in text(result)
        listed = await client.call_tool("lua_list_docs", {})
        assert listed.structured_content is not None
        assert listed.structured_content["integrations"][0]["accounts"] == ["default"]

    session(make_bridge(), policy)(body)


def test_agent_dry_run_then_apply_sends_exactly_the_plan(
    make_bridge: Callable[..., Bridge], emulator: EmulatorServer
) -> None:
    async def body(client: Client) -> None:
        planned = await client.call_tool(
            "execute_lua", {"code": TWO_WRITES, "input": {"email": ADA_EMAIL}, "dry_run": True}
        )
        data = planned.structured_content
        assert data is not None and not planned.is_error
        assert data["result"] == {"kind": "welcome"}
        plan_writes = data["plan"]["writes"]
        assert [w["request"]["json"]["eventName"] for w in plan_writes] == ["signup", "welcome"]
        assert text(planned).startswith("dry run: 2 writes planned, nothing sent. plan_id: plan_")
        assert "call apply_plan with this plan_id" in text(planned)
        assert writes(emulator) == []  # a dry run sends nothing
        applied = await client.call_tool("apply_plan", {"plan_id": data["plan_id"]})
        assert not applied.is_error, text(applied)
        assert text(applied).startswith(f"applied plan {data['plan_id']}: 2 of 2 planned writes")
        assert applied.structured_content is not None
        assert applied.structured_content["plan"]["complete"] is True
        # Exactly the planned requests, in order, nothing else.
        assert writes(emulator) == [
            ("POST", "/api/v1/events/send", w["request"]["json"]) for w in plan_writes
        ]
        again = await client.call_tool("apply_plan", {"plan_id": data["plan_id"]})
        assert again.is_error and text(again).startswith("PlanError: ")
        assert len(writes(emulator)) == 2

    session(make_bridge(), WRITE)(body)


def test_agent_apply_of_a_script_that_now_takes_another_path(
    make_bridge: Callable[..., Bridge], emulator: EmulatorServer
) -> None:
    async def body(client: Client) -> None:
        planned = await client.call_tool(
            "execute_lua", {"code": TWO_WRITES, "input": {"email": ADA_EMAIL}, "dry_run": True}
        )
        assert planned.structured_content is not None
        plan_id = planned.structured_content["plan_id"]
        # Between the dry run and the apply the remote data changes: the script now takes the
        # other branch at its second write.
        emulator.team("default").update_contact({"email": ADA_EMAIL, "firstName": "Augusta"})
        applied = await client.call_tool("apply_plan", {"plan_id": plan_id})
        assert applied.is_error
        lead = text(applied)
        assert lead.startswith("PlanMismatchError: write 2 (loops.send_event) differs from plan")
        assert "Fix: the script took another path" in lead
        assert "write 2: differs from the plan" in lead and "<- differs" in lead
        data = applied.structured_content
        assert data is not None and data["plan"]["sent"] == 1
        mismatch = data["plan"]["mismatch"]
        assert mismatch["planned"]["request"]["json"]["eventName"] == "welcome"
        assert mismatch["actual"]["request"]["json"]["eventName"] == "hello"
        # Only the write that matched the plan went out; the differing one never did.
        assert [b["eventName"] for _, _, b in writes(emulator)] == ["signup"]

    session(make_bridge(), WRITE)(body)


def test_agent_apply_unknown_and_expired_plans(
    make_bridge: Callable[..., Bridge], emulator: EmulatorServer
) -> None:
    bridge = make_bridge(plan_ttl=0.2)

    async def body(client: Client) -> None:
        unknown = await client.call_tool("apply_plan", {"plan_id": "plan_" + "0" * 32})
        assert unknown.is_error and text(unknown).startswith("UnknownPlanError: unknown plan id")
        planned = await client.call_tool(
            "execute_lua", {"code": TWO_WRITES, "input": {"email": ADA_EMAIL}, "dry_run": True}
        )
        assert planned.structured_content is not None
        time.sleep(0.3)
        expired = await client.call_tool(
            "apply_plan", {"plan_id": planned.structured_content["plan_id"]}
        )
        assert expired.is_error and text(expired).startswith("ExpiredPlanError: plan ")
        assert "Fix: dry-run the script again" in text(expired)

    session(bridge, WRITE)(body)
    assert writes(emulator) == []


def test_agent_input_too_deep_gets_a_fix_about_the_input(
    make_bridge: Callable[..., Bridge],
) -> None:
    nested: Any = 1
    for _ in range(70):
        nested = [nested]

    async def body(client: Client) -> None:
        result = await client.call_tool("execute_lua", {"code": "return 1", "input": nested})
        assert result.is_error and text(result).startswith("ValidationError: input")
        assert "Fix: the input argument does not fit" in text(result)
        assert "a value does not fit the action" not in text(result)

    session(make_bridge())(body)


def test_agent_dry_run_that_fails_returns_no_plan(make_bridge: Callable[..., Bridge]) -> None:
    async def body(client: Client) -> None:
        result = await client.call_tool("execute_lua", {"code": "error('no')", "dry_run": True})
        assert result.is_error and result.structured_content is not None
        assert "plan_id" not in result.structured_content

    session(make_bridge(), WRITE)(body)


def test_agent_limits_exceeded(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge(limits={"instructions": 100_000, "calls": 2})

    async def body(client: Client) -> None:
        spin = await client.call_tool("execute_lua", {"code": "while true do end"})
        assert spin.is_error
        assert text(spin).startswith("InstructionLimitError: instruction limit reached")
        assert "Fix: the run used its instruction budget" in text(spin)
        calls = await client.call_tool(
            "execute_lua",
            {"code": "for i = 1, 3 do app.integrations.loops.get_current_user() end"},
        )
        assert text(calls).startswith("CallLimitError") and "Fix: make fewer action calls" in text(
            calls
        )

    session(bridge)(body)


def test_agent_huge_output_and_result_are_cut(make_bridge: Callable[..., Bridge]) -> None:
    async def body(client: Client) -> None:
        result = await client.call_tool(
            "execute_lua",
            {"code": 'print(string.rep("x", 100000))\nreturn string.rep("y", 90000)'},
        )
        data = result.structured_content
        assert data is not None and data["ok"] is True
        assert data["truncated"] == {"output": 100001, "result": 90002}
        assert data["output"].startswith("x" * 1000)
        assert "of 100001 bytes; print less" in data["output"]
        assert "return only the fields or rows you need" in data["result"]
        # The lead says so up front, and the whole text stays near the limit.
        lead = text(result).split("\n")
        assert lead[0] == "ok: 0 action calls"
        assert lead[1].startswith(
            "Cut to fit: output cut (100,001 bytes); result cut (90,002 bytes of JSON"
        )
        assert len(text(result).encode()) < RESULT_LIMIT + 4096

    session(make_bridge())(body)


def test_agent_dry_run_of_many_big_writes_fits_the_limit(
    make_bridge: Callable[..., Bridge], emulator: EmulatorServer
) -> None:
    code = """
    local loops = app.integrations.loops
    local notes = {}
    for k = 1, 10 do notes["note" .. k] = string.rep("n", 400) end
    for i = 1, 30 do
      loops.send_event({email = "ada@example.com", event_name = "note", properties = notes})
    end
    return "done"
    """

    async def body(client: Client) -> None:
        result = await client.call_tool("execute_lua", {"code": code, "dry_run": True})
        data = result.structured_content
        assert data is not None and data["ok"] is True, text(result)
        assert data["truncated"] == {"calls": 30, "plan_writes": 30}
        whole = text(result)
        # 90 such writes once gave 850 KB: one full line and one full body per write.
        assert len(whole.encode()) < RESULT_LIMIT + 8192
        assert len(json.dumps(data).encode()) < RESULT_LIMIT + 4096
        assert 0 < len(data["plan"]["writes"]) < 30 and 0 < len(data["calls"]) < 30
        first = data["plan"]["writes"][0]["request"]["json"]
        assert first.startswith("[luabridge: body cut, ") and "make fewer or smaller" in first
        assert all("params" not in c for c in data["calls"])
        lines = whole.split("\n")
        assert lines[0].startswith("dry run: 30 writes planned, nothing sent.")
        assert lines[11] == "  ... and 20 more: 20 x loops.send_event"
        assert lines[12].startswith("Cut to fit: calls shown without params, ")
        assert "plan writes shown " in lines[12] and " of 30" in lines[12]
        # The plan itself is whole: applying it sends all 30 writes.
        applied = await client.call_tool("apply_plan", {"plan_id": data["plan_id"]})
        assert text(applied).startswith(f"applied plan {data['plan_id']}: 30 of 30")

    session(make_bridge(limits={"timeout": 60}), WRITE)(body)
    sent = [r for r in emulator.requests() if r["method"] == "POST" and r["status"] == 200]
    assert len(sent) == 30  # (the emulator's rate limit answers some with 429 first)


def test_agent_resources(make_bridge: Callable[..., Bridge]) -> None:
    async def body(client: Client) -> None:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert set(listed) == {
            "luabridge://reference/loops.md",
            "luabridge://stubs/loops.lua",
            "luabridge://guides/guide.md",
        }
        reference = await client.read_resource("luabridge://reference/loops.md")
        first = reference.contents[0]
        assert getattr(first, "text", "").startswith("# Loops — Lua API Reference")
        stubs = await client.read_resource("luabridge://stubs/loops.lua")
        assert "---@class" in getattr(stubs.contents[0], "text", "")

    session(make_bridge())(body)


def test_agent_runs_in_worker_processes(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge(isolation="process", workers=1)

    async def body(client: Client) -> None:
        result = await client.call_tool("execute_lua", {"code": "return 1"})
        assert result.structured_content is not None and result.structured_content["result"] == 1

    session(bridge)(body)


def test_agent_guide_examples_run(make_bridge: Callable[..., Bridge]) -> None:
    """Every Lua block of the built-in guide runs (as every example in the docs does)."""
    import re

    from luabridge.agent import GUIDES, _guide

    bridge = make_bridge()
    for name in GUIDES:
        blocks = re.findall(r"```lua\n(.*?)```", _guide(name), flags=re.S)
        assert blocks
        for block in blocks:
            result = bridge.run(block, {"name": "Ada"})
            assert result.ok, (block, result.error)


def test_agent_apply_refuses_a_plan_beyond_its_policy(
    make_bridge: Callable[..., Bridge], emulator: EmulatorServer
) -> None:
    """A plan made elsewhere (here: from Python) with --allow write cannot be applied through
    a read-only server, even with its id."""
    bridge = make_bridge()
    plan = bridge.plan(TWO_WRITES, {"email": ADA_EMAIL}, allow="write")

    async def body(client: Client) -> None:
        result = await client.call_tool("apply_plan", {"plan_id": plan.plan_id})
        assert result.is_error and "which this apply does not allow" in text(result)
        # A new dry run would be refused too: the fix is the operator's, not another plan.
        assert "Fix: this server allows only: read, and the plan needs more" in text(result)
        assert "dry-run the script again" not in text(result)

    session(bridge)(body)
    assert writes(emulator) == []


def test_agent_read_doc_cuts_a_long_page(
    make_bridge: Callable[..., Bridge], monkeypatch: pytest.MonkeyPatch
) -> None:
    import luabridge.agent

    monkeypatch.setattr(luabridge.agent, "RESULT_LIMIT", 2000)

    async def body(client: Client) -> None:
        page = text(await client.call_tool("lua_read_doc", {"topic": "loops"}))
        assert page.startswith("# Loops")
        assert "[luabridge: page cut at 2000 of " in page
        assert "read one action with lua_read_doc('<integration>.<action>')" in page

    session(make_bridge())(body)
