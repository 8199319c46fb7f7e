"""Process isolation, the parent's side: a pool of worker processes (``luabridge.worker``).

The parent never embeds Lua for an isolated run. It sends ``(source, input, limits, namespace
spec)`` to a pre-started worker over a socket pair and serves the worker's host calls (action
calls, help, schemas) itself, so API keys and clients stay in the parent: a compromised worker
holds no secret. The parent kills the worker with SIGKILL half a second after the run's timeout
(a script stuck inside one C call, a lupa deadlock), reports a worker that died (native crash)
as a clean error, and replaces it. Workers are recycled after ``max_runs`` runs and after any
run that hit the memory limit or was killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from luabridge.frames import (
    Closed as _Closed,
    FrameTimeout as _Timeout,
    recv as _recv,
    send as _send,
)
from luabridge.limits import Limits
from luabridge.sandbox import HOST_METHODS, Host, RunOutcome, error_dict

__all__ = ["WorkerPool"]

_KILL_GRACE = 0.5  # seconds past the timeout before the worker is killed
_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SYSTEMROOT")


class _Worker:
    """One worker process and the parent's end of its socket."""

    def __init__(self, address_space: int) -> None:
        parent, child = socket.socketpair()
        env = {k: os.environ[k] for k in _SAFE_ENV if k in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "luabridge.worker", str(child.fileno()), str(address_space)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(child.fileno(),),
            env=env,
            close_fds=True,
        )
        child.close()
        self.sock = parent
        self.runs = 0
        self.ready = False

    def wait_ready(self, timeout: float) -> None:
        message = _recv(self.sock, time.monotonic() + timeout)
        if message.get("op") != "ready":
            raise _Closed
        self.ready = True

    def signal_kill(self) -> None:
        """SIGKILL only: whoever reads the socket sees it close and cleans up (``kill``)."""
        try:
            self.proc.send_signal(signal.SIGKILL)
        except OSError:
            pass

    def kill(self) -> None:
        self.signal_kill()
        self.proc.wait()
        self.sock.close()

    def stop(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()

    def death(self) -> str:
        try:
            code = self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        if code is not None and code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"


class WorkerPool:
    """Pre-started worker processes that run scripts with a hard wall-clock kill.

    - ``size``: how many workers run at once (runs beyond that wait for a free worker)
    - ``max_runs``: a worker is replaced after this many runs (default 200)
    - ``address_space``: ``RLIMIT_AS`` of each worker in bytes (default 4 GiB; 0 for none)
    """

    def __init__(self, size: int = 2, *, max_runs: int = 200, address_space: int = 4 << 30) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got size={size}")
        self.size = size
        self.max_runs = max_runs
        self.address_space = address_space
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting: set[_Worker] = set()
        self._count = 0  # workers alive or starting
        self._cond = threading.Condition()
        self._closed = False
        for _ in range(size):
            self._start_async()

    def _start_async(self) -> None:
        with self._cond:
            self._count += 1
        threading.Thread(target=self._start_one, daemon=True, name="luabridge-worker-start").start()

    def _start_one(self) -> None:
        spawned: _Worker | None = None
        ready = False
        try:
            if not self._closed:
                spawned = _Worker(self.address_space)
                with self._cond:
                    # close() kills what is in _starting; one that came in between sees _closed.
                    self._starting.add(spawned)
                    closed = self._closed
                if not closed:
                    spawned.wait_ready(30.0)
                    ready = True
        except Exception:
            # Whatever went wrong (no start, a dead or garbled worker), the block below gives
            # the slot back, so that _acquire can start another worker.
            pass
        with self._cond:
            if spawned is not None:
                self._starting.discard(spawned)
            if ready and not self._closed:
                assert spawned is not None
                self._idle.append(spawned)
            else:
                self._count -= 1
                if spawned is not None:
                    spawned.kill()
            self._cond.notify()

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the worker pool was closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.proc.poll() is None:
                        self._busy.add(worker)
                        return worker
                    # It died while idle (an outside kill, the OOM killer): replace it.
                    worker.sock.close()
                    self._count -= 1
                if self._count < self.size:
                    self._count += 1
                    threading.Thread(target=self._start_one, daemon=True).start()
                self._cond.wait(0.5)

    def _release(self, worker: _Worker, *, retire: bool) -> None:
        with self._cond:
            self._busy.discard(worker)
        worker.runs += 1
        if retire or worker.runs >= self.max_runs:
            threading.Thread(target=worker.stop, daemon=True).start()
            with self._cond:
                self._count -= 1
            if not self._closed:
                self._start_async()
            return
        with self._cond:
            if self._closed:
                worker.stop()
            else:
                self._idle.append(worker)
                self._cond.notify()

    def _discard(self, worker: _Worker) -> None:
        with self._cond:
            self._busy.discard(worker)
            self._count -= 1
        if not self._closed:
            self._start_async()

    def run(
        self, source: str, input: Any, host: Host, limits: Limits, started: float
    ) -> RunOutcome:
        """Run one script in a worker; the outcome has the shape of an in-process run.

        The run's clock starts when a worker takes it (time spent waiting for a free worker does
        not count against its timeout). The result arrives within ``timeout + 0.5 s`` of that
        whatever the script does, because the parent stops waiting and kills the worker then.
        """
        worker = self._acquire()
        now = time.monotonic()
        if now > started:
            started = now
            restart = getattr(host, "restart_clock", None)
            if callable(restart):
                restart(started)
        kill_at = started + limits.timeout + _KILL_GRACE
        try:
            _send(
                worker.sock,
                {
                    "op": "run",
                    "source": source,
                    "input": input,
                    "limits": limits.as_dict(),
                    "spec": host.spec,
                    "started": started,
                },
            )
            while True:
                message = _recv(worker.sock, kill_at)
                op = message.get("op")
                if op == "host":
                    result = _serve_host_until(host, message, kill_at)
                    _send(worker.sock, {"op": "reply", "result": result})
                elif op == "done":
                    outcome = _outcome(message.get("outcome"))
                    etype = (outcome.error or {}).get("type")
                    self._release(worker, retire=etype in ("MemoryError", "InternalError"))
                    return outcome
        except _Timeout:
            worker.kill()
            self._discard(worker)
            msg = (
                f"time limit reached ({limits.timeout:g} s); the worker was stopped because the "
                "script did not yield (for example a long string.find); do less work per run"
            )
            return _failed("TimeoutError", msg, started)
        except (_Closed, OSError, ValueError, TypeError, KeyError):
            reason = worker.death()
            worker.kill()
            self._discard(worker)
            msg = f"the worker process running the script died ({reason}); the run was stopped"
            return _failed("WorkerCrashError", msg, started)

    def pids(self, *, busy: bool | None = None) -> list[int]:
        """Process ids of the live workers: all, only busy ones, or only idle ones."""
        with self._cond:
            chosen = [
                *(self._idle if busy is not True else []),
                *(self._busy if busy is not False else []),
            ]
            return sorted(w.proc.pid for w in chosen if w.proc.poll() is None)

    def close(self) -> None:
        """Stop every worker (idle and starting ones at once; busy ones when their run ends)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            starting = list(self._starting)
            self._cond.notify_all()
        for worker in starting:
            # Its starter thread is reading the socket: it sees the worker die and cleans up.
            worker.signal_kill()
        for worker in idle:
            worker.stop()


def _failed(error_type: str, message: str, started: float) -> RunOutcome:
    usage = {"wall_ms": round((time.monotonic() - started) * 1000, 3)}
    return RunOutcome(False, error=error_dict(error_type, message), usage=usage)


def _outcome(data: Any) -> RunOutcome:
    """The worker's outcome frame as a :class:`RunOutcome`; anything malformed is refused."""
    if not isinstance(data, dict):
        raise ValueError("malformed outcome")
    outcome = RunOutcome(**data)
    if not isinstance(outcome.ok, bool) or not isinstance(outcome.output, str):
        raise ValueError("malformed outcome")
    if not isinstance(outcome.usage, dict):
        raise ValueError("malformed outcome")
    if outcome.error is not None and not (
        isinstance(outcome.error, dict) and isinstance(outcome.error.get("type"), str)
    ):
        raise ValueError("malformed outcome")
    return outcome


def _serve_host_until(host: Host, message: dict[str, Any], deadline: float) -> Any:
    """Serve one host call, but give up at ``deadline`` (the run's kill time).

    A host call (an HTTP request, a "did you mean" over a long name) runs in the parent, where
    no hook or kill reaches it; running it on a helper thread keeps the wall-clock bound. A call
    still going at the deadline finishes in the background and its answer is dropped.
    """
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(_serve_host(host, message))
        except BaseException as exc:
            msg = f"internal error in the bridge ({type(exc).__name__}); the run was stopped"
            box.append(["limit", msg, "InternalError"])

    thread = threading.Thread(target=target, daemon=True, name="luabridge-host-call")
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not box:
        raise _Timeout
    return box[0]


def _serve_host(host: Host, message: dict[str, Any]) -> Any:
    method = message.get("method")
    args = message.get("args") or []
    if method not in HOST_METHODS:
        return ["raise", f"unknown host method {method!r}", "InternalError"]
    answer = getattr(host, str(method))(*args)
    return answer if method == "explain" else list(answer)
