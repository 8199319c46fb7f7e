"""``luabridge serve``: one ASGI app with the MCP server, the webhook receivers and a health check.

- ``/mcp``: the MCP server of :mod:`luabridge.agent` over streamable HTTP; every request needs
  ``Authorization: Bearer <token>`` with the token the operator set (compared in constant time);
  without it the answer is 401 and the request never reaches the server;
- ``/webhooks/<integration>/<account>``: the ASGI app each integration's ``webhooks(account,
  settings)`` returns, one per configured account (they check their own signatures);
- ``/health``: ``{"status": "ok", ...}``, without a token, for load balancers.

:func:`serve` runs it with uvicorn on a socket bound first, so a busy port fails at once and
port 0 works (the first line printed on standard error names the address).
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from luabridge.errors import ConfigError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from luabridge.agent import ServerPolicy
    from luabridge.bridge import Bridge

__all__ = [
    "MIN_TOKEN_LENGTH",
    "TOKEN_VARIABLE",
    "BearerGuard",
    "check_token",
    "create_app",
    "serve",
]

#: The environment variable holding the bearer token of ``/mcp``.
TOKEN_VARIABLE = "LUABRIDGE_SERVE_TOKEN"

#: Shorter tokens are refused: they can be guessed.
MIN_TOKEN_LENGTH = 16

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def check_token(token: str | None) -> str:
    """The operator's token, or ``ConfigError`` saying how to set one."""
    if not token or len(token.strip()) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"luabridge serve needs a bearer token for /mcp: set {TOKEN_VARIABLE} to a secret "
            f"of at least {MIN_TOKEN_LENGTH} characters, for example "
            f"export {TOKEN_VARIABLE}=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'); MCP clients send it as "
            "'Authorization: Bearer <token>'"
            + ("" if not token else f" (the one set has {len(token.strip())} characters)")
        )
    return token.strip()


class BearerGuard:
    """Lets a request through to ``app`` only with ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                from starlette.responses import JSONResponse

                reason = "missing" if not given else "wrong"
                response = JSONResponse(
                    {
                        "error": "unauthorized",
                        "message": f"the bearer token is {reason}; send "
                        "'Authorization: Bearer <token>' with the token the operator set in "
                        f"{TOKEN_VARIABLE}",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="luabridge"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    bridge: Bridge, policy: ServerPolicy, *, token: str, host: str = "127.0.0.1"
) -> Starlette:
    """The service's ASGI app over ``bridge``; see the module docstring for its routes."""
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from luabridge import __version__
    from luabridge.agent import build_server

    token = check_token(token)
    server = build_server(bridge, policy)
    # The token already keeps other sites out; the host check of the SDK would only refuse
    # the names a reverse proxy forwards.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    mcp_app = server.streamable_http_app(host=host, transport_security=security)
    mounts: list[Route | Mount] = []
    receivers: list[str] = []
    for name, integ in bridge.integrations.items():
        if integ.webhooks is None:
            continue
        for account, settings in sorted(bridge.accounts[name].items()):
            path = f"/webhooks/{name}/{account}"
            receiver = integ.webhooks(account, settings)
            # The URL itself (a Mount matches only below it, and the token guard at "/" would
            # answer the bare URL a service is configured with) and anything below it.
            mounts.append(Route(path, endpoint=receiver))
            mounts.append(Mount(path, app=receiver))
            receivers.append(path)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "integrations": sorted(bridge.integrations),
                "webhooks": receivers,
                "mcp": "/mcp",
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp_app.router.lifespan_context(mcp_app):
            yield

    routes: list[Route | Mount] = [Route("/health", health), *mounts]
    routes.append(Mount("/", app=BearerGuard(mcp_app, token)))
    return Starlette(routes=routes, lifespan=lifespan)


def serve(app: Any, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until interrupted; first prints where, on standard error."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            # The address, not the port, is wrong.
            fix = "give --host an address of this machine (127.0.0.1, or 0.0.0.0 for all)"
        else:
            fix = "pick another --port (0 picks a free one)"
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {fix}") from exc
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"luabridge serve: http://{shown}:{bound} (MCP at /mcp with the bearer token, "
        "/health, /webhooks/<integration>/<account>)",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
