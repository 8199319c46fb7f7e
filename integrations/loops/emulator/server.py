"""Run the emulator over real HTTP: in a background thread, or in the foreground for the CLI.

``EmulatorServer`` binds its socket in the caller's thread (so a busy port fails at once, with
a clear message), then runs uvicorn on that socket in a daemon thread. Port 0 lets the OS pick
a free port; ``base_url`` tells which one it got. ``serve_forever`` is what
``luabridge emulator`` calls.
"""

from __future__ import annotations

import enum
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self, TextIO, TypeAlias

import uvicorn

from .app import EmulatorApp, create_app
from .connections import ConnectionRegistry
from .faults import Fault, FaultKind
from .seed import DEMO_KEYS
from .state import EmulatorState
from .team import Team

__all__ = ["EmulatorServer", "EmulatorStartError", "Keys", "ServerStatus", "serve_forever"]

_START_TIMEOUT: Final = 5.0
_STOP_TIMEOUT: Final = 5.0

#: What ``keys`` may be: one key, a list of keys (one team each, named ``team-1``,
#: ``team-2``, ...), or a mapping of team name to its key or keys.
Keys: TypeAlias = str | Sequence[str] | Mapping[str, str | Sequence[str]]


class EmulatorStartError(RuntimeError):
    """The emulator could not start serving; the message says why and what to do."""


class ServerStatus(enum.Enum):
    """Lifecycle of an ``EmulatorServer``."""

    #: Built, not yet listening; ``start()`` may be called.
    CREATED = "created"
    #: Listening and answering requests; ``stop()`` ends it.
    RUNNING = "running"
    #: Stopped for good; a new ``EmulatorServer`` is needed to serve again.
    STOPPED = "stopped"


def _teams_from(keys: Keys | None) -> dict[str, list[str]]:
    if keys is None:
        return {name: [key] for name, key in DEMO_KEYS.items()}
    if isinstance(keys, str):
        return {"team-1": [keys]}
    if isinstance(keys, Mapping):
        return {name: [k] if isinstance(k, str) else list(k) for name, k in keys.items()}
    return {f"team-{index}": [key] for index, key in enumerate(keys, start=1)}


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # asyncio only turns Nagle's algorithm off for sockets that name IPPROTO_TCP; without it
    # every answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class EmulatorServer:
    """The Loops API emulator on a real socket, served from a background thread.

    - ``host``: interface to listen on (default ``127.0.0.1``; keep it local, there is no TLS
      and the admin API needs no key)
    - ``port``: TCP port; 0 (the default) lets the OS choose a free one
    - ``keys``: the API keys; see ``Keys``. ``None`` makes the demo teams ``default``,
      ``marketing`` and ``transactional`` with the keys of ``seed.DEMO_KEYS``
    - ``rate_limit``: requests per second per team; 0 turns limiting off (default 10)
    - ``seed``: fill each team with the demo data of ``seed.py`` (default ``True``)
    - ``reject_unknown_properties``: 400 instead of ignoring undefined contact keys
    - ``log_limit``: how many requests the request log keeps (default 10 000)

    Attributes: ``state`` (the ``EmulatorState``), ``keys`` (every configured key),
    ``base_url`` (``http://127.0.0.1:<port>/api/v1``), ``root_url``, ``admin_url``.

    >>> with EmulatorServer(keys=["test_key"], rate_limit=0) as server:
    ...     server.base_url.endswith("/api/v1")
    True
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        keys: Keys | None = None,
        rate_limit: int = 10,
        seed: bool = True,
        *,
        reject_unknown_properties: bool = False,
        log_limit: int = 10_000,
    ) -> None:
        teams = _teams_from(keys)
        self.state = EmulatorState(
            teams,
            rate_limit=rate_limit,
            seed=seed,
            reject_unknown_properties=reject_unknown_properties,
            log_limit=log_limit,
        )
        self.host = host
        self.port = port
        self.keys: list[str] = [key for team_keys in teams.values() for key in team_keys]
        self.status = ServerStatus.CREATED
        self._connections = ConnectionRegistry()
        self.app: EmulatorApp = create_app(self.state, self._connections)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        where = f" at {self.root_url}" if self.status is ServerStatus.RUNNING else ""
        return f"<EmulatorServer {self.status.value}{where}>"

    @property
    def root_url(self) -> str:
        """``http://host:port``, without the API prefix."""
        if self.status is ServerStatus.CREATED:
            raise RuntimeError("The emulator has no URL yet: call start() (or use `with`) first.")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The Loops API base URL clients should use, ``http://host:port/api/v1``."""
        return self.root_url + "/api/v1"

    @property
    def admin_url(self) -> str:
        """Where the test-only admin API lives, ``http://host:port/__emulator``."""
        return self.root_url + "/__emulator"

    @property
    def running(self) -> bool:
        return (
            self.status is ServerStatus.RUNNING
            and self._thread is not None
            and self._thread.is_alive()
        )

    # Lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen and serve in a background thread; returns once requests are answered."""
        if self.status is ServerStatus.RUNNING:
            raise RuntimeError(f"This emulator is already running at {self.root_url}.")
        if self.status is ServerStatus.STOPPED:
            raise RuntimeError(
                "This emulator was stopped and cannot be started again; create a new "
                "EmulatorServer instead."
            )
        try:
            sock = _bind(self.host, self.port)
        except OSError as exc:
            raise EmulatorStartError(
                f"The Loops emulator cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or exc}. "
                "Pick another port (0 lets the OS choose a free one) or stop whatever holds it."
            ) from exc
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            log_config=None,
            lifespan="off",
            access_log=False,
            http=self._connections.protocol_class(),
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name=f"loops-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                self._thread.join(_STOP_TIMEOUT)
                sock.close()
                self.status = ServerStatus.STOPPED
                cause = (
                    f"uvicorn failed: {self._failure!r}"
                    if self._failure is not None
                    else f"it was not serving after {_START_TIMEOUT:g} s"
                )
                raise EmulatorStartError(
                    f"The Loops emulator did not start on {self.host}:{self.port} ({cause}). "
                    "Check that uvicorn and starlette are installed and that nothing blocks "
                    "local sockets."
                ) from self._failure
            time.sleep(0.001)
        self.status = ServerStatus.RUNNING
        return self

    def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # we report it from start(); a thread cannot raise
            self._failure = exc
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end; calling it again does nothing."""
        for team in self.state.teams:
            team.set_webhook(None)
        if self.status is not ServerStatus.RUNNING:
            self.status = ServerStatus.STOPPED
            return
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(_STOP_TIMEOUT)
        if self._thread.is_alive():
            # Open connections would keep a graceful shutdown waiting; we stop regardless.
            self._server.force_exit = True
            self._thread.join(_STOP_TIMEOUT)
        self.status = ServerStatus.STOPPED

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server thread ends or ``timeout`` passes; ``True`` if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Python-level admin API (same operations as /__emulator) -------------------------------

    def reset(self) -> None:
        """Configured teams back to their seeded state; faults, log and clock cleared."""
        self.state.reset()

    def team(self, name: str) -> Team:
        return self.state.team(name)

    def team_for_key(self, key: str) -> Team:
        """The team ``key`` acts for; a ``KeyError`` if no team has it."""
        team = self.state.team_for_key(key)
        if team is None:
            raise KeyError("no team has this key; EmulatorServer.keys lists the configured keys")
        return team

    def add_team(
        self,
        name: str,
        keys: Sequence[str] = (),
        *,
        rate_limit: int | None = None,
        seed: bool | None = None,
    ) -> Team:
        """Add a team until the next reset (see ``EmulatorState.add_team``)."""
        return self.state.add_team(name, keys, rate_limit=rate_limit, seed=seed)

    def add_fault(
        self,
        kind: FaultKind | str,
        *,
        count: int = 1,
        delay: float = 1.0,
        path: str | None = None,
        method: str | None = None,
    ) -> Fault:
        """Plan a fault for the next ``count`` matching API requests."""
        return self.state.add_fault(kind, count=count, delay=delay, path=path, method=method)

    def set_webhook(self, team: str, url: str | None, secret: str | None = None) -> None:
        """Send ``team``'s contact events to ``url``, signed with ``secret`` (until reset)."""
        self.state.team(team).set_webhook(url, secret)

    def requests(self) -> list[dict[str, Any]]:
        """The request log, oldest first (see ``request_log.RequestRecord``)."""
        return self.state.request_log()


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    keys: Keys | None = None,
    rate_limit: int = 10,
    seed: bool = True,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve the emulator until Ctrl+C (or until ``stop`` is set).

    The first line on ``out`` (stdout) is the base URL, then one line per API key, so a script
    can read them; a human-readable note goes to ``err`` (stderr).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    with EmulatorServer(host, port, keys, rate_limit, seed) as server:
        print(server.base_url, file=out)
        for key in server.keys:
            print(key, file=out)
        out.flush()
        teams = ", ".join(
            f"{t.name} ({len(t.keys)} key{'s' if len(t.keys) != 1 else ''})"
            for t in server.state.teams
        )
        limit = f"{rate_limit}/s per team" if rate_limit > 0 else "off"
        print(
            f"Loops API emulator serving {server.base_url} (teams: {teams}; rate limit: {limit}; "
            f"admin API: {server.admin_url}). Press Ctrl+C to stop.",
            file=err,
        )
        err.flush()
        try:
            while server.running and not (stop is not None and stop.is_set()):
                if stop is not None:
                    stop.wait(0.2)
                else:
                    server.wait(0.2)
        except KeyboardInterrupt:
            pass
