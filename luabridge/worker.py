"""The child side of process isolation: a worker process that runs scripts in its own Lua states.

The parent (``luabridge.pool``) starts it as ``python -m luabridge.worker FD ADDRESS_SPACE
PARENT_PID`` with one end of a socket pair. The worker sends ``ready`` once its OS limits are in
force, then acknowledges each ``run`` frame (``started``: the parent's health check; see
``_Ack`` for when it is sent), runs it in a Lua state of its own (see ``luabridge.sandbox``: a
state serves run after run, each with a fresh environment) and asks the parent, over the same
socket, for every host operation (action calls, help, schemas): API keys and clients never
enter this process.

A worker never outlives its parent: on Linux it asks for SIGKILL when the parent goes
(``PR_SET_PDEATHSIG``), its main thread exits the process as soon as the socket hangs up or
the parent pid changes (also mid-run, also inside a long C call), and each run sets an
``RLIMIT_CPU`` backstop a few seconds past the run's timeout.

It starts with stdin on ``/dev/null``, stdout and stderr discarded, an environment without the
parent's secrets, and OS limits: address space (``RLIMIT_AS``), no core dumps, few open files, no
new processes (``RLIMIT_NPROC``; not enforced for root, where nothing in the sandbox can start a
process anyway). Lua runs on a thread with a 64 MiB stack.
"""

from __future__ import annotations

import math
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

from luabridge.frames import (
    Closed as _Closed,
    decode as _decode,
    encode as _encode,
    recv as _recv,
    recv_bytes as _recv_bytes,
    send as _send,
    send_encoded as _send_encoded,
)
from luabridge.limits import Limits
from luabridge.sandbox import Reply, RunOutcome, error_dict, execute, settle_idle

__all__ = ["main"]

_LUA_STACK = 64 * 1024 * 1024
_CPU_MARGIN = 5  # CPU seconds past a run's timeout before RLIMIT_CPU ends the process
_PR_SET_PDEATHSIG = 1


_ACK_DELAY = 0.02  # seconds a run may take before its `started` frame is sent on its own
_EAGER_ACK = 1 << 20  # run frames larger than this are acknowledged before they are decoded


class _Ack:
    """A run's acknowledgement (``started``: when its clock started, the CPU used by then),
    sent to the parent once per run, and before any other frame of the run.

    A run that finishes within ``_ACK_DELAY`` carries it in its ``done`` frame, which spares
    both processes a frame and the parent a wake-up. Otherwise it goes out first: before the
    run's first host call, or from the main thread when the ``SIGALRM`` timer set for the run
    fires (also while the Lua thread is inside one long C call). The parent needs it within
    ``_ANSWER_WAIT`` (1 s). Every send on the socket holds ``lock``, since the main thread may
    send too.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.pending: dict[str, Any] | None = None

    def begin(self, started: float, *, now: bool) -> None:
        with self.lock:
            self.pending = {"op": "started", "started": started, "cpu": time.process_time()}
            if now:
                self._flush()
                return
        signal.setitimer(signal.ITIMER_REAL, _ACK_DELAY)

    def _flush(self) -> None:
        if self.pending is not None:
            _send(self.sock, self.pending)
            self.pending = None

    def send(self, message: dict[str, Any]) -> None:
        """Send a frame of the run, after the acknowledgement if it is still due."""
        with self.lock:
            self._flush()
            _send(self.sock, message)

    def finish(self, message: dict[str, Any]) -> None:
        """Send the run's ``done`` frame, with the acknowledgement in it if it is still due.
        ``ValueError`` if it is not plain JSON (then nothing was sent)."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        with self.lock:
            pending = self.pending
            if pending is not None:
                message = {**message, "started": pending["started"], "cpu": pending["cpu"]}
            frame = _encode(message)
            self.pending = None
            _send_encoded(self.sock, frame)

    def on_timer(self, signum: int, frame: Any) -> None:
        # Runs in the main thread (the Lua thread blocks SIGALRM).
        with self.lock:
            self._flush()


class _ProxyHost:
    """The worker's view of the parent's host: every call is a round trip on the socket."""

    def __init__(self, sock: socket.socket, spec: dict[str, Any], ack: _Ack | None = None) -> None:
        self.sock = sock
        self.spec = spec
        self.ack = ack
        self._ids = 0

    def _ask(self, method: str, *args: Any) -> Any:
        self._ids += 1
        message = {"op": "host", "id": self._ids, "method": method, "args": list(args)}
        if self.ack is None:
            _send(self.sock, message)
        else:
            self.ack.send(message)
        reply = _recv(self.sock)
        return reply.get("result")

    def _reply(self, method: str, *args: Any) -> Reply:
        status, payload, etype = self._ask(method, *args)
        return (str(status), payload, etype)

    def call(self, integration: str, account: str, action: str, params: str) -> Reply:
        return self._reply("call", integration, account, action, params)

    def help(self, topic: str | None) -> Reply:
        return self._reply("help", topic)

    def schema(self, name: str) -> Reply:
        return self._reply("schema", name)

    def accounts(self, name: str) -> Reply:
        return self._reply("accounts", name)

    def explain(self, integration: str, account: str | None, name: str | None) -> str:
        return str(self._ask("explain", integration, account, name))


def _apply_os_limits(address_space: int, *, processes: bool) -> None:
    """Set the worker's rlimits; ``processes`` also forbids new processes (and so new threads)."""
    import resource

    def limit(which: int, value: int) -> None:
        try:
            _soft, hard = resource.getrlimit(which)
            new_hard = value if hard == resource.RLIM_INFINITY else min(hard, value)
            resource.setrlimit(which, (min(value, new_hard), new_hard))
        except (ValueError, OSError):
            pass  # a stricter limit set by the deployment stays in force

    if processes:
        limit(resource.RLIMIT_NPROC, 0)
        return
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_NOFILE, 32)
    if address_space > 0:
        limit(resource.RLIMIT_AS, address_space)


def _tie_to_parent(parent: int) -> None:
    """Ask Linux for SIGKILL when the parent goes, then make sure it has not gone already."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the socket watch below still ends an orphan
    if parent and os.getppid() != parent:
        os._exit(0)  # the parent died before the signal was asked for


def _cpu_backstop(timeout: float) -> None:
    """Let the coming run use at most its timeout plus a margin of CPU (``RLIMIT_CPU``, counted
    over the process's life, so the soft limit is set from what it has used so far). The parent
    kills the worker long before; this ends an orphan whose parent could not."""
    import resource

    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(time.process_time()) + math.ceil(timeout) + _CPU_MARGIN
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ValueError, OSError):
        pass  # a stricter limit set by the deployment stays in force


def _watch(sock: socket.socket, thread: threading.Thread, parent: int) -> None:
    """Until the Lua thread ends: exit at once when the socket hangs up or the parent is gone.

    The Lua thread may be inside one long C call and never read the socket again; this thread
    only polls for the hang-up (not for data), so it never takes a frame from the Lua thread.
    """
    poller = select.poll()
    poller.register(sock.fileno(), getattr(select, "POLLRDHUP", 0) | select.POLLHUP)
    while thread.is_alive():
        if poller.poll(500) or (parent and os.getppid() != parent):
            os._exit(0)


def _serve(sock: socket.socket, limited: threading.Event, ack: _Ack) -> None:
    # The acknowledgement timer's signal goes to the main thread, never to this one.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    # Warm up so the first real run does not pay for the first state and bootstrap load.
    warm = _ProxyHost(sock, {})
    execute("return 1", None, host=warm, limits=Limits())
    # Every OS limit is in force before the parent hands over the first script.
    limited.wait()
    _send(sock, {"op": "ready", "pid": os.getpid()})
    last_limits: tuple[Any, Limits] = (None, Limits())
    while True:
        try:
            body = _recv_bytes(sock)
        except _Closed:
            return
        # A large frame is acknowledged before it is decoded: that takes a while (holding the
        # interpreter, so the timer could not send it), and the parent must not take it for a
        # stopped worker. The parent only sends run frames here.
        started = time.monotonic()
        ack.begin(started, now=len(body) > _EAGER_ACK)
        message = _decode(body)
        if message.get("op") != "run":
            continue
        host = _ProxyHost(sock, message["spec"], ack)
        if message["limits"] != last_limits[0]:
            # Checking every field of a Limits took a third of a trivial run here; runs of one
            # bridge mostly send the same limits.
            last_limits = (message["limits"], Limits(**message["limits"]))
        limits = last_limits[1]
        _cpu_backstop(limits.timeout)
        outcome = execute(
            message["source"], message["input"], host=host, limits=limits, started=started
        )
        try:
            ack.finish({"op": "done", "outcome": outcome.to_dict()})
        except ValueError:
            err = error_dict("InternalError", "the run's outcome could not be encoded")
            ack.finish({"op": "done", "outcome": RunOutcome(False, error=err).to_dict()})
        # While the parent reads the outcome and the worker waits for its next run: collect
        # this run's garbage (or build a fresh state), so the next run does not wait for it.
        settle_idle(prewarm=True)


def main() -> None:
    """Entry point of a worker process: ``python -m luabridge.worker FD ADDRESS_SPACE PARENT``."""
    fd = int(sys.argv[1])
    address_space = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    parent = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    _tie_to_parent(parent)
    sock = socket.socket(fileno=fd)
    _apply_os_limits(address_space, processes=False)
    threading.stack_size(_LUA_STACK)
    limited = threading.Event()
    ack = _Ack(sock)
    signal.signal(signal.SIGALRM, ack.on_timer)
    thread = threading.Thread(
        target=_serve, args=(sock, limited, ack), name="luabridge-lua", daemon=True
    )
    thread.start()
    # RLIMIT_NPROC also counts threads, so it can only be set once the Lua thread exists.
    _apply_os_limits(address_space, processes=True)
    limited.set()
    _watch(sock, thread, parent)
    # The parent closed the socket: nothing is left to flush, so skip the interpreter's
    # teardown (about 20 ms that the parent's close() would wait for).
    os._exit(0)


if __name__ == "__main__":
    main()
