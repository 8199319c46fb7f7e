"""Timing, process and table helpers shared by the luabridge benchmarks in ``bench.py``.

Subject and baseline are timed in alternating order within one run, so a busy neighbour on
the machine slows both about equally; each benchmark reports the median of the per-repeat
ratios and their spread. The emulator helper starts ``luabridge emulator`` as a child process.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Emulator",
    "Row",
    "Timing",
    "cpu_seconds",
    "format_table",
    "paired",
    "peak_rss_kib",
]


@dataclass
class Timing:
    """Seconds per repeat of a subject and of its baseline, measured pairwise."""

    subject: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [s / b for s, b in zip(self.subject, self.baseline, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> tuple[float, float]:
        r = self.ratios
        return min(r), max(r)


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired(
    subject: Callable[[], object],
    baseline: Callable[[], object],
    *,
    warmup: int = 1,
    repeats: int = 7,
    warm: Callable[[], object] | None = None,
) -> Timing:
    """Warm both up, then time ``repeats`` pairs, alternating which of the two goes first.

    ``warm``, when given, replaces the ``warmup`` full pairs (for benchmarks too long to run
    once more just to warm up).
    """
    if warm is not None:
        warm()
    else:
        for _ in range(warmup):
            subject()
            baseline()
    timing = Timing()
    for i in range(repeats):
        if i % 2 == 0:
            timing.subject.append(_timed(subject))
            timing.baseline.append(_timed(baseline))
        else:
            timing.baseline.append(_timed(baseline))
            timing.subject.append(_timed(subject))
    return timing


@dataclass
class Row:
    """One line of the results table.

    ``higher_is_better`` flips the comparison with ``target`` (benchmark 7 is a speed-up).
    """

    number: str
    name: str
    timing: Timing
    target: float
    subject_label: str = "luabridge"
    baseline_label: str = "baseline"
    higher_is_better: bool = False
    unit_scale: float = 1000.0  # seconds -> milliseconds

    @property
    def holds(self) -> bool:
        ratio = self.timing.ratio
        return ratio >= self.target if self.higher_is_better else ratio <= self.target


def format_table(rows: list[Row]) -> str:
    """The results as a Markdown table (it is pasted into docs/performance.md as printed)."""
    head = (
        "| # | benchmark | luabridge ms (median) | baseline ms (median) | ratio (median) "
        "| ratio min-max | target | holds |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---|---|"]
    for row in rows:
        t = row.timing
        low, high = t.spread
        sign = ">=" if row.higher_is_better else "<="
        lines.append(
            f"| {row.number} | {row.name} "
            f"| {statistics.median(t.subject) * row.unit_scale:.1f} "
            f"| {statistics.median(t.baseline) * row.unit_scale:.1f} "
            f"| {t.ratio:.2f} | {low:.2f}-{high:.2f} | {sign} {row.target:g} "
            f"| {'yes' if row.holds else 'NO'} |"
        )
    return "\n".join(lines)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, from ``/proc/<pid>/stat``."""
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields_[11]) + int(fields_[12])) / ticks


def peak_rss_kib(pid: int) -> int:
    """The peak resident set size (``VmHWM``) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Emulator:
    """``luabridge emulator`` in a child process on 127.0.0.1 with its rate limit off.

    We run it in its own process so that its request handling does not share our interpreter
    lock with the code under test: on two cores the client and the server then each get one.
    """

    def __init__(self, key: str, *, rate_limit: int = 0) -> None:
        self.key = key
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "luabridge",
                "emulator",
                "--port",
                "0",
                "--rate-limit",
                str(rate_limit),
                "--key",
                key,
                "--no-seed",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(f"the emulator did not start (first line: {self.base_url!r})")
        self.proc.stdout.readline()  # the key line
        self.root_url = self.base_url.removesuffix("/api/v1")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
