"""The ``luabridge`` command group and its core commands (see :mod:`luabridge.cli`)."""

from __future__ import annotations

import json
from typing import Any

import click

from luabridge import __version__
from luabridge.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageProblem,
)
from luabridge.errors import error_envelope

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageProblem",
    "cli",
]


def _usage_envelope(command: str | None, message: str) -> dict[str, Any]:
    """What ``--json`` prints for a usage error: ``call``'s own shape, else the run envelope."""
    if command == "call":
        error = {"type": "UsageError", "message": message}
        return {"data": None, "meta": {"executionId": None}, "error": error}
    return error_envelope("UsageError", message)


class _Group(click.Group):
    """The command group, which also reports usage errors as JSON where JSON was asked for.

    Under ``--json`` (and for ``call``, whose output is always JSON) a usage error is also a
    JSON document on standard output, with ``error.type`` ``UsageError``: a program that asked
    for JSON always gets exactly one document to parse, and the human message still goes to
    standard error with exit code 2.
    """

    def invoke(self, ctx: click.Context) -> Any:
        raw = list(ctx.meta.get("luabridge.args", ()))
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            command = next((a for a in raw if not a.startswith("-")), None)
            if exc.exit_code == EXIT_USAGE and ("--json" in raw or command == "call"):
                message = exc.format_message()
                click.echo(json.dumps(_usage_envelope(command, message), ensure_ascii=False))
                # The message alone on standard error: click's usage block is for people.
                click.echo(f"Error: {message}", err=True)
                raise click.exceptions.Exit(exc.exit_code) from exc
            raise

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        return _pack_commands().get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_pack_commands()})

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        raw = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta["luabridge.args"] = raw
        return ctx


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="luabridge")
def cli() -> None:
    """Run sandboxed Lua scripts against SaaS APIs, read their docs, call actions.

    Exit codes: 0 success, 1 the script or action failed, 2 usage or configuration error.
    """


def _pack_commands() -> dict[str, click.Command]:
    """``luabridge <integration> <command>``: the commands each installed pack declares.

    Looked up only when the name is not a core command, so the core commands never pay for
    importing the packs."""
    from luabridge.registry import discover_integrations

    groups: dict[str, click.Command] = {}
    for integ in discover_integrations():
        if integ.commands:
            group = click.Group(integ.name, help=f"Commands of the {integ.title} integration.")
            for command in integ.commands:
                group.add_command(command)
            groups[integ.name] = group
    return groups


#: The core commands, by module of ``luabridge.cli``: one line per module keeps additions apart.
_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("commands", ("run", "docs", "schema", "actions", "accounts", "call", "emulator")),
    ("apply", ("apply",)),
    ("agents", ("mcp", "serve")),
    ("fleet", ("worker", "submit")),
    ("runs", ("runs",)),
)


def _register() -> None:
    import importlib

    for module_name, names in _COMMANDS:
        module = importlib.import_module(f"luabridge.cli.{module_name}")
        for name in names:
            cli.add_command(getattr(module, name))


_register()
