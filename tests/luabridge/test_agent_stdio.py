"""``luabridge mcp`` and ``luabridge serve`` as real processes, driven by the SDK's clients.

The stdio server's accounts point at the session's emulator (so its request log shows what
was sent); one test uses ``--emulator``, which the server starts once and keeps. ``serve`` is
started on a free port and reached over streamable HTTP with and without the bearer token.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from click.testing import CliRunner
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent
from starlette.testclient import TestClient

from integrations.loops.emulator import ADA_EMAIL, DEMO_KEYS, EmulatorServer
from luabridge import Action, ActionInput, ActionResult, Bridge, Example, Integration
from luabridge.agent import ServerPolicy
from luabridge.cli import cli
from luabridge.service import TOKEN_VARIABLE, create_app

TOKEN = "test-token-0123456789abcdef"
TWO_EVENTS = f"""
app.integrations.loops.send_event({{email = "{ADA_EMAIL}", event_name = "signup"}})
app.integrations.loops.send_event({{email = "{ADA_EMAIL}", event_name = "welcome"}})
return "sent"
"""
BRANCHING = f"""
local loops = app.integrations.loops
local ada = loops.find_contact({{email = "{ADA_EMAIL}"}})
loops.send_event({{email = "{ADA_EMAIL}", event_name = "first"}})
local second = ada.contact.first_name == "Ada" and "planned" or "changed"
loops.send_event({{email = "{ADA_EMAIL}", event_name = second}})
"""


def env_for(emulator: EmulatorServer, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LOOPS_") and k != TOKEN_VARIABLE
    }
    env.update(
        LOOPS_API_KEY=DEMO_KEYS["default"],
        LOOPS_BASE_URL=emulator.base_url,
        LUABRIDGE_LOOPS_DIRECTORY=str(tmp_path / "contacts.sqlite3"),
    )
    return env


def text(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return str(block.text)


def writes(emulator: EmulatorServer) -> list[tuple[str, str, Any]]:
    return [
        (r["method"], r["path"], r["body"]) for r in emulator.requests() if r["method"] != "GET"
    ]


async def plan_and_apply(client: Client, emulator: EmulatorServer) -> None:
    """The flow every front door must offer: list, search, read, run, dry run, apply."""
    tools = {t.name for t in (await client.list_tools()).tools}
    assert {"execute_lua", "apply_plan", "lua_search_docs"} <= tools
    found = await client.call_tool("lua_search_docs", {"query": "send an event"})
    assert found.structured_content is not None
    assert found.structured_content["hits"][0]["topic"] == "loops.send_event"
    doc = await client.call_tool("lua_read_doc", {"topic": "loops.send_event"})
    assert text(doc).startswith("## send_event")
    ran = await client.call_tool("execute_lua", {"code": "return 1 + 1"})
    assert ran.structured_content is not None and ran.structured_content["result"] == 2
    planned = await client.call_tool("execute_lua", {"code": TWO_EVENTS, "dry_run": True})
    assert planned.structured_content is not None, text(planned)
    plan = planned.structured_content["plan"]
    assert writes(emulator) == []
    applied = await client.call_tool(
        "apply_plan", {"plan_id": planned.structured_content["plan_id"]}
    )
    assert not applied.is_error, text(applied)
    assert writes(emulator) == [
        ("POST", "/api/v1/events/send", w["request"]["json"]) for w in plan["writes"]
    ]
    # A plan whose script now takes another path: nothing differing is sent.
    emulator.reset()
    planned = await client.call_tool("execute_lua", {"code": BRANCHING, "dry_run": True})
    assert planned.structured_content is not None, text(planned)
    emulator.team("default").update_contact({"email": ADA_EMAIL, "firstName": "Augusta"})
    stopped = await client.call_tool(
        "apply_plan", {"plan_id": planned.structured_content["plan_id"]}
    )
    assert stopped.is_error and text(stopped).startswith("PlanMismatchError: write 2")
    assert [b["eventName"] for _, _, b in writes(emulator)] == ["first"]


def test_mcp_stdio_server(emulator: EmulatorServer, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "luabridge", "mcp", "--allow", "write", "--account", "loops=default"],
        env=env_for(emulator, tmp_path),
        cwd=str(tmp_path),
    )

    async def main() -> None:
        async with Client(params) as client:
            await plan_and_apply(client, emulator)
            bad = await client.call_tool("execute_lua", {"code": "return )"})
            assert bad.is_error and text(bad).startswith("SyntaxError at line 1: ")
            refused = await client.call_tool(
                "execute_lua", {"code": 'app.integrations.loops.delete_contact({email = "x@y.z"})'}
            )
            assert text(refused).startswith("PermissionError at line 1")

    anyio.run(main)


def test_mcp_stdio_emulator_lives_for_the_session(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPS_")}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "luabridge", "mcp", "--emulator", "--allow", "write", "--timeout", "10"],
        env=env,
        cwd=str(tmp_path),
    )
    create = 'return app.integrations.loops.create_contact({email = "new@example.com"})'
    find = 'return app.integrations.loops.find_contact({email = "new@example.com"})'

    async def main() -> None:
        async with Client(params) as client:
            made = await client.call_tool("execute_lua", {"code": create})
            assert made.structured_content is not None, text(made)
            assert made.structured_content["result"]["success"] is True
            # The same emulator answers the next call: the contact is there.
            again = await client.call_tool("execute_lua", {"code": find})
            assert again.structured_content is not None
            assert again.structured_content["result"]["contact"]["email"] == "new@example.com"
            listed = await client.call_tool("lua_list_docs", {})
            assert listed.structured_content is not None
            assert listed.structured_content["policy"]["limits"]["timeout"] == 10

    anyio.run(main)


def test_mcp_refuses_unknown_accounts_and_bad_flags() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["mcp", "--account", "loops"], catch_exceptions=False)
    assert result.exit_code == 2 and "expected INTEGRATION=ACCOUNT" in result.stderr
    result = runner.invoke(cli, ["mcp", "--allow", "everything"], catch_exceptions=False)
    assert result.exit_code == 2
    result = runner.invoke(
        cli, ["mcp", "--emulator", "--account", "loops=nope"], catch_exceptions=False
    )
    assert result.exit_code == 2 and "account 'nope' is not configured" in result.stderr


def test_mcp_account_without_a_key_says_how_to_configure_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith("LOOPS_"):
            monkeypatch.delenv(var)
    result = CliRunner().invoke(cli, ["mcp", "--account", "loops=default"])
    assert result.exit_code == 2
    assert "loops account 'default' is not configured; configured: none" in result.stderr
    assert "to configure it, set LOOPS_API_KEY or use --emulator" in result.stderr


# -- serve ------------------------------------------------------------------------------------


@pytest.fixture
def served(emulator: EmulatorServer, tmp_path: Path) -> Iterator[str]:
    """A real ``luabridge serve`` on a free port; yields its base URL."""
    env = env_for(emulator, tmp_path)
    env[TOKEN_VARIABLE] = TOKEN
    proc = subprocess.Popen(
        [sys.executable, "-m", "luabridge", "serve", "--allow", "write", "--port", "0"],
        env=env,
        cwd=str(tmp_path),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, f"serve did not start: {line}{proc.stderr.read() if proc.poll() else ''}"
        url = f"http://127.0.0.1:{match.group(1)}"
        for _ in range(100):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                anyio.run(anyio.sleep, 0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_serve_over_http_with_the_token(served: str, emulator: EmulatorServer) -> None:
    async def main() -> None:
        async with httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as http:
            async with Client(streamable_http_client(served + "/mcp", http_client=http)) as client:
                await plan_and_apply(client, emulator)

    anyio.run(main)


def test_serve_without_or_with_a_wrong_token_is_refused(served: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        response = httpx.post(
            served + "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={**headers, "Accept": "application/json, text/event-stream"},
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN_VARIABLE in response.json()["message"]

    async def main() -> None:
        async with httpx2.AsyncClient(timeout=10) as http:
            async with Client(streamable_http_client(served + "/mcp", http_client=http)) as c:
                await c.list_tools()

    with pytest.raises(BaseException):  # noqa: B017 - the SDK wraps the 401 in a task group
        anyio.run(main)


def test_serve_health(served: str) -> None:
    response = httpx.get(served + "/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["integrations"] == ["loops"]


@pytest.mark.parametrize("token", [None, "short"])
def test_serve_refuses_to_start_without_a_token(
    token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if token is None:
        monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(TOKEN_VARIABLE, token)
    result = CliRunner().invoke(cli, ["serve", "--emulator"], catch_exceptions=False)
    assert result.exit_code == 2
    assert f"luabridge serve needs a bearer token for /mcp: set {TOKEN_VARIABLE}" in result.stderr


def test_serve_busy_port(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    port = int(emulator.base_url.split(":")[2].split("/")[0])
    result = CliRunner().invoke(
        cli, ["serve", "--emulator", "--isolation", "inprocess", "--port", str(port)]
    )
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1" in result.stderr
    assert "pick another --port" in result.stderr


@pytest.mark.parametrize("host", ["999.1.1.1", "192.0.2.1"])
def test_serve_bad_host_names_the_host(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    result = CliRunner().invoke(
        cli, ["serve", "--emulator", "--isolation", "inprocess", "--host", host]
    )
    assert result.exit_code == 2 and f"cannot listen on {host}:" in result.stderr
    assert "give --host an address of this machine" in result.stderr
    assert "--port" not in result.stderr


# -- webhook mounts ---------------------------------------------------------------------------


class _Out(ActionResult):
    pass


def _receiver(account: str, settings: Any) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = f"{account} {scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


HOOKED = Integration(
    name="hooked",
    title="Hooked",
    env_prefix="HOOKED",
    default_base_url="https://hooked.invalid",
    open_client=lambda settings: type("C", (), {"close": lambda self: None})(),
    needs_key=False,
    webhooks=_receiver,
    actions=(
        Action(
            name="ping",
            summary="Ping.",
            input=ActionInput,
            output=_Out,
            effect="read",
            handler=lambda ctx, p: {},
            examples=(Example("app.integrations.hooked.ping()"),),
        ),
    ),
)


def test_serve_mounts_each_integrations_webhooks_per_account() -> None:
    with Bridge.from_config(
        "/dev/null", environ={}, integrations=[HOOKED], isolation="inprocess"
    ) as bridge:
        app = create_app(bridge, ServerPolicy(), token=TOKEN)
        with TestClient(app) as http:
            hook = http.post("/webhooks/hooked/default/events", content=b"{}")
            assert hook.status_code == 200
            assert hook.text.startswith("default ") and hook.text.endswith("/events")
            assert http.post("/webhooks/hooked/other").status_code in (401, 404)
            health = http.get("/health").json()
            assert health["webhooks"] == ["/webhooks/hooked/default"]
            assert http.post("/mcp", json={}).status_code == 401


def test_create_app_refuses_a_short_token() -> None:
    with Bridge.from_config("/dev/null", environ={}, integrations=[HOOKED]) as bridge:
        with pytest.raises(ValueError, match="at least 16 characters"):
            create_app(bridge, ServerPolicy(), token="x")
