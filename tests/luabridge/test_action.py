"""Action metadata: models named by reference (``model_ref``) are imported on first use only."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from luabridge.action import Action, ActionInput, ActionResult, Example, model_ref

MODELS = """
from pydantic import Field

from luabridge.action import ActionInput, ActionResult


class PingInput(ActionInput):
    key: str | None = Field(default=None, description="a key")


class PingOutput(ActionResult):
    pong: bool = Field(default=True, description="always true")


NOT_A_MODEL = 42
"""


@pytest.fixture
def models_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a fresh module of models, not imported yet."""
    name = f"refmodels_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _action(input: Any, output: Any, **extra: Any) -> Action:
    return Action(
        name="ping",
        summary="Ping.",
        input=input,
        output=output,
        effect="read",
        handler=lambda ctx, params: {},
        examples=(Example(code="app.integrations.x.ping()"),),
        **extra,
    )


def test_referenced_models_are_imported_on_first_use(models_module: str) -> None:
    action = _action(
        model_ref(f"{models_module}:PingInput"), model_ref(f"{models_module}:PingOutput")
    )
    assert models_module not in sys.modules
    model = action.input
    assert models_module in sys.modules
    assert model is sys.modules[models_module].PingInput and issubclass(model, ActionInput)
    assert action.input is model  # loaded once, then an ordinary attribute
    assert issubclass(action.output, ActionResult)


def test_idempotency_param_of_a_referenced_model_is_checked_on_first_use(
    models_module: str,
) -> None:
    fine = _action(
        model_ref(f"{models_module}:PingInput"),
        model_ref(f"{models_module}:PingOutput"),
        idempotency_param="key",
    )
    assert fine.input.__name__ == "PingInput"
    wrong = _action(
        model_ref(f"{models_module}:PingInput"),
        model_ref(f"{models_module}:PingOutput"),
        idempotency_param="nope",
    )
    with pytest.raises(ValueError, match="idempotency_param 'nope' is not a field of PingInput"):
        _ = wrong.input


def test_a_reference_that_does_not_resolve_names_the_action_and_the_model(
    models_module: str,
) -> None:
    missing = _action(model_ref(f"{models_module}:Missing"), model_ref("no_such_module_x:Out"))
    with pytest.raises(ValueError, match=f"'ping': its input model '{models_module}:Missing'"):
        _ = missing.input
    with pytest.raises(ValueError, match="its output model 'no_such_module_x:Out' cannot be"):
        _ = missing.output
    not_model = _action(model_ref(f"{models_module}:NOT_A_MODEL"), ActionResult)
    with pytest.raises(ValueError, match=r"is not a pydantic model \(got 42\)"):
        _ = not_model.input


@pytest.mark.parametrize("path", ["module.only", ":Name", "module:", ""])
def test_a_malformed_reference_is_refused_at_once(path: str) -> None:
    with pytest.raises(ValueError, match=r"a model reference is 'package\.module:ClassName'"):
        model_ref(path)


def test_a_run_that_calls_no_action_builds_no_model(tmp_path: Path) -> None:
    """`luabridge run` of a script that never calls Loops imports neither pydantic's model
    machinery nor the Loops models; a call imports them and validates as always."""
    code = textwrap.dedent(
        """
        import sys
        from luabridge.cli import main

        try:
            main(["run", "-", "--isolation", "inprocess", *sys.argv[1:]])
        except SystemExit:
            pass
        heavy = ("pydantic.main", "integrations.loops.models")
        print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LUABRIDGE_LEDGER": str(tmp_path / "ledger.sqlite3"),
        "LUABRIDGE_LOOPS_DIRECTORY": str(tmp_path / "contacts.sqlite3"),
    }

    def run(source: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            input=source,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    quiet = run('print("hello")')
    assert quiet.stdout == "hello\n"
    assert quiet.stderr.strip().splitlines()[-1] == "[]"
    calling = run(
        'return app.integrations.loops.create_contact{emial = "x"}',
        "--emulator",
        "--allow",
        "write",
    )
    assert "loops.create_contact: unknown parameter 'emial' (did you mean 'email'?)" in (
        calling.stderr
    )
    assert (
        calling.stderr.strip().splitlines()[-1] == "['integrations.loops.models', 'pydantic.main']"
    )
