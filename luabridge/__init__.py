"""luabridge: run sandboxed Lua snippets on LuaJIT against real SaaS APIs.

Scripts get ``app.integrations.<name>[.<account>].<action>(params)``, bound to Python actions
declared once as metadata (see :mod:`luabridge.action`). Start with :class:`Bridge`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The names below are imported on first use (PEP 562), so that a worker process, which needs
# only the sandbox, does not pay for pydantic and the docs machinery at every start.
if TYPE_CHECKING:
    from luabridge.accounts import AccountSettings
    from luabridge.action import (
        Action,
        ActionInput,
        ActionResult,
        CallContext,
        Example,
        Integration,
    )
    from luabridge.bridge import Bridge, RunError, RunResult
    from luabridge.dispatch import CallRecord
    from luabridge.errors import (
        ERROR_TYPES,
        APIError,
        AuthenticationError,
        BackendError,
        CallLimitError,
        ClosedError,
        ConfigError,
        ExpiredPlanError,
        InstructionLimitError,
        IntegrationError,
        InternalError,
        LimitError,
        LuabridgeError,
        MemoryLimitError,
        NotFoundError,
        OutputLimitError,
        PlanError,
        PlanMismatchError,
        PolicyError,
        QueueTimeoutError,
        RateLimitError,
        ResultLimitError,
        ScriptError,
        ScriptRuntimeError,
        ScriptSyntaxError,
        SourceLimitError,
        TimeLimitError,
        TransportError,
        UnknownPlanError,
        ValidationError,
        WorkerCrashError,
    )
    from luabridge.limits import DEFAULT_LIMITS, Limits
    from luabridge.plans import ApplyResult, Plan

_HOMES: dict[str, str] = {
    "APIError": "luabridge.errors",
    "AccountSettings": "luabridge.accounts",
    "Action": "luabridge.action",
    "ActionInput": "luabridge.action",
    "ActionResult": "luabridge.action",
    "ApplyResult": "luabridge.plans",
    "AuthenticationError": "luabridge.errors",
    "BackendError": "luabridge.errors",
    "Bridge": "luabridge.bridge",
    "CallContext": "luabridge.action",
    "CallLimitError": "luabridge.errors",
    "ClosedError": "luabridge.errors",
    "CallRecord": "luabridge.dispatch",
    "ConfigError": "luabridge.errors",
    "DEFAULT_LIMITS": "luabridge.limits",
    "ERROR_TYPES": "luabridge.errors",
    "Example": "luabridge.action",
    "ExpiredPlanError": "luabridge.errors",
    "InstructionLimitError": "luabridge.errors",
    "Integration": "luabridge.action",
    "IntegrationError": "luabridge.errors",
    "InternalError": "luabridge.errors",
    "LimitError": "luabridge.errors",
    "Limits": "luabridge.limits",
    "LuabridgeError": "luabridge.errors",
    "MemoryLimitError": "luabridge.errors",
    "NotFoundError": "luabridge.errors",
    "OutputLimitError": "luabridge.errors",
    "Plan": "luabridge.plans",
    "PlanError": "luabridge.errors",
    "PlanMismatchError": "luabridge.errors",
    "PolicyError": "luabridge.errors",
    "QueueTimeoutError": "luabridge.errors",
    "RateLimitError": "luabridge.errors",
    "ResultLimitError": "luabridge.errors",
    "RunError": "luabridge.bridge",
    "RunResult": "luabridge.bridge",
    "ScriptError": "luabridge.errors",
    "ScriptRuntimeError": "luabridge.errors",
    "ScriptSyntaxError": "luabridge.errors",
    "SourceLimitError": "luabridge.errors",
    "TimeLimitError": "luabridge.errors",
    "TransportError": "luabridge.errors",
    "UnknownPlanError": "luabridge.errors",
    "ValidationError": "luabridge.errors",
    "WorkerCrashError": "luabridge.errors",
}

__all__ = [
    "DEFAULT_LIMITS",
    "ERROR_TYPES",
    "APIError",
    "AccountSettings",
    "Action",
    "ActionInput",
    "ActionResult",
    "ApplyResult",
    "AuthenticationError",
    "BackendError",
    "Bridge",
    "CallContext",
    "CallLimitError",
    "CallRecord",
    "ClosedError",
    "ConfigError",
    "Example",
    "ExpiredPlanError",
    "InstructionLimitError",
    "Integration",
    "IntegrationError",
    "InternalError",
    "LimitError",
    "Limits",
    "LuabridgeError",
    "MemoryLimitError",
    "NotFoundError",
    "OutputLimitError",
    "Plan",
    "PlanError",
    "PlanMismatchError",
    "PolicyError",
    "QueueTimeoutError",
    "RateLimitError",
    "ResultLimitError",
    "RunError",
    "RunResult",
    "ScriptError",
    "ScriptRuntimeError",
    "ScriptSyntaxError",
    "SourceLimitError",
    "TimeLimitError",
    "TransportError",
    "UnknownPlanError",
    "ValidationError",
    "WorkerCrashError",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'luabridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
