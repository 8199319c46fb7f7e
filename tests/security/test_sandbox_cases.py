"""Every case in the shared attack corpus, run by the corpus README's rules.

The corpus lives beside the repository (``../shared/sandbox-cases``); each ``.lua`` file opens
with ``-- expect:`` (``error``, ``contained`` or ``value`` plus ``-- value:``) and ``-- class:``
headers. The cases run through process isolation with the README's input, accounts and
environment; ``conftest.attack`` checks the rules shared by every case, and this module the
expected outcome and the memory bound.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from attacklib import MIB, attack, guarded_secrets_fixture, shared_bridge_fixture  # noqa: F401 (fixtures)

from luabridge import Bridge

CASES = Path(__file__).parents[2].parent / "shared" / "sandbox-cases"
TIMEOUT = 2.0  # the shared bridge's timeout; rule 1 allows 10 s, the kill needs timeout + 1 s

if not CASES.is_dir():
    pytest.skip(f"the shared attack corpus is not at {CASES}", allow_module_level=True)


def headers(source: str) -> dict[str, str]:
    found = {}
    for line in source.splitlines():
        m = re.match(r"^--\s*(\w+):\s?(.*)$", line)
        if not m:
            break
        found.setdefault(m.group(1), m.group(2).rstrip())
    return found


def case_files() -> list[Path]:
    return sorted(CASES.glob("*.lua"))


def test_corpus_present() -> None:
    assert case_files(), f"no .lua cases in {CASES}"


@pytest.mark.parametrize("path", case_files(), ids=lambda p: p.stem)
def test_sandbox_case(shared_bridge: Bridge, path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    source = path.read_text()
    head = headers(source)
    expect = head.get("expect")
    assert expect in ("error", "contained", "value"), f"{path.name}: bad expect header {expect!r}"
    done = attack(shared_bridge, source, capfd, timeout=TIMEOUT)
    result = done.result
    print(f"\n[case-timing] {path.stem} {done.elapsed:.3f}s {result.error and result.error.type}")
    if expect == "error":
        assert not result.ok, f"{path.name} succeeded: {result.value!r}"
        assert result.error is not None and result.error.type
    elif expect == "value":
        assert result.ok, f"{path.name} failed: {result.error}"
        assert str(result.value) == head["value"]
    if head.get("class", "").startswith("dos-mem"):
        # Rule 7: the worker's peak resident memory stays under 1 GiB.
        assert done.peak_rss < 1024 * MIB, f"peak RSS {done.peak_rss / MIB:.0f} MiB"
