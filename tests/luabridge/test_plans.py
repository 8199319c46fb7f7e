"""Plan, then apply (luabridge.plans): what a dry run planned is exactly what apply sends.

Runs use the in-memory notes integration (see conftest.py); the Loops tests check the same
against the emulator's request log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import NOTES, make_bridge

from luabridge import Bridge
from luabridge.errors import ExpiredPlanError, PlanError, UnknownPlanError, error_class
from luabridge.plans import (
    DEFAULT_PLAN_TTL,
    LedgerPlanStore,
    MemoryPlanStore,
    Plan,
    render_mismatch,
)

TWO_WRITES = """
local input = ...
local notes = app.integrations.notes
notes.list_notes({})
notes.create_note({title = "first"})
notes.create_note({title = input.second or "second"})
return "done"
"""


def titles(bridge: Bridge, account: str = "default") -> list[str]:
    client = bridge._client("notes", account)
    return [n["title"] for n in client.notes.values()]  # type: ignore[attr-defined]


def test_plan_records_writes_reads_and_result(bridge: Bridge) -> None:
    plan = bridge.plan(TWO_WRITES, {}, allow="write")
    assert plan.ok and plan.plan_id.startswith("plan_") and len(plan.plan_id) == 37
    assert [w["action"] for w in plan.writes] == ["create_note", "create_note"]
    assert plan.writes[0]["request"]["json"]["title"] == "first"
    assert [r["action"] for r in plan.reads] == ["list_notes"]
    assert plan.result["result"] == "done"
    assert plan.run is not None and plan.run.ok
    assert plan.expires_at - plan.created_at == DEFAULT_PLAN_TTL == 900
    assert titles(bridge) == []  # a dry run sends nothing
    summary = plan.summary()
    assert summary["plan_id"] == plan.plan_id and len(summary["writes"]) == 2
    assert summary["expires_at"].endswith("Z")


def test_apply_sends_exactly_the_plan(bridge: Bridge) -> None:
    plan = bridge.plan(TWO_WRITES, {}, allow="write")
    applied = bridge.apply(plan.plan_id)
    assert applied.ok and applied.complete and applied.sent == applied.planned == 2
    assert applied.mismatch is None and applied.result.value == "done"
    assert titles(bridge) == ["first", "second"]
    envelope = applied.to_dict()
    assert envelope["plan"]["plan_id"] == plan.plan_id and envelope["plan"]["sent"] == 2


def test_apply_stops_before_the_first_write_that_differs(bridge: Bridge) -> None:
    plan = bridge.plan(TWO_WRITES, {}, allow="write")
    # The script now takes another path: its input says so (as a changed remote state would).
    stored = bridge.plans.load(plan.plan_id)
    assert stored is not None
    stored.input = {"second": "changed"}
    bridge.plans.save(stored)
    applied = bridge.apply(plan.plan_id)
    assert not applied.ok and not applied.complete
    assert applied.result.error is not None
    assert applied.result.error.type == "PlanMismatchError"
    assert "write 2 (notes.create_note) differs from plan" in applied.result.error.message
    assert titles(bridge) == ["first"]  # the differing write was never sent
    assert applied.sent == 1 and applied.mismatch is not None
    assert applied.mismatch["differs"] == ["json"]
    # The planned write that differed was not sent, and unsent says so.
    assert len(applied.unsent) == 1 and len(applied.to_dict()["plan"]["unsent"]) == 1
    assert [c.outcome for c in applied.result.calls] == ["ok", "ok", "stopped"]
    table = render_mismatch(applied.mismatch)
    assert "write 2: differs from the plan" in table
    row = next(line for line in table.splitlines() if line.strip().startswith("json"))
    assert '"second"' in row and '"changed"' in row and row.endswith("<- differs")


def test_apply_stops_a_write_the_plan_does_not_have(bridge: Bridge) -> None:
    source = "local n = ... \nfor i = 1, n do app.integrations.notes.create_note({title = 'x'}) end"
    plan = bridge.plan(source, 1, allow="write")
    stored = bridge.plans.load(plan.plan_id)
    assert stored is not None
    stored.input = 3
    bridge.plans.save(stored)
    applied = bridge.apply(plan.plan_id)
    assert applied.result.error is not None
    assert "write 2 (notes.create_note) is not in plan" in applied.result.error.message
    assert applied.mismatch is not None and applied.mismatch["planned"] is None
    assert titles(bridge) == ["x"]
    assert "not in the plan" in render_mismatch(applied.mismatch)


def test_apply_mismatch_cannot_be_caught_with_pcall(bridge: Bridge) -> None:
    source = (
        "local n = ...\n"
        "for i = 1, n do\n"
        "  local ok = pcall(app.integrations.notes.create_note, {title = 't' .. i})\n"
        "end\nreturn 'finished'"
    )
    plan = bridge.plan(source, 1, allow="write")
    stored = bridge.plans.load(plan.plan_id)
    assert stored is not None
    stored.input = 3
    bridge.plans.save(stored)
    applied = bridge.apply(plan.plan_id)
    assert applied.result.error is not None and applied.result.value is None
    assert titles(bridge) == ["t1"]


def test_apply_with_fewer_writes_reports_the_unsent_ones(bridge: Bridge) -> None:
    source = "local n = ...\nfor i = 1, n do app.integrations.notes.create_note({title = 'x'}) end"
    plan = bridge.plan(source, 2, allow="write")
    stored = bridge.plans.load(plan.plan_id)
    assert stored is not None
    stored.input = 1
    bridge.plans.save(stored)
    applied = bridge.apply(plan.plan_id)
    assert applied.ok and not applied.complete and applied.sent == 1 and len(applied.unsent) == 1


def test_apply_unknown_plan_id(bridge: Bridge) -> None:
    with pytest.raises(UnknownPlanError, match="unknown plan id 'plan_nope'"):
        bridge.apply("plan_nope")


def test_apply_expired_plan(bridge: Bridge) -> None:
    plan = bridge.plan(TWO_WRITES, {}, allow="write", ttl=0.05)
    time.sleep(0.1)
    with pytest.raises(
        ExpiredPlanError, match=r"expired at .* \(0\.05 seconds after its dry run\); dry-run the"
    ):
        bridge.apply(plan.plan_id)
    assert titles(bridge) == []


def test_apply_twice_is_refused(bridge: Bridge) -> None:
    plan = bridge.plan(TWO_WRITES, {}, allow="write")
    bridge.apply(plan.plan_id)
    with pytest.raises(PlanError, match="already applied"):
        bridge.apply(plan.plan_id)
    assert titles(bridge) == ["first", "second"]


def test_apply_plan_of_a_failed_dry_run_is_refused(bridge: Bridge) -> None:
    plan = bridge.plan("app.integrations.notes.create_note({title = 'x'})\nerror('boom')")
    assert not plan.ok  # also: create_note needs allow write
    with pytest.raises(PlanError, match="comes from a dry run that failed"):
        bridge.apply(plan.plan_id)


def test_plan_with_bad_input_cannot_be_applied(bridge: Bridge) -> None:
    plan = bridge.plan("return 1", float("nan"))
    assert not plan.ok and plan.input is None
    with pytest.raises(PlanError):
        bridge.apply(plan.plan_id)


def test_apply_elsewhere_than_planned_is_refused(tmp_path: Path) -> None:
    store = LedgerPlanStore(tmp_path / "ledger.sqlite3")
    first = make_bridge(plans=store)
    plan = first.plan(TWO_WRITES, {}, allow="write")
    env = {"NOTES_API_KEY": "k", "NOTES_BASE_URL": "https://elsewhere.invalid"}
    with Bridge.from_config(
        environ=env, integrations=[NOTES], isolation="inprocess", plans=store
    ) as other:
        with pytest.raises(PlanError, match=r"at https://notes\.invalid, and this bridge sends"):
            other.apply(plan.plan_id)
    first.close()


def test_apply_in_a_worker_process() -> None:
    """The guard runs in the bridge's process; a stop ends the worker's run the same way."""
    with make_bridge(isolation="process", workers=1) as bridge:
        plan = bridge.plan(TWO_WRITES, {}, allow="write")
        stored = bridge.plans.load(plan.plan_id)
        assert stored is not None
        stored.input = {"second": "other"}
        bridge.plans.save(stored)
        applied = bridge.apply(plan.plan_id)
        assert applied.result.error is not None
        assert applied.result.error.type == "PlanMismatchError"
        assert titles(bridge) == ["first"]


def test_plan_mismatch_error_class() -> None:
    cls = error_class("PlanMismatchError")
    assert cls.__name__ == "PlanMismatchError"


def test_ledger_store_round_trip(tmp_path: Path) -> None:
    store = LedgerPlanStore(tmp_path / "ledger.sqlite3")
    with make_bridge(plans=store) as bridge:
        plan = bridge.plan(TWO_WRITES, {"second": "s"}, allow="write")
        loaded = store.load(plan.plan_id)
        assert loaded is not None and loaded.to_dict() == plan.to_dict()
        assert store.load("plan_" + "0" * 32) is None
    # Another process (here: another bridge on the same file) applies it.
    with make_bridge(plans=LedgerPlanStore(tmp_path / "ledger.sqlite3")) as other:
        assert other.apply(plan.plan_id).complete


def test_ledger_store_says_expired_not_unknown(tmp_path: Path) -> None:
    with make_bridge(plans=LedgerPlanStore(tmp_path / "l.sqlite3")) as bridge:
        plan = bridge.plan("return 1", ttl=-60)
        with pytest.raises(ExpiredPlanError):
            bridge.apply(plan.plan_id)


def test_ledger_store_with_an_open_ledger(tmp_path: Path) -> None:
    from luabridge.ledger.sqlite import SQLiteLedger

    with SQLiteLedger(tmp_path / "l.sqlite3") as ledger:
        store = LedgerPlanStore(ledger)
        with make_bridge(plans=store) as bridge:
            plan = bridge.plan("return 1")
        assert ledger.load_plan(plan.plan_id) is not None  # the bridge did not close it


def test_from_config_keeps_plans_in_the_configured_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LUABRIDGE_LEDGER", raising=False)
    config = tmp_path / "luabridge.toml"
    config.write_text(f'ledger = "{tmp_path / "runs.sqlite3"}"\n', encoding="utf-8")
    env = {"NOTES_API_KEY": "k"}
    with Bridge.from_config(config, environ=env, integrations=[NOTES], isolation="inprocess") as b:
        assert isinstance(b.plans, LedgerPlanStore)
    config.write_text("ledger = false\n", encoding="utf-8")
    with Bridge.from_config(config, environ=env, integrations=[NOTES], isolation="inprocess") as b:
        assert isinstance(b.plans, MemoryPlanStore)


def test_memory_store_forgets_long_expired_plans() -> None:
    store = MemoryPlanStore()
    with make_bridge(plans=store) as bridge:
        old = bridge.plan("return 1", ttl=-7200)
        bridge.plan("return 2")
    assert store.load(old.plan_id) is None


def test_plan_from_dict_ignores_unknown_keys(bridge: Bridge) -> None:
    plan = bridge.plan("return 1")
    data = json.loads(json.dumps(plan.to_dict()))
    data["future_field"] = 1
    assert Plan.from_dict(data).plan_id == plan.plan_id


def test_apply_under_a_ceiling_refuses_a_plan_that_needs_more(bridge: Bridge) -> None:
    """A server's policy caps what it applies: a plan made with more is refused unsent."""
    plan = bridge.plan("app.integrations.notes.create_note({title = 'x'})", allow="write")
    with pytest.raises(PlanError, match="allowing write, which this apply does not allow"):
        bridge.apply(plan.plan_id, allow="read")
    with pytest.raises(PlanError, match="may use notes account"):
        bridge.apply(plan.plan_id, allow="write", accounts={"notes": ["work"]})
    assert titles(bridge) == []
    applied = bridge.apply(plan.plan_id, allow="write", accounts={"notes": ["default", "work"]})
    assert applied.complete


def test_a_bridge_with_a_ledger_keeps_its_plans_there(tmp_path: Path) -> None:
    """One ledger per bridge: its plans go through the same connection as its journal."""
    from luabridge.ledger.sqlite import SQLiteLedger

    path = tmp_path / "l.sqlite3"
    with make_bridge(ledger=path) as bridge:
        assert isinstance(bridge.plans, LedgerPlanStore)
        plan = bridge.plan(TWO_WRITES, {}, allow="write")
        assert bridge.apply(plan.plan_id).complete
    with SQLiteLedger(path) as ledger:
        stored = ledger.load_plan(plan.plan_id)
        assert stored is not None and stored["applied_at"] is not None
