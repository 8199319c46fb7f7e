"""The exception tree of luabridge, and the error-type names a run reports.

Every exception the library raises derives from :class:`LuabridgeError`::

    LuabridgeError
    ├── ConfigError (ValueError)            bad configuration: accounts, limits, options
    ├── ClosedError (RuntimeError)          the bridge was closed (also runs still queued)
    ├── BackendError (ConnectionError)      a service the fleet shares (Redis) cannot be reached
    ├── ScriptError                         a run ended in error (``Bridge.run`` never raises it;
    │   │                                   ``RunResult.raise_for_error()`` does)
    │   ├── ScriptSyntaxError (SyntaxError)
    │   ├── ScriptRuntimeError
    │   ├── ValidationError (ValueError)    bad arguments or values crossing the boundary
    │   ├── PolicyError (PermissionError)   the run's policy forbids the call
    │   ├── LimitError                      a resource limit ended the run
    │   │   ├── TimeLimitError (TimeoutError)
    │   │   ├── InstructionLimitError
    │   │   ├── MemoryLimitError (MemoryError)
    │   │   ├── OutputLimitError
    │   │   ├── CallLimitError
    │   │   ├── ResultLimitError
    │   │   ├── SourceLimitError            the script's source is larger than allowed
    │   │   └── QueueTimeoutError (TimeoutError)  no worker was free in time
    │   ├── PlanMismatchError               applying a plan met a write the plan does not have
    │   ├── WorkerCrashError                the worker process died
    │   └── InternalError                   a bug in luabridge
    └── IntegrationError                    the remote side failed (returned to Lua, not raised)
        ├── AuthenticationError             HTTP 401
        ├── NotFoundError                   HTTP 404
        ├── RateLimitError                  HTTP 429 still exceeded after retries
        ├── APIError                        any other HTTP error, or a 200 with success=false
        └── TransportError                  connect, read, timeout, broken or non-JSON bodies

``ERROR_TYPES`` lists the values ``error.type`` can take, and ``error_class`` maps each to its
class one to one (``UsageError``, which only the CLI reports, to ``ConfigError``).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ERROR_TYPES",
    "APIError",
    "AuthenticationError",
    "BackendError",
    "CallLimitError",
    "ClosedError",
    "ConfigError",
    "ExpiredPlanError",
    "InstructionLimitError",
    "IntegrationError",
    "InternalError",
    "LimitError",
    "LuabridgeError",
    "MemoryLimitError",
    "NotFoundError",
    "OutputLimitError",
    "PlanError",
    "PlanMismatchError",
    "PolicyError",
    "QueueTimeoutError",
    "RateLimitError",
    "ResultLimitError",
    "ScriptError",
    "ScriptRuntimeError",
    "ScriptSyntaxError",
    "SourceLimitError",
    "TimeLimitError",
    "TransportError",
    "UnknownPlanError",
    "ValidationError",
    "WorkerCrashError",
    "error_class",
    "error_envelope",
]

#: Every value ``RunResult.error.type`` can take, with what it means.
ERROR_TYPES: dict[str, str] = {
    "SyntaxError": "the script does not compile",
    "RuntimeError": "the script raised an error, or touched something the sandbox does not have",
    "ValidationError": "a value crossing the boundary was refused (arguments, input, result)",
    "PermissionError": "the run's policy forbids the call (effect tag or account)",
    "TimeoutError": "the wall-clock limit was reached",
    "InstructionLimitError": "the instruction budget was used up",
    "MemoryError": "the Lua heap limit was reached",
    "OutputLimitError": "print() wrote more than the output limit",
    "CallLimitError": "the script made more action calls than allowed",
    "ResultLimitError": "the returned value is larger than allowed",
    "SourceLimitError": "the script's source is larger than allowed",
    "QueueTimeoutError": "no worker was free within the queue timeout (the script never started)",
    "PlanMismatchError": "applying a plan stopped before a write that differs from the plan "
    "(or that the plan does not have); nothing differing was sent",
    "WorkerCrashError": "the worker process running the script died (native crash or kill)",
    "InternalError": "a bug in luabridge itself; the message says what happened",
    "UsageError": "the command line or configuration is wrong (CLI envelopes only; exit code 2)",
}


class LuabridgeError(Exception):
    """Base class of every luabridge exception."""


class ConfigError(LuabridgeError, ValueError):
    """Configuration that cannot work: unknown account, bad limit, unreadable config file."""


class ClosedError(LuabridgeError, RuntimeError):
    """The bridge (or its worker pool) was closed: also what runs still waiting for a worker
    get when ``close()`` is called."""


class BackendError(LuabridgeError, ConnectionError):
    """A service the fleet shares (Redis: the shared rate limit, ledger or task queue) did not
    answer. Nothing was sent on its account; trying again once it is back is safe."""


class ScriptError(LuabridgeError):
    """A run ended in error. Carries the run's error type, message and script line."""

    error_type: ClassVar[str] = "RuntimeError"

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class ScriptSyntaxError(ScriptError, SyntaxError):
    error_type = "SyntaxError"


class ScriptRuntimeError(ScriptError):
    error_type = "RuntimeError"


class ValidationError(ScriptError, ValueError):
    """A value was refused at the boundary: an action's arguments, the input or the result."""

    error_type = "ValidationError"


class PolicyError(ScriptError, PermissionError):
    error_type = "PermissionError"


class LimitError(ScriptError):
    """A resource limit ended the run. ``limit`` names it, ``value`` is its setting."""

    limit: ClassVar[str] = ""


class TimeLimitError(LimitError, TimeoutError):
    error_type = "TimeoutError"
    limit = "timeout"


class InstructionLimitError(LimitError):
    error_type = "InstructionLimitError"
    limit = "instructions"


class MemoryLimitError(LimitError, MemoryError):
    error_type = "MemoryError"
    limit = "memory"


class OutputLimitError(LimitError):
    error_type = "OutputLimitError"
    limit = "output_bytes"


class CallLimitError(LimitError):
    error_type = "CallLimitError"
    limit = "calls"


class ResultLimitError(LimitError):
    error_type = "ResultLimitError"
    limit = "result_bytes"


class SourceLimitError(LimitError):
    error_type = "SourceLimitError"
    limit = "source_bytes"


class QueueTimeoutError(LimitError, TimeoutError):
    """No worker was free within ``limits.queue_timeout``; the script never started."""

    error_type = "QueueTimeoutError"
    limit = "queue_timeout"


class PlanMismatchError(ScriptError):
    """Applying a plan stopped before a write that the plan does not have, or that differs
    from the planned one (action, account or request); that write was not sent."""

    error_type = "PlanMismatchError"


class WorkerCrashError(ScriptError):
    """The worker process running the script died: a native crash, a kill, the OOM killer."""

    error_type = "WorkerCrashError"


class InternalError(ScriptError):
    """A bug in luabridge itself ended the run; the message says what happened."""

    error_type = "InternalError"


class PlanError(LuabridgeError):
    """A plan that cannot be applied: already applied, made by a failed dry run, or for other
    accounts than this bridge has. The message says which and what to do.

    ``beyond_policy`` is true when the plan needs more (effects or accounts) than the apply
    allows: a new dry run would not help, whoever sets the policy has to allow it."""

    beyond_policy: bool = False


class UnknownPlanError(PlanError, LookupError):
    """No plan has this id (never made, made by another store, or forgotten after expiry)."""


class ExpiredPlanError(PlanError):
    """The plan is older than its time to live; make a new one with a dry run."""


class IntegrationError(LuabridgeError):
    """The remote side failed. Actions turn it into ``{success = false, ...}`` for the script.

    - ``code``: stable, documented, ``<integration>.<kind>`` (for example ``loops.rate_limited``)
    - ``status``: the HTTP status where there was a response
    - ``retryable``: whether trying again later can help
    - ``body``: the parsed error body, if any (redacted before it leaves the bridge)
    - ``delivered``: ``"unknown"`` when the request may have been carried out although no
      answer said so (a connection lost after sending, an answer past the deadline); None when
      the failure proves nothing was done
    """

    default_code: ClassVar[str] = "api_error"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        body: Any = None,
        request_id: str | None = None,
        delivered: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status
        self.retryable = self.default_retryable if retryable is None else retryable
        self.body = body
        self.request_id = request_id
        self.delivered = delivered

    def to_result(self) -> dict[str, Any]:
        """The failure table an action returns to Lua."""
        out: dict[str, Any] = {
            "success": False,
            "error": self.message,
            "code": self.code,
            "retryable": self.retryable,
        }
        if self.status is not None:
            out["status"] = self.status
        if self.delivered is not None:
            out["delivered"] = self.delivered
        return out


class AuthenticationError(IntegrationError):
    default_code = "unauthorized"


class NotFoundError(IntegrationError):
    default_code = "not_found"


class RateLimitError(IntegrationError):
    default_code = "rate_limited"
    default_retryable = True


class APIError(IntegrationError):
    default_code = "api_error"


class TransportError(IntegrationError):
    default_code = "transport_error"
    default_retryable = True


_BY_TYPE: dict[str, type[ScriptError]] = {
    cls.error_type: cls
    for cls in (
        ScriptSyntaxError,
        ScriptRuntimeError,
        ValidationError,
        PolicyError,
        TimeLimitError,
        InstructionLimitError,
        MemoryLimitError,
        OutputLimitError,
        CallLimitError,
        ResultLimitError,
        SourceLimitError,
        QueueTimeoutError,
        PlanMismatchError,
        WorkerCrashError,
        InternalError,
    )
}


def error_class(error_type: str) -> type[LuabridgeError]:
    """The exception class of an ``error.type``: one per entry of ``ERROR_TYPES``
    (``UsageError`` is ``ConfigError``); ``ScriptError`` for a type not listed there."""
    if error_type == "UsageError":
        return ConfigError
    return _BY_TYPE.get(error_type, ScriptError)


def error_envelope(error_type: str, message: str) -> dict[str, Any]:
    """The run envelope of a failure before any script ran (usage, unknown plan or run, bad
    tool argument): the same keys as ``RunResult.to_dict()``, so one parser reads them all."""
    return {
        "ok": False,
        "result": None,
        "error": {"type": error_type, "message": message, "line": None},
        "output": "",
        "calls": [],
        "meta": {"executionId": None, "resumed": False, "durationMs": None},
    }
