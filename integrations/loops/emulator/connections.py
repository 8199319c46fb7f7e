"""Open connections of the emulator's server, so a fault can drop one on purpose.

ASGI gives an app no handle on its socket, and an app that returns without answering only gets
a 500 written for it. We therefore run uvicorn's h11 protocol with one small addition: each
connection registers its transport under the ``(server, client)`` address pair that also
appears in the request's ASGI scope. ``ConnectionRegistry.close`` looks it up and closes it.
All of this runs on the server's event loop thread, so it needs no lock.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Scope
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionRegistry"]


class ConnectionRegistry:
    """Transports of the live connections of one server, by ``(server, client)`` address."""

    def __init__(self) -> None:
        self._transports: dict[tuple[Any, Any], asyncio.BaseTransport] = {}

    def __len__(self) -> int:
        return len(self._transports)

    def protocol_class(self) -> type[H11Protocol]:
        """An ``H11Protocol`` subclass recording its connections here, for ``uvicorn.Config``."""
        registry = self

        class TrackedH11Protocol(H11Protocol):
            # uvicorn narrows the argument to Transport in the same way; we follow it.
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(transport)
                registry._transports[(self.server, self.client)] = transport

            def connection_lost(self, exc: Exception | None) -> None:
                registry._transports.pop((self.server, self.client), None)
                super().connection_lost(exc)

        return TrackedH11Protocol

    def close(self, scope: Scope) -> bool:
        """Close the connection ``scope`` arrived on; ``False`` if it is not one of ours."""
        server, client = scope.get("server"), scope.get("client")
        transport = self._transports.get(
            (tuple(server) if server else None, tuple(client) if client else None)
        )
        if transport is None:
            return False
        transport.close()
        return True
