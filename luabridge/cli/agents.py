"""The agent front doors: ``luabridge mcp`` (stdio) and ``luabridge serve`` (HTTP).

Both serve the tools of :mod:`luabridge.agent` over one bridge built like every other command's
(``--emulator`` starts the emulators once, for the life of the server). The operator's flags
(``--allow``, ``--account``, limits) are the policy of every run; no agent can raise them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from luabridge.cli.options import (
    account_option,
    allow_option,
    command_bridge,
    fail,
    guard,
    limits_option,
    server_options,
)

if TYPE_CHECKING:
    from luabridge.agent import ServerPolicy
    from luabridge.bridge import Bridge

__all__ = ["mcp", "serve"]


def _needs_sdk() -> None:
    try:
        import mcp.server  # noqa: F401
    except ImportError:
        fail(
            "the MCP server needs the official mcp SDK, which is not installed; install it with "
            "pip install 'luabridge[mcp]'"
        )


def _policy(bridge: Bridge, allow: tuple[str, ...], accounts: tuple[str, ...]) -> ServerPolicy:
    from luabridge.agent import ServerPolicy

    granted = account_option(accounts)
    with guard():
        bridge._grants(granted)  # unknown integrations or accounts fail here, not per call
    return ServerPolicy(allow=allow_option(allow), accounts=granted)


@click.command()
@server_options
def mcp(
    allow: tuple[str, ...],
    accounts: tuple[str, ...],
    timeout: float | None,
    memory: int | None,
    max_calls: int | None,
    config: str | None,
    emulator: bool,
    isolation: str,
) -> None:
    """Serve luabridge's tools to an agent over the Model Context Protocol on stdio.

    Tools: lua_list_docs, lua_search_docs, lua_read_doc, lua_schema, execute_lua (code, input,
    dry_run) and apply_plan (plan_id). The flags are the policy of every run: read only unless
    --allow says otherwise, every configured account unless --account names some.

    \b
    Example (Claude Desktop / Claude Code runs this as the server's command):
      luabridge mcp --allow write --account <integration>=default --timeout 10 --emulator
    """
    _needs_sdk()
    allow_option(allow)
    account_option(accounts)
    limits = limits_option(timeout, memory, max_calls)
    with command_bridge(config, isolation=isolation, emulator=emulator, limits=limits) as bridge:
        from luabridge.agent import build_server

        server = build_server(bridge, _policy(bridge, allow, accounts))
        server.run("stdio")


@click.command()
@server_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="TCP port (0 picks a free one).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Worker processes running scripts at once (process isolation).",
)
def serve(
    allow: tuple[str, ...],
    accounts: tuple[str, ...],
    timeout: float | None,
    memory: int | None,
    max_calls: int | None,
    config: str | None,
    emulator: bool,
    isolation: str,
    host: str,
    port: int,
    workers: int,
) -> None:
    """Serve the MCP server over streamable HTTP at /mcp, with /health and webhooks.

    /mcp needs the bearer token set in LUABRIDGE_SERVE_TOKEN (at least 16 characters); the
    command refuses to start without one. Each integration's webhook receivers are mounted at
    /webhooks/<integration>/<account>. The policy flags are those of `luabridge mcp`.

    \b
    Example:
      export LUABRIDGE_SERVE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
      luabridge serve --allow write --port 8765
    """
    from luabridge.service import TOKEN_VARIABLE, check_token

    _needs_sdk()
    with guard():
        token = check_token(os.environ.get(TOKEN_VARIABLE))
    allow_option(allow)
    account_option(accounts)
    limits = limits_option(timeout, memory, max_calls)
    with command_bridge(
        config, isolation=isolation, emulator=emulator, limits=limits, workers=workers
    ) as bridge:
        from luabridge.service import create_app, serve as serve_app

        app = create_app(bridge, _policy(bridge, allow, accounts), token=token, host=host)
        with guard():
            serve_app(app, host, port)
