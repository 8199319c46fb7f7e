"""Shared set-up of the sandbox attack tests: secrets to guard, a hostile-run bridge, the rules.

(A plain module rather than a ``conftest.py``: the runtime tests import their own conftest by
name, and a second module called ``conftest`` would shadow it. The test modules import the
fixtures from here.)

Every attack runs through process isolation on a bridge configured like a real deployment: two
Loops accounts with (fake) keys pointed at the session emulator, only ``default`` granted, the
read-only policy. ``attack`` runs one script and checks the rules every case shares (time bound,
no pwned marker, no secret or Python internals in what comes back, sizes, input unchanged, host
stdout/stderr quiet, and the next runs on the same bridge behave normally).
"""

from __future__ import annotations

import copy
import glob
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from luabridge import Bridge
from luabridge.errors import ERROR_TYPES
from luabridge.pool import WorkerPool

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

KEYS = {
    "LOOPS_API_KEY": "lbsec-default-7d1f0c9a2b4e6f8a",
    "LOOPS_API_KEY_MARKETING": "lbsec-marketing-3e5a7c9b1d2f4a6c",
}
ENV_CANARY = ("LUABRIDGE_TEST_CANARY", "lbsec-env-canary-5b8d2e4f6a1c3e9d")
CANARY_FILE = Path("/tmp/sandbox-canary-file.txt")
FILE_CANARY = "lbsec-file-canary-9f3b1d5e7a2c4b6d"
SECRETS = [*KEYS.values(), ENV_CANARY[1], FILE_CANARY]
PYTHON_INTERNALS = [
    "<bound method",
    "object at 0x",
    "Traceback (most recent call last)",
    "site-packages",
    str(Path(__file__).parents[2]),
]
INPUT = {"email": "a@b.co", "n": 1}
MIB = 1024 * 1024
LIMIT_TYPES = {
    "TimeoutError",
    "InstructionLimitError",
    "MemoryError",
    "OutputLimitError",
    "CallLimitError",
    "ResultLimitError",
}


@pytest.fixture(scope="session", name="guarded_secrets")
def guarded_secrets_fixture() -> Iterator[list[str]]:
    """Plant an environment and a file canary for the whole session; yield every secret."""
    created = not CANARY_FILE.exists()
    if created:
        CANARY_FILE.write_text(f"canary {FILE_CANARY}\n")
    old = os.environ.get(ENV_CANARY[0])
    os.environ[ENV_CANARY[0]] = ENV_CANARY[1]
    try:
        yield SECRETS
    finally:
        if old is None:
            os.environ.pop(ENV_CANARY[0], None)
        else:
            os.environ[ENV_CANARY[0]] = old
        if created:
            CANARY_FILE.unlink(missing_ok=True)


def hostile_bridge(base_url: str, **limits: Any) -> Bridge:
    environ = {**KEYS, "LOOPS_BASE_URL": base_url}
    return Bridge.from_config(environ=environ, isolation="process", workers=2, limits=limits)


def one_state_bridge(isolation: str, base_url: str, *, timeout: float) -> Bridge:
    """A bridge whose runs all land on one Lua state (one worker under process isolation),
    already warmed by one run, with no ledger."""
    environ = {**KEYS, "LOOPS_BASE_URL": base_url}
    bridge = Bridge.from_config(
        environ=environ, isolation=isolation, workers=1, ledger=None, limits={"timeout": timeout}
    )
    assert bridge.run("return 1").ok
    return bridge


@pytest.fixture(scope="module", name="shared_bridge")
def shared_bridge_fixture(
    loops_emulator: EmulatorServer, guarded_secrets: list[str]
) -> Iterator[Bridge]:
    """One process-isolated bridge per test module (a 2 s default timeout keeps the suite short)."""
    bridge = hostile_bridge(loops_emulator.base_url, timeout=2)
    yield bridge
    t0 = time.monotonic()
    bridge.close()
    assert time.monotonic() - t0 < 10, "closing the bridge took 10 s or more"


def pwned_files() -> set[str]:
    return set(glob.glob("/tmp/pwned-*"))


class RssSampler:
    """Samples the peak resident memory (VmHWM) of the pool's workers while a run goes on."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in self.pool.pids():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            self._stop.wait(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Attack:
    result: Any
    elapsed: float
    peak_rss: int  # bytes, the highest worker VmHWM seen during the run


def _texts(result: Any) -> dict[str, str]:
    return {
        "value": json.dumps(result.value),
        "output": result.output,
        "error": "" if result.error is None else f"{result.error.type}: {result.error.message}",
        "calls": json.dumps([c.to_dict() for c in result.calls]),
    }


def attack(
    bridge: Bridge,
    source: str,
    capfd: pytest.CaptureFixture[str],
    *,
    timeout: float,
    input: Any = None,
    accounts: Any = None,
    limits: dict[str, Any] | None = None,
    allow: Any = None,
) -> Attack:
    """Run ``source`` as an attack and check every rule that does not depend on the case."""
    given = copy.deepcopy(INPUT) if input is None else input
    before_input = copy.deepcopy(given)
    before_pwned = pwned_files()
    capfd.readouterr()
    pool = bridge._worker_pool()
    with RssSampler(pool) as sampler:
        t0 = time.monotonic()
        result = bridge.run(
            source,
            input=given,
            accounts={"loops": ["default"]} if accounts is None else accounts,
            limits={"timeout": timeout, **(limits or {})},
            allow=allow,
        )
        elapsed = time.monotonic() - t0
    # Rule 1: the time bound (timeout plus one second, kill included).
    assert elapsed < timeout + 1.0, f"took {elapsed:.2f} s (timeout {timeout} s)"
    # Rule 2: no marker, and the result is a RunResult (no exception escaped).
    assert pwned_files() - before_pwned == set(), "a /tmp/pwned-* marker appeared"
    assert result.ok or (result.error is not None and result.error.type in ERROR_TYPES)
    # Rules 3, 4 and 7: nothing secret or Python-internal leaves, sizes stay bounded.
    host_out, host_err = capfd.readouterr()
    for where, text in {**_texts(result), "host stdout": host_out, "host stderr": host_err}.items():
        # Call records hold each call's parameters, bounded per call by limits.argument_bytes.
        if where != "calls":
            assert len(text.encode()) <= MIB + 64 * 1024, f"{where} is {len(text)} bytes"
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked through {where}"
        for marker in PYTHON_INTERNALS:
            assert marker not in text, f"{marker!r} appeared in {where}"
    # Rule 5: the caller's input object is untouched.
    assert given == before_input
    # Rule 6: the same bridge serves the next runs normally.
    ok = bridge.run('return "PROBE-OK"', accounts={"loops": ["default"]})
    assert ok.ok and ok.value == "PROBE-OK", ok.error
    bad = bridge.run('error("PROBE-ERROR")', accounts={"loops": ["default"]})
    assert not bad.ok and bad.error is not None
    assert bad.error.type == "RuntimeError" and "PROBE-ERROR" in bad.error.message
    return Attack(result, elapsed, sampler.peak_kib * 1024)
