"""Plan, then apply: what a dry run would send, kept under an id until it is applied or expires.

``Bridge.plan`` runs a script as a dry run and keeps a :class:`Plan`: the script, its input and
policy, every write it would send (integration, account, action and the exact request), the
reads it made and its result. ``Bridge.apply(plan_id)`` runs the same script with the same
input for real, with a :class:`PlanGuard` as the run's write guard: before each write is sent
the guard compares it with the plan's write at the same position, and the first write that
differs (another action, account, method, URL, query or body) or that the plan does not have
stops the run there, unsent, with ``PlanMismatchError``. So what a person approved is exactly
what is sent, or less, never something else.

Rules a user can rely on:

- a plan lives ``DEFAULT_PLAN_TTL`` seconds (15 minutes) unless the bridge or the call says
  otherwise, and is applied at most once;
- a plan whose dry run failed cannot be applied (fix the script and plan again);
- URLs are compared relative to the account's base URL, and a plan applies only to the same
  base URL (or to an emulator when it was made against one), so a plan never goes to a host
  that nobody saw;
- headers are not compared: a derived idempotency key comes from the execution id, and the
  apply is another execution than its dry run.

Stores: :class:`LedgerPlanStore` keeps plans in the run ledger when one is configured (the
default of ``Bridge.from_config``, so that ``luabridge apply`` in a later process finds what
``luabridge run --dry-run`` planned); :class:`MemoryPlanStore` keeps them in this process (the
default of a bare ``Bridge``, and of any bridge whose ledger is off).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from luabridge.bridge import RunResult
    from luabridge.ledger.base import Ledger

__all__ = [
    "DEFAULT_PLAN_TTL",
    "ApplyResult",
    "LedgerPlanStore",
    "MemoryPlanStore",
    "Plan",
    "PlanGuard",
    "PlanStore",
    "iso_time",
    "new_plan_id",
    "render_mismatch",
]

#: How long a plan can be applied after it was made, in seconds.
DEFAULT_PLAN_TTL = 15 * 60.0

#: How long a store remembers an expired plan, so that applying it says "expired", not "unknown".
_KEEP_EXPIRED = 3600.0

#: The parts of a write that must match the plan, in the order a difference is reported.
_COMPARED = ("integration", "account", "action", "method", "url", "params", "json")


def new_plan_id() -> str:
    return "plan_" + uuid.uuid4().hex


def iso_time(timestamp: float) -> str:
    """A Unix time as ``2026-12-03T07:15:00Z``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Plan:
    """One dry run, kept so that it can be applied.

    - ``plan_id``: ``plan_`` and 32 hex digits
    - ``source``, ``input``, ``allow``, ``accounts``, ``limits``: what the apply runs with
      (``accounts`` is the grant, ``{integration: [account]}``; ``limits`` the effective limits)
    - ``writes``: the writes the dry run would send, in order: ``integration``, ``account``,
      ``action``, ``effect``, ``params`` and ``request`` (method, url, params, json, headers)
    - ``reads``: the read calls it made, as call records
    - ``result``: the dry run's envelope (``RunResult.to_dict()``)
    - ``targets``: ``{integration: {account: {"base_url": ..., "emulated": bool}}}``
    - ``created_at``, ``expires_at``, ``applied_at``: Unix times (``applied_at`` None until
      applied)
    - ``run``: the dry run's :class:`RunResult` itself, on the plan ``Bridge.plan`` returns
      (not kept in the store)
    """

    plan_id: str
    source: str
    input: Any
    allow: list[str]
    accounts: dict[str, list[str]]
    limits: dict[str, Any]
    writes: list[dict[str, Any]]
    reads: list[dict[str, Any]]
    result: dict[str, Any]
    targets: dict[str, dict[str, dict[str, Any]]]
    created_at: float
    expires_at: float
    applied_at: float | None = None
    run: RunResult | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the dry run ended normally (only then can the plan be applied)."""
        return bool(self.result.get("ok"))

    def to_dict(self) -> dict[str, Any]:
        """Everything but ``run``, as JSON-compatible data (what a store keeps)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "run"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        names = {f.name for f in fields(cls)} - {"run"}
        return cls(**{k: data[k] for k in names if k in data})

    def summary(self) -> dict[str, Any]:
        """What an agent or a person needs to decide: the id, when it expires, the writes."""
        return {
            "plan_id": self.plan_id,
            "expires_at": iso_time(self.expires_at),
            "writes": [
                {
                    "integration": w["integration"],
                    "account": w["account"],
                    "action": w["action"],
                    "effect": w["effect"],
                    "request": _request_view(w.get("request")),
                }
                for w in self.writes
            ],
            "reads": len(self.reads),
        }


def _request_view(request: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if request is None:
        return None
    return {k: request.get(k) for k in ("method", "url", "params", "json")}


def _comparable(write: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    request = write.get("request") or {}
    url = str(request.get("url", ""))
    base = base_url.rstrip("/")
    if base and (url == base or url.startswith(base + "/")):
        url = "{base_url}" + url[len(base) :]
    return {
        "integration": write.get("integration"),
        "account": write.get("account"),
        "action": write.get("action"),
        "method": request.get("method") if write.get("request") is not None else None,
        "url": url if write.get("request") is not None else None,
        "params": request.get("params") or None,
        "json": request.get("json"),
    }


def _base_url(targets: Mapping[str, Any], write: Mapping[str, Any]) -> str:
    target = targets.get(str(write.get("integration")), {}).get(str(write.get("account")), {})
    return str(target.get("base_url") or "")


class PlanGuard:
    """The write guard of one apply (see ``luabridge.dispatch.WriteGuard``).

    ``targets`` are the base URLs of the applying bridge's accounts. After the run, ``sent``
    is how many planned writes went out and ``mismatch`` (None when none) is
    ``{"index", "planned", "actual", "differs"}`` for the write that stopped it.
    """

    def __init__(self, plan: Plan, targets: Mapping[str, Any]) -> None:
        self.plan = plan
        self.targets = targets
        self.sent = 0
        self.mismatch: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __call__(self, write: dict[str, Any]) -> str | None:
        with self._lock:
            if self.mismatch is not None:
                return f"plan {self.plan.plan_id}: an earlier write differed; nothing more is sent"
            index = self.sent
            planned = self.plan.writes[index] if index < len(self.plan.writes) else None
            actual = _comparable(write, _base_url(self.targets, write))
            if planned is not None:
                expected = _comparable(planned, _base_url(self.plan.targets, planned))
                differs = [k for k in _COMPARED if expected[k] != actual[k]]
                if not differs:
                    self.sent += 1
                    return None
            else:
                differs = ["not in the plan"]
            self.mismatch = {
                "index": index,
                "planned": planned,
                "actual": write,
                "differs": differs,
            }
        label = f"{write['integration']}.{write['action']}"
        if planned is None:
            return (
                f"write {index + 1} ({label}) is not in plan {self.plan.plan_id}, which has "
                f"{len(self.plan.writes)} write(s); it was not sent. The script took another "
                "path than its dry run: dry-run it again and approve the new plan"
            )
        return (
            f"write {index + 1} ({label}) differs from plan {self.plan.plan_id} in "
            f"{', '.join(differs)}; it was not sent. The script took another path than its dry "
            "run: dry-run it again and approve the new plan"
        )


@dataclass
class ApplyResult:
    """The outcome of ``Bridge.apply``.

    - ``plan``: the plan that was applied; ``result``: the run's :class:`RunResult`
    - ``sent``: how many planned writes were sent; ``planned``: how many the plan has
    - ``mismatch``: the write that stopped the run, beside the planned one (None when none)
    - ``unsent``: the planned writes that were not sent (from a mismatch on, or those the
      script ended before)
    - ``ok``: the run ended normally (a mismatch always ends it in error)
    - ``complete``: every planned write was sent and nothing differed
    """

    plan: Plan
    result: RunResult
    sent: int
    mismatch: dict[str, Any] | None = None
    unsent: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def planned(self) -> int:
        return len(self.plan.writes)

    @property
    def complete(self) -> bool:
        return self.mismatch is None and self.sent == self.planned

    def to_dict(self) -> dict[str, Any]:
        """The run envelope with a ``plan`` section: id, planned and sent counts, mismatch."""
        out = self.result.to_dict()
        out["plan"] = {
            "plan_id": self.plan.plan_id,
            "planned": self.planned,
            "sent": self.sent,
            "complete": self.complete,
            "mismatch": self.mismatch,
            "unsent": [_request_view(w.get("request")) for w in self.unsent],
        }
        return out


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 70 else text[:67] + "..."


def render_mismatch(mismatch: Mapping[str, Any]) -> str:
    """The planned and the actual write side by side, one row per compared field."""
    planned = mismatch.get("planned")
    actual = mismatch["actual"]
    rows = [("field", "planned", "actual", "")]
    for key in _COMPARED:
        if key in ("integration", "account", "action"):
            left = None if planned is None else planned.get(key)
            right = actual.get(key)
        else:
            left = None if planned is None else (planned.get("request") or {}).get(key)
            right = (actual.get("request") or {}).get(key)
        mark = "<- differs" if key in mismatch.get("differs", ()) else ""
        rows.append((key, _shown(left), _shown(right), mark))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    head = f"write {int(mismatch['index']) + 1}: " + (
        "not in the plan (planned: nothing)" if planned is None else "differs from the plan"
    )
    lines = [head]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(3)]
        lines.append(("  " + "  ".join(cells) + "  " + row[3]).rstrip())
    return "\n".join(lines)


# -- stores -----------------------------------------------------------------------------------


class PlanStore(Protocol):
    """Where plans are kept between the dry run and the apply."""

    def save(self, plan: Plan) -> None: ...

    def load(self, plan_id: str) -> Plan | None: ...


class MemoryPlanStore:
    """Plans in this process's memory; expired ones are forgotten an hour after expiry."""

    def __init__(self) -> None:
        self._plans: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def save(self, plan: Plan) -> None:
        now = time.time()
        with self._lock:
            for key in [k for k, p in self._plans.items() if p["expires_at"] + _KEEP_EXPIRED < now]:
                del self._plans[key]
            self._plans[plan.plan_id] = plan.to_dict()

    def load(self, plan_id: str) -> Plan | None:
        with self._lock:
            data = self._plans.get(plan_id)
        return None if data is None else Plan.from_dict(json.loads(json.dumps(data)))


class LedgerPlanStore:
    """Plans in the run ledger (see ``luabridge.ledger``), so that any process using the same
    ledger can apply them: ``luabridge apply`` after ``luabridge run --dry-run``, another
    worker behind ``luabridge serve``. ``ledger`` is a ``Ledger``, a file path (opened on
    first use and closed by :meth:`close`) or a function returning the ledger to use (a
    bridge's own, which the bridge closes).

    The ledger keeps each plan an hour past its expiry, so that applying a late one says
    "expired" rather than "unknown".
    """

    def __init__(self, ledger: Ledger | str | os.PathLike[str] | Callable[[], Ledger]) -> None:
        self._given = ledger
        self._ledger: Ledger | None = None
        self._owned = False
        self._lock = threading.Lock()

    def _open(self) -> Ledger:
        from luabridge.ledger.base import Ledger

        with self._lock:
            if self._ledger is None:
                given = self._given
                if isinstance(given, Ledger):
                    self._ledger = given
                elif isinstance(given, str | os.PathLike):
                    from luabridge.ledger.sqlite import SQLiteLedger

                    self._ledger = SQLiteLedger(given)
                    self._owned = True
                else:
                    self._ledger = given()  # the bridge's ledger; the bridge closes it
            return self._ledger

    def save(self, plan: Plan) -> None:
        self._open().save_plan(plan.plan_id, plan.to_dict(), plan.expires_at + _KEEP_EXPIRED)

    def load(self, plan_id: str) -> Plan | None:
        data = self._open().load_plan(plan_id)
        return None if data is None else Plan.from_dict(data)

    def close(self) -> None:
        """Close the ledger if this store opened it."""
        with self._lock:
            ledger, self._ledger = self._ledger, None
        if ledger is not None and self._owned:
            ledger.close()
