"""One bridge shared by many threads: each run sees only its own input, accounts and state."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field, ValidationError as PydanticValidationError, create_model

from luabridge import ActionInput, ActionResult, Bridge, RunResult
from luabridge.action import built

THREADS = 8
RUNS = 400

SCRIPT = """
local input = ...
-- Reading an unset global raises, so a global left by another run would show up here.
local leaked, other = pcall(function() return shared_marker end)
assert(not leaked, "saw another run's global: " .. tostring(other))
shared_marker = input.id
local ns = app.integrations.notes[input.account]
local spin = 0
for i = 1, input.spin do spin = spin + i end
print("run " .. input.id)
local made = ns.create_note({title = "t" .. input.id, tags = {input.tag}})
local listed = ns.list_notes({tag = input.tag, limit = 50})
local rows = app.accounts("notes")
local names = {}
for _, row in ipairs(rows) do names[#names + 1] = row.name end
return {id = input.id, marker = shared_marker, made = made, count = #listed.notes,
        allowed = rows[1].allowed, dry_run = rows[1].dry_run, names = names, spin = spin}
"""


def plan(i: int) -> dict[str, Any]:
    """Run ``i``'s own options: which account, granted accounts, policy, dry run."""
    rng = random.Random(i)
    account = rng.choice(["default", "work"])
    grant = [account] if rng.random() < 0.5 else ["default", "work"]
    dry_run = rng.random() < 0.3
    return {
        "input": {"id": i, "account": account, "tag": f"tag-{i}", "spin": rng.randint(0, 3000)},
        "accounts": {"notes": grant},
        "allow": {"write"},
        "dry_run": dry_run,
    }


def check(i: int, options: dict[str, Any], result: RunResult) -> None:
    inp = options["input"]
    assert result.ok, (i, result.error)
    value = result.value
    assert (value["id"], value["marker"]) == (i, i)
    assert value["spin"] == inp["spin"] * (inp["spin"] + 1) // 2
    assert value["names"] == sorted(options["accounts"]["notes"])
    assert value["allowed"] == ["read", "write"]
    assert value["dry_run"] is options["dry_run"]
    assert result.output == f"run {i}\n"
    made = value["made"]
    if options["dry_run"]:
        assert made == {"success": True, "dry_run": True, "tags": [], "meta": {}}
        assert value["count"] == 0
    else:
        assert (made["account"], made["title"], made["tags"]) == (
            inp["account"],
            f"t{i}",
            [inp["tag"]],
        )
        assert value["count"] == 1
    assert [(c.account, c.action) for c in result.calls] == [
        (inp["account"], "create_note"),
        (inp["account"], "list_notes"),
    ]
    assert result.calls[0].params == {"title": f"t{i}", "tags": [inp["tag"]]}
    assert result.calls[0].outcome == ("dry_run" if options["dry_run"] else "ok")
    assert all(c.dry_run is options["dry_run"] for c in result.calls)


def test_concurrent_runs_do_not_see_each_other(bridge: Bridge) -> None:
    plans = [plan(i) for i in range(RUNS)]
    start = threading.Barrier(THREADS)

    def run(i: int) -> RunResult:
        if i < THREADS:
            start.wait()  # let the first runs of every thread begin together
        return bridge.run(SCRIPT, **plans[i])

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(run, range(RUNS)))

    ids = set()
    for i, (options, result) in enumerate(zip(plans, results, strict=True)):
        check(i, options, result)
        ids.add(result.execution_id)
    assert len(ids) == RUNS

    # Every real write landed once, in the account its run chose.
    for account in ("default", "work"):
        client = bridge._client("notes", account)
        titles = sorted(n["title"] for n in client.notes.values())  # type: ignore[attr-defined]
        expected = sorted(
            f"t{i}"
            for i, p in enumerate(plans)
            if not p["dry_run"] and p["input"]["account"] == account
        )
        assert titles == expected


def test_concurrent_failures_stay_in_their_run(bridge: Bridge) -> None:
    """Runs that fail (limits, errors, refusals) next to runs that succeed do not disturb them."""
    cases: list[tuple[str, dict[str, Any], str | None]] = [
        ("return app.integrations.notes.create_note({title = 'x'})", {}, "PermissionError"),
        ("while true do end", {"limits": {"instructions": 100_000}}, "InstructionLimitError"),
        ("error('boom')", {}, "RuntimeError"),
        ("local i = ... return i.v * 2", {"input": {"v": 21}}, None),
        ("local i = ... return i.v * 2", {"input": {"v": 5}}, None),
    ]

    def run(i: int) -> tuple[int, RunResult]:
        src, options, _ = cases[i % len(cases)]
        return i, bridge.run(src, **options)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for i, result in pool.map(run, range(200)):
            _, options, error_type = cases[i % len(cases)]
            if error_type is None:
                assert result.ok and result.value == options["input"]["v"] * 2
            else:
                assert result.error is not None and result.error.type == error_type


def _fresh_model(n: int) -> type[ActionInput]:
    """A new deferred action model, as an integration would declare one."""
    return create_model(
        f"FreshInput{n}",
        __base__=ActionInput,
        name=(str, Field(min_length=1)),
        count=(int, Field(default=1, ge=0)),
    )


def test_first_build_of_deferred_models_from_many_threads() -> None:
    """Eight threads making the first use of a model at once all get its own validator."""
    for n in range(20):
        model = _fresh_model(n)
        assert not model.__pydantic_complete__
        barrier = threading.Barrier(THREADS)

        def first_use(
            i: int, model: type[ActionInput] = model, barrier: threading.Barrier = barrier
        ) -> tuple[Any, str]:
            barrier.wait()
            good = built(model).model_validate({"name": f"n{i}", "count": i}, strict=True)
            try:
                built(model).model_validate({"name": "x", "extra": 1}, strict=True)
            except PydanticValidationError as exc:
                return good.model_dump(), exc.errors()[0]["type"]
            return good.model_dump(), "accepted"

        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(first_use, range(THREADS)))
        assert answers == [
            ({"name": f"n{i}", "count": i}, "extra_forbidden") for i in range(THREADS)
        ]
        assert model.__pydantic_complete__


def test_importing_loops_builds_no_model() -> None:
    """Declaring the Loops actions costs no schema build; the first call of one pays for it."""
    code = (
        "import integrations.loops.models as m, pydantic\n"
        "models = [v for v in vars(m).values() if isinstance(v, type) "
        "and issubclass(v, pydantic.BaseModel) and v.__module__ == m.__name__]\n"
        "print(len(models), sum(v.__pydantic_complete__ for v in models))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) > 30 and out[1] == "0"


def test_building_a_model_builds_the_models_nested_in_it() -> None:
    row = create_model("FreshRow", __base__=ActionResult, name=(str, Field(default="")))
    outer = create_model(
        "FreshOutput",
        __base__=ActionResult,
        rows=(list[row], Field(default_factory=list)),  # type: ignore[valid-type]
        first=(row | None, Field(default=None)),  # type: ignore[valid-type]
    )
    assert not row.__pydantic_complete__ and not outer.__pydantic_complete__
    built(outer)
    assert outer.__pydantic_complete__ and row.__pydantic_complete__
