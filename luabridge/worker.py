"""The child side of process isolation: a worker process that runs scripts in its own Lua states.

The parent (``luabridge.pool``) starts it as ``python -m luabridge.worker FD ADDRESS_SPACE`` with
one end of a socket pair. The worker sends ``ready`` once its OS limits are in force, then runs
each ``run`` frame in a fresh Lua state and asks the parent, over the same socket, for every
host operation (action calls, help, schemas): API keys and clients never enter this process.

It starts with stdin on ``/dev/null``, stdout and stderr discarded, an environment without the
parent's secrets, and OS limits: address space (``RLIMIT_AS``), no core dumps, few open files, no
new processes (``RLIMIT_NPROC``; not enforced for root, where nothing in the sandbox can start a
process anyway). Lua runs on a thread with a 64 MiB stack.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

from luabridge.frames import Closed as _Closed, recv as _recv, send as _send
from luabridge.limits import Limits
from luabridge.sandbox import Reply, RunOutcome, error_dict, execute

__all__ = ["main"]

_LUA_STACK = 64 * 1024 * 1024


class _ProxyHost:
    """The worker's view of the parent's host: every call is a round trip on the socket."""

    def __init__(self, sock: socket.socket, spec: dict[str, Any]) -> None:
        self.sock = sock
        self.spec = spec
        self._ids = 0

    def _ask(self, method: str, *args: Any) -> Any:
        self._ids += 1
        _send(self.sock, {"op": "host", "id": self._ids, "method": method, "args": list(args)})
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


def _serve(sock: socket.socket, limited: threading.Event) -> None:
    # Warm up so the first real run does not pay for the first state and bootstrap load.
    warm = _ProxyHost(sock, {})
    execute("return 1", None, host=warm, limits=Limits())
    # Every OS limit is in force before the parent hands over the first script.
    limited.wait()
    _send(sock, {"op": "ready", "pid": os.getpid()})
    while True:
        try:
            message = _recv(sock)
        except _Closed:
            return
        if message.get("op") != "run":
            continue
        host = _ProxyHost(sock, message["spec"])
        limits = Limits(**message["limits"])
        outcome = execute(
            message["source"],
            message["input"],
            host=host,
            limits=limits,
            started=message["started"],
        )
        try:
            _send(sock, {"op": "done", "outcome": outcome.to_dict()})
        except ValueError:
            err = error_dict("InternalError", "the run's outcome could not be encoded")
            _send(sock, {"op": "done", "outcome": RunOutcome(False, error=err).to_dict()})


def main() -> None:
    """Entry point of a worker process: ``python -m luabridge.worker FD ADDRESS_SPACE``."""
    fd = int(sys.argv[1])
    address_space = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    sock = socket.socket(fileno=fd)
    _apply_os_limits(address_space, processes=False)
    threading.stack_size(_LUA_STACK)
    limited = threading.Event()
    thread = threading.Thread(
        target=_serve, args=(sock, limited), name="luabridge-lua", daemon=True
    )
    thread.start()
    # RLIMIT_NPROC also counts threads, so it can only be set once the Lua thread exists.
    _apply_os_limits(address_space, processes=True)
    limited.set()
    thread.join()
    # The parent closed the socket: nothing is left to flush, so skip the interpreter's
    # teardown (about 20 ms that the parent's close() would wait for).
    os._exit(0)


if __name__ == "__main__":
    main()
