"""luabridge: run sandboxed Lua snippets on LuaJIT against real SaaS APIs.

Scripts get ``app.integrations.<name>[.<account>].<action>(params)``, bound to Python actions
declared once as metadata (see :mod:`luabridge.action`). Start with :class:`Bridge`.
"""

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
    CallLimitError,
    ConfigError,
    InstructionLimitError,
    IntegrationError,
    LimitError,
    LuabridgeError,
    MemoryLimitError,
    NotFoundError,
    OutputLimitError,
    PolicyError,
    RateLimitError,
    ResultLimitError,
    ScriptError,
    ScriptRuntimeError,
    ScriptSyntaxError,
    TimeLimitError,
    TransportError,
    ValidationError,
)
from luabridge.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "DEFAULT_LIMITS",
    "ERROR_TYPES",
    "APIError",
    "AccountSettings",
    "Action",
    "ActionInput",
    "ActionResult",
    "AuthenticationError",
    "Bridge",
    "CallContext",
    "CallLimitError",
    "CallRecord",
    "ConfigError",
    "Example",
    "InstructionLimitError",
    "Integration",
    "IntegrationError",
    "LimitError",
    "Limits",
    "LuabridgeError",
    "MemoryLimitError",
    "NotFoundError",
    "OutputLimitError",
    "PolicyError",
    "RateLimitError",
    "ResultLimitError",
    "RunError",
    "RunResult",
    "ScriptError",
    "ScriptRuntimeError",
    "ScriptSyntaxError",
    "TimeLimitError",
    "TransportError",
    "ValidationError",
]

__version__ = "0.1.0"
