"""Process isolation, the parent's side: a pool of worker processes (``luabridge.worker``).

The parent never embeds Lua for an isolated run. It sends ``(source, input, limits, namespace
spec)`` to a pre-started worker over a socket pair and serves the worker's host calls (action
calls, help, schemas) itself, so API keys and clients stay in the parent: a compromised worker
holds no secret. The parent kills the worker with SIGKILL half a second after the run's timeout
(a script stuck inside one C call, a lupa deadlock), reports a worker that died (native crash)
as a clean error, and replaces it. Workers are recycled after ``max_runs`` runs and after any
run that hit the memory limit or was killed. Once a worker has served a run, the pool keeps one
more worker started in reserve (at most one), which takes the place of the next worker that
retires or is killed, so that recycling does not make a run wait for a process to start.

A worker must answer a run within ``_ANSWER_WAIT`` (its ``started`` frame) before the run's
clock starts: one that does not (stopped with SIGSTOP, wedged, starved) is killed and the run
goes to another worker, which is safe because nothing of the run has happened yet. A run waits
at most ``limits.queue_timeout`` for a free worker. Every worker is started by one long-lived
thread, because Linux delivers a worker's parent-death signal when the *thread* that started
it ends (see ``luabridge.worker``).
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from luabridge.errors import ClosedError
from luabridge.frames import (
    Closed as _Closed,
    FrameTimeout as _Timeout,
    encode as _encode,
    recv as _recv,
    send as _send,
    send_encoded as _send_encoded,
)
from luabridge.limits import Limits
from luabridge.sandbox import HOST_METHODS, Host, RunOutcome, error_dict

__all__ = ["WorkerPool"]

_KILL_GRACE = 0.5  # seconds past the timeout before the worker is killed
_ANSWER_WAIT = 1.0  # seconds a worker has to acknowledge a run before it is replaced
_ATTEMPTS = 3  # workers tried for one run before it fails (each replaced one is killed)
_TRANSFER_RATE = 50e6  # bytes/s a run frame is allowed to take on top of _ANSWER_WAIT
_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SYSTEMROOT")


class _Spawner:
    """The one thread of this process that starts worker processes.

    ``PR_SET_PDEATHSIG`` fires when the thread that forked the child ends, not the process: a
    worker forked by a short-lived starter thread would be killed as soon as that thread
    returned. This thread lives as long as the process (a forked child starts its own).
    """

    def __init__(self) -> None:
        self._reset()
        # A forked child has no spawner thread, and may have been forked while another thread
        # held the lock: it starts afresh.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], list[str], Any]]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if not self._started:
                threading.Thread(target=self._serve, daemon=True, name="luabridge-spawner").start()
                self._started = True
            done: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
            self._jobs.put((done, args, kwargs))
        return done.result()

    def _serve(self) -> None:
        jobs = self._jobs
        while True:
            done, args, kwargs = jobs.get()
            try:
                done.set_result(subprocess.Popen(args, **kwargs))
            except BaseException as exc:
                done.set_exception(exc)


_SPAWNER = _Spawner()


def _cpu_seconds(pid: int) -> float | None:
    """CPU time a live process has used (Linux ``/proc``), or None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _is_stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP, a debugger), per Linux ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False


class _Worker:
    """One worker process and the parent's end of its socket."""

    def __init__(self, address_space: int) -> None:
        parent, child = socket.socketpair()
        env = {k: os.environ[k] for k in _SAFE_ENV if k in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        args = [sys.executable, "-m", "luabridge.worker", str(child.fileno()), str(address_space)]
        try:
            self.proc = _SPAWNER.popen(
                [*args, str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(child.fileno(),),
                env=env,
                close_fds=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
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


class _QueueTimeout(Exception):
    """No worker became free before the run's queue deadline."""


class WorkerPool:
    """Pre-started worker processes that run scripts with a hard wall-clock kill.

    - ``size``: how many workers run at once (runs beyond that wait for a free worker, at most
      ``limits.queue_timeout``)
    - ``max_runs``: a worker is replaced after this many runs (default 200)
    - ``address_space``: ``RLIMIT_AS`` of each worker in bytes (default 4 GiB; 0 for none)
    - ``reserve``: keep a worker in reserve once one has served a run (default True; a
      command that runs one script and exits has no use for it)
    """

    def __init__(
        self,
        size: int = 2,
        *,
        max_runs: int = 200,
        address_space: int = 4 << 30,
        reserve: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got size={size}")
        self.size = size
        self.max_runs = max_runs
        self.address_space = address_space
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting: set[_Worker] = set()
        # A ready worker kept back to replace one that retires or is killed: a worker takes
        # 40-300 ms to start, and a run that waited for that after every max_runs-th run cost
        # a pool of one worker about 200 us per run on average.
        self._reserve: list[_Worker] = []
        self._reserves = reserve
        self._reserving = 0  # reserve workers ready or starting
        self._count = 0  # workers alive or starting, besides the reserve
        self._waiting = 0  # runs waiting for a free worker
        self._cond = threading.Condition()
        self._closed = False
        for _ in range(size):
            self._start_async()

    def _start_async(self) -> None:
        with self._cond:
            self._count += 1
        threading.Thread(target=self._start_one, daemon=True, name="luabridge-worker-start").start()

    def _start_one(self, reserve: bool = False) -> None:
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
        doomed: _Worker | None = None
        with self._cond:
            if spawned is not None:
                self._starting.discard(spawned)
            if ready and not self._closed:
                assert spawned is not None
                (self._reserve if reserve else self._idle).append(spawned)
            else:
                if reserve:
                    self._reserving -= 1
                else:
                    self._count -= 1
                doomed = spawned
            self._cond.notify()
        if doomed is not None:
            # Outside the lock: reaping waits for the process to die, and a worker killed
            # mid-exec on a loaded machine can take seconds to; holding the lock meanwhile
            # kept the pool's other starter from killing its own worker.
            doomed.kill()

    def _acquire(self, deadline: float) -> _Worker:
        """A live idle worker, waiting for one until ``deadline`` (then ``_QueueTimeout``)."""
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    if self._closed:
                        raise ClosedError(
                            "the worker pool was closed before a worker was free for this run"
                        )
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
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _QueueTimeout
                    self._cond.wait(min(0.5, remaining))
            finally:
                self._waiting -= 1

    def _replace(self) -> None:
        """Fill the slot of a worker that has gone: with a reserve worker when one is ready,
        else with a worker started now."""
        with self._cond:
            self._count -= 1
            if self._closed:
                return
            if self._reserve:
                self._idle.append(self._reserve.pop())
                self._reserving -= 1
                self._count += 1
                self._cond.notify()
                return
        self._start_async()

    def _release(self, worker: _Worker, *, retire: bool) -> None:
        with self._cond:
            self._busy.discard(worker)
        worker.runs += 1
        if worker.runs == 1 and self._reserves:
            # A pool in use keeps one successor ready, so that no run waits for a start.
            with self._cond:
                wanted = not self._closed and self._reserving < 1
                if wanted:
                    self._reserving += 1
            if wanted:
                threading.Thread(
                    target=self._start_one, args=(True,), daemon=True, name="luabridge-worker-start"
                ).start()
        if retire or worker.runs >= self.max_runs:
            threading.Thread(target=worker.stop, daemon=True).start()
            self._replace()
            return
        with self._cond:
            closed = self._closed
            if not closed:
                self._idle.append(worker)
                self._cond.notify()
        if closed:
            worker.stop()  # outside the lock: it waits for the process to exit

    def _discard(self, worker: _Worker) -> None:
        """Kill ``worker`` (if it still runs) and replace it."""
        worker.kill()
        with self._cond:
            self._busy.discard(worker)
        self._replace()

    def run(
        self, source: str, input: Any, host: Host, limits: Limits, started: float
    ) -> RunOutcome:
        """Run one script in a worker; the outcome has the shape of an in-process run.

        The run's clock starts when a worker takes it and acknowledges it (time spent waiting
        for a free worker does not count against its timeout, and is reported as
        ``usage["queue_ms"]``). The result arrives within ``timeout + 0.5 s`` of that whatever
        the script does, because the parent stops waiting and kills the worker then. Raises
        ``ClosedError`` when the pool is closed while the run waits for a worker.
        """
        queued = time.monotonic()
        try:
            frame = _encode(
                {
                    "op": "run",
                    "source": source,
                    "input": input,
                    "limits": limits.as_dict(),
                    "spec": host.spec,
                }
            )
        except (ValueError, TypeError) as exc:
            msg = f"internal error: the run could not be sent to a worker ({exc})"
            return _with_queue(_failed("InternalError", msg, queued), queued, queued)
        unanswered: list[str] = []
        for _attempt in range(_ATTEMPTS):
            try:
                worker = self._acquire(queued + limits.queue_timeout)
            except _QueueTimeout:
                return _with_queue(self._queue_timeout(limits, queued), queued, time.monotonic())
            answer = self._hand_over(worker, frame, started)
            if answer is None:
                unanswered.append(str(worker.proc.pid))
                continue
            begun, cpu, done = answer
            restart = getattr(host, "restart_clock", None)
            if callable(restart):
                restart(begun)
            if done is not None:
                # The run was over before its acknowledgement was due: it came with the outcome.
                return _with_queue(self._finish(worker, done, begun), queued, begun)
            return _with_queue(self._serve(worker, host, limits, begun, cpu), queued, begun)
        msg = (
            f"{_ATTEMPTS} worker processes in a row (pids {', '.join(unanswered)}) did not "
            f"acknowledge the run within {_ANSWER_WAIT:g} s (stopped, wedged or starved of CPU); "
            "each was replaced and the script never started"
        )
        return _with_queue(_failed("WorkerCrashError", msg, time.monotonic()), queued, queued)

    def _queue_timeout(self, limits: Limits, queued: float) -> RunOutcome:
        with self._cond:
            ahead = self._waiting
            busy = len(self._busy)
        msg = (
            f"no worker was free within the queue timeout ({limits.queue_timeout:g} s; "
            f"limits.queue_timeout): {busy} of {self.size} workers were busy and {ahead} other "
            "runs were waiting; the script never started. Run fewer scripts at once, give the "
            "bridge more workers, or raise limits.queue_timeout"
        )
        outcome = _failed("QueueTimeoutError", msg, time.monotonic())
        return outcome

    def _hand_over(
        self, worker: _Worker, frame: bytes, started: float
    ) -> tuple[float, float | None, dict[str, Any] | None] | None:
        """Send the run to ``worker``: the time its clock started, the CPU seconds the worker
        had used by then and, for a run that was over before its acknowledgement was due, its
        ``done`` frame; or None if it did not acknowledge the run in time or died (it is then
        killed and replaced)."""
        sent = time.monotonic()
        # A stopped worker reads nothing: the send itself must be bounded too, or a frame larger
        # than the socket's buffer would block here for ever.
        budget = _ANSWER_WAIT + len(frame) / _TRANSFER_RATE
        try:
            worker.sock.settimeout(budget)
            _send_encoded(worker.sock, frame)
            ack = _recv(worker.sock, sent + budget)
            if ack.get("op") not in ("started", "done"):
                raise ValueError("expected a started or done frame")
            begun = float(ack["started"])
            cpu = ack.get("cpu")
            cpu = float(cpu) if isinstance(cpu, int | float) else None
        except Exception:
            # Stopped, wedged, dead or garbled: nothing of the run has happened yet.
            self._discard(worker)
            return None
        # The worker's clock is this machine's monotonic clock; a worker cannot move the start
        # outside the window in which it really answered.
        begun = min(max(begun, sent, started), time.monotonic())
        return begun, cpu, ack if ack.get("op") == "done" else None

    def _finish(self, worker: _Worker, message: dict[str, Any], started: float) -> RunOutcome:
        """The outcome of a ``done`` frame; the worker goes back to the pool, or is retired
        after a memory limit or an internal error, or is replaced if the frame is malformed."""
        try:
            outcome = _outcome(message.get("outcome"))
        except (ValueError, TypeError, KeyError):
            reason = worker.death()
            self._discard(worker)
            msg = f"the worker process running the script died ({reason}); the run was stopped"
            return _failed("WorkerCrashError", msg, started)
        etype = (outcome.error or {}).get("type")
        self._release(worker, retire=etype in ("MemoryError", "InternalError"))
        return outcome

    def _serve(
        self,
        worker: _Worker,
        host: Host,
        limits: Limits,
        started: float,
        cpu_at_start: float | None,
    ) -> RunOutcome:
        """Serve ``worker``'s host calls until its outcome, or kill it at the deadline.

        A helper thread reads the worker's frames, serves its host calls and answers them for
        the rest of the run (see ``_RunServer``); this thread waits for the end and stops
        waiting at the kill time, whatever the helper is doing.
        """
        kill_at = started + limits.timeout + _KILL_GRACE
        server = _RunServer(worker.sock, host, kill_at)
        try:
            with _CALLERS_LOCK:
                caller = _IDLE_CALLERS.pop() if _IDLE_CALLERS else None
            (caller or _HostCaller()).call(server.serve)
            end, value = server.wait()
        except BaseException:
            # Ctrl-C while waiting, or no thread for the helper: the helper serves nothing
            # more, and the worker is replaced rather than left busy.
            server.abandon()
            self._discard(worker)
            raise
        if end == "done":
            try:
                outcome = _outcome(value.get("outcome"))
            except (ValueError, TypeError, KeyError, AttributeError):
                end = "died"
            else:
                etype = (outcome.error or {}).get("type")
                self._release(worker, retire=etype in ("MemoryError", "InternalError"))
                return outcome
        if end == "host-timeout":
            self._discard(worker)
            msg = (
                f"time limit reached ({limits.timeout:g} s) while the bridge was still serving "
                f"the script's call to {value} (a slow answer from the service, or a lock "
                "held elsewhere); the run was stopped. Raise the timeout, or make fewer or "
                "smaller calls per run"
            )
            return _failed("TimeoutError", msg, started)
        if end == "timeout":
            cause = self._stall_cause(worker, cpu_at_start, started)
            self._discard(worker)
            return _failed(
                "TimeoutError", f"time limit reached ({limits.timeout:g} s); {cause}", started
            )
        if end == "died":
            reason = worker.death()
            self._discard(worker)
            msg = f"the worker process running the script died ({reason}); the run was stopped"
            return _failed("WorkerCrashError", msg, started)
        # Nothing may leave a worker busy and lost: whatever happened, it is replaced.
        self._discard(worker)
        raise value

    @staticmethod
    def _stall_cause(worker: _Worker, cpu_at_start: float | None, started: float) -> str:
        """Why a worker did not finish in time, in words, from what the OS says about it."""
        pid = worker.proc.pid
        if _is_stopped(pid):
            return (
                f"the worker process (pid {pid}) was stopped (SIGSTOP or a debugger) and could "
                "not finish; it was killed and replaced"
            )
        cpu = _cpu_seconds(pid)
        wall = time.monotonic() - started
        if cpu is not None and cpu_at_start is not None and cpu - cpu_at_start < 0.1 * wall:
            return (
                f"the worker process (pid {pid}) was wedged, not running the script (it used "
                f"{cpu - cpu_at_start:.2f} s of CPU in {wall:.2f} s, for example blocked on a "
                "lock); it was killed and replaced"
            )
        return (
            "the worker was stopped because the script did not yield (for example a long "
            "string.find); do less work per run"
        )

    def pids(self, *, busy: bool | None = None) -> list[int]:
        """Process ids of the live workers: all, only busy ones, or only idle ones."""
        with self._cond:
            chosen = [
                *(self._idle if busy is not True else []),
                *(self._busy if busy is not False else []),
            ]
            return sorted(w.proc.pid for w in chosen if w.proc.poll() is None)

    def close(self) -> None:
        """Stop every worker (idle and starting ones at once; busy ones when their run ends).

        Runs still waiting for a worker raise ``ClosedError``."""
        with self._cond:
            self._closed = True
            idle, self._idle = [*self._idle, *self._reserve], []
            self._reserve = []
            starting = list(self._starting)
            self._cond.notify_all()
        for worker in starting:
            # Its starter thread is reading the socket: it sees the worker die and cleans up.
            worker.signal_kill()
        for worker in idle:
            worker.stop()


def _with_queue(outcome: RunOutcome, queued: float, started: float) -> RunOutcome:
    outcome.usage["queue_ms"] = round(max(0.0, started - queued) * 1000, 3)
    return outcome


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


class _HostCaller:
    """A long-lived thread that serves the host calls of the runs handed to it (a
    ``_RunServer`` each), one run at a time.

    A thread per run (or per call) cost a thread's creation, a start-up handshake and a join
    each time. Idle callers wait in ``_IDLE_CALLERS``; one whose run was given up at its kill
    time finishes the call it was serving in the background, and then goes back to waiting
    like the others.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._loop, daemon=True, name="luabridge-host-call").start()

    def call(self, job: Any) -> None:
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            job()
            del job
            with _CALLERS_LOCK:
                if len(_IDLE_CALLERS) >= _MAX_IDLE_CALLERS:
                    return
                _IDLE_CALLERS.append(self)


_MAX_IDLE_CALLERS = 16
_IDLE_CALLERS: list[_HostCaller] = []
_CALLERS_LOCK = threading.Lock()


def _reset_callers() -> None:
    # A forked child has none of its parent's threads.
    global _CALLERS_LOCK
    _IDLE_CALLERS.clear()
    _CALLERS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_callers)


class _RunServer:
    """The parent's side of one run after its acknowledgement, on a helper thread: reads the
    worker's frames, serves each host call and sends its reply, until the ``done`` frame.

    Served on the thread that reads the socket, a host call costs two wake-ups (the worker's
    frame, then the reply); handed from the run's thread to a helper and back, it cost four,
    about 90 us more per call here. The run's thread only waits (``wait``) and gives up at the
    kill time: a host call (an HTTP request, a lock held elsewhere) runs where no hook or kill
    reaches it, and this keeps the wall-clock bound. A call still going then finishes in the
    background, and its reply is never sent.
    """

    def __init__(self, sock: socket.socket, host: Host, kill_at: float) -> None:
        self.sock = sock
        self.host = host
        self.kill_at = kill_at
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.calling: str | None = None  # the host call being served, as the script wrote it
        self.end: tuple[str, Any] | None = None
        self.abandoned = False

    def serve(self) -> None:
        try:
            while True:
                message = _recv(self.sock, self.kill_at)
                op = message.get("op")
                if op == "host":
                    with self.lock:
                        if self.abandoned:
                            return  # the run has been given up: serve nothing more
                        self.calling = _call_name(message)
                    try:
                        result = _serve_host(self.host, message)
                    except BaseException as exc:
                        msg = (
                            f"internal error in the bridge ({type(exc).__name__}); "
                            "the run was stopped"
                        )
                        result = ["limit", msg, "InternalError"]
                    with self.lock:
                        if self.abandoned:
                            return
                        self.calling = None
                    _send(self.sock, {"op": "reply", "result": result})
                elif op == "done":
                    self._finish("done", message)
                    return
        except _Timeout:
            self._finish("timeout", None)
        except (_Closed, OSError, ValueError, TypeError, KeyError):
            self._finish("died", None)
        except BaseException as exc:
            self._finish("error", exc)

    def _finish(self, end: str, value: Any) -> None:
        with self.lock:
            if not self.abandoned:
                self.end = (end, value)
        self.finished.set()

    def abandon(self) -> None:
        """Give the run up: no further host call is served, nor any reply sent."""
        with self.lock:
            self.abandoned = True

    def wait(self) -> tuple[str, Any]:
        """How the run ended: ``done`` (with its frame), ``timeout``, ``host-timeout`` (with
        the call being served), ``died``, or ``error`` (with the exception)."""
        self.finished.wait(max(0.0, self.kill_at - time.monotonic()))
        with self.lock:
            if self.end is None:
                self.abandoned = True
                if self.calling is not None:
                    return "host-timeout", self.calling
                return "timeout", None
            return self.end


def _call_name(message: dict[str, Any]) -> str:
    """What a host call was, as the script wrote it: ``loops.send_event``, ``app.help``."""
    method = str(message.get("method"))
    args = message.get("args")
    if method == "call" and isinstance(args, list) and len(args) >= 3:
        return f"{args[0]}.{args[2]}"
    return f"app.{method}"


def _serve_host(host: Host, message: dict[str, Any]) -> Any:
    method = message.get("method")
    args = message.get("args") or []
    if method not in HOST_METHODS:
        return ["raise", f"unknown host method {method!r}", "InternalError"]
    answer = getattr(host, str(method))(*args)
    return answer if method == "explain" else list(answer)
