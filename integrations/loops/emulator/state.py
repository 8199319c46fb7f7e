"""Everything the emulator remembers: teams and their keys, faults, the request log, the clock.

``EmulatorState`` is shared by the HTTP app and by tests that call it directly, so every method
takes its one re-entrant lock (the teams use the same lock). ``reset`` puts it back the way it
was built: the configured teams, freshly seeded, and nothing else.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .faults import Fault, FaultKind, FaultPlan
from .request_log import RequestLog
from .seed import DEMO_KEYS, seed_demo
from .team import Team

__all__ = ["TEAM_NAME_PATTERN", "EmulatorState", "TeamSpec"]

#: Team names are used in admin URLs, so they stay URL-safe.
TEAM_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class TeamSpec:
    """How to (re)build one configured team."""

    name: str
    keys: tuple[str, ...]
    rate_limit: int | None = None
    seed: bool | None = None


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key or any(ch.isspace() for ch in key):
        raise ValueError(f"an API key must be a non-empty string without spaces, got {key!r}")
    return key


class EmulatorState:
    """The emulator's memory.

    - ``teams``: team name → its API keys (one key, or several sharing the team's data);
      ``None`` makes the demo teams of ``seed.DEMO_KEYS``
    - ``rate_limit``: default requests per second per team; 0 turns limiting off (default 10)
    - ``seed``: fill each team with the demo data of ``seed.py`` (default ``True``)
    - ``reject_unknown_properties``: answer 400 to contact keys that are not defined properties
      instead of ignoring them (default ``False``, which is what Loops appears to do)
    - ``log_limit``: how many requests the log keeps (default 10 000)

    >>> state = EmulatorState({"acme": ["key_1", "key_2"]}, seed=False)
    >>> state.team_for_key("key_2").name
    'acme'
    """

    def __init__(
        self,
        teams: Mapping[str, Sequence[str]] | None = None,
        *,
        rate_limit: int = 10,
        seed: bool = True,
        reject_unknown_properties: bool = False,
        log_limit: int = 10_000,
    ) -> None:
        if rate_limit < 0:
            raise ValueError(f"rate_limit must be 0 (off) or a positive number, got {rate_limit}")
        self.lock = threading.RLock()
        self.rate_limit = rate_limit
        self.seed = seed
        self.reject_unknown_properties = reject_unknown_properties
        self._configured = (rate_limit, reject_unknown_properties)
        self.faults = FaultPlan()
        self.requests = RequestLog(log_limit)
        self._offset = 0.0
        self._teams: dict[str, Team] = {}
        self._by_key: dict[str, Team] = {}
        configured = teams if teams is not None else {n: [k] for n, k in DEMO_KEYS.items()}
        self._specs = [TeamSpec(name, tuple(keys)) for name, keys in configured.items()]
        self.reset()

    # Clock ---------------------------------------------------------------------------------

    def now(self) -> float:
        """Wall-clock seconds as the emulator sees them (moved on by ``advance_clock``)."""
        return time.time() + self._offset

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock forward, e.g. past the 24 h idempotency window."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward; got {seconds} seconds")
        with self.lock:
            self._offset += seconds
            return self._offset

    # Teams ---------------------------------------------------------------------------------

    @property
    def teams(self) -> list[Team]:
        with self.lock:
            return list(self._teams.values())

    def team(self, name: str) -> Team:
        """The team called ``name``; a ``KeyError`` listing the known names otherwise."""
        with self.lock:
            try:
                return self._teams[name]
            except KeyError:
                known = ", ".join(self._teams) or "none"
                raise KeyError(f"no team named {name!r}; known teams: {known}") from None

    def team_for_key(self, key: str | None) -> Team | None:
        """The team an API key acts for, or ``None`` for a missing or unknown key."""
        if not key:
            return None
        with self.lock:
            return self._by_key.get(key)

    def add_team(
        self,
        name: str,
        keys: Sequence[str] = (),
        *,
        rate_limit: int | None = None,
        seed: bool | None = None,
    ) -> Team:
        """Add a team at runtime (``reset`` removes it again).

        ``rate_limit`` and ``seed`` default to the state's settings. Names must be URL-safe
        and unused; keys must be unused by any team.
        """
        with self.lock:
            return self._build(TeamSpec(name, tuple(keys), rate_limit, seed))

    def add_key(self, team: str, key: str) -> Team:
        """Give an existing team another API key (kept until ``reset``)."""
        with self.lock:
            target = self.team(team)
            _check_key(key)
            if key in self._by_key:
                raise ValueError(f"the key is already used by team {self._by_key[key].name!r}")
            target.keys.append(key)
            self._by_key[key] = target
            return target

    def set_rate_limit(self, limit: int, team: str | None = None) -> None:
        """Change one team's limit, or with ``team=None`` every team's and the default."""
        if limit < 0:
            raise ValueError(f"rate limit must be 0 (off) or a positive number, got {limit}")
        with self.lock:
            targets = [self.team(team)] if team is not None else list(self._teams.values())
            if team is None:
                self.rate_limit = limit
            for target in targets:
                target.rate_limit = limit
                target.window.clear()

    def _build(self, spec: TeamSpec) -> Team:
        if not isinstance(spec.name, str) or not TEAM_NAME_PATTERN.fullmatch(spec.name):
            raise ValueError(
                f"team names must be 1-64 letters, digits, '_', '.' or '-' starting with a "
                f"letter or digit, got {spec.name!r}"
            )
        if spec.name in self._teams:
            raise ValueError(f"a team named {spec.name!r} already exists")
        for key in spec.keys:
            _check_key(key)
            if key in self._by_key:
                raise ValueError(f"the key is already used by team {self._by_key[key].name!r}")
        if len(set(spec.keys)) != len(spec.keys):
            raise ValueError(f"team {spec.name!r} lists the same key twice")
        rate_limit = self.rate_limit if spec.rate_limit is None else spec.rate_limit
        if rate_limit < 0:
            raise ValueError(f"rate limit must be 0 (off) or a positive number, got {rate_limit}")
        team = Team(
            spec.name,
            spec.keys,
            rate_limit=rate_limit,
            reject_unknown_properties=self.reject_unknown_properties,
            clock=self.now,
            lock=self.lock,
        )
        if self.seed if spec.seed is None else spec.seed:
            seed_demo(team)
        self._teams[team.name] = team
        for key in spec.keys:
            self._by_key[key] = team
        return team

    # Faults, log, reset --------------------------------------------------------------------

    def add_fault(
        self,
        kind: FaultKind | str,
        *,
        count: int = 1,
        delay: float = 1.0,
        path: str | None = None,
        method: str | None = None,
    ) -> Fault:
        """Plan a fault for the next ``count`` matching API requests (see ``faults.Fault``)."""
        fault = Fault(FaultKind(kind), count, delay, path, method)
        with self.lock:
            return self.faults.add(fault)

    def request_log(self) -> list[dict[str, Any]]:
        """The request log as JSON-ready dicts, oldest first."""
        with self.lock:
            return self.requests.to_json()

    def reset(self) -> None:
        """Back to the configured teams, freshly seeded; faults, log and clock offset cleared.

        Teams and keys added after construction are dropped.
        """
        with self.lock:
            for team in self._teams.values():
                team.set_webhook(None)
            self._teams.clear()
            self._by_key.clear()
            self.faults.clear()
            self.requests.clear()
            self._offset = 0.0
            self.rate_limit, self.reject_unknown_properties = self._configured
            for spec in self._specs:
                self._build(spec)
