"""Where a fleet's Redis is, and connections to it.

A fleet (workers and submitters on several processes or machines) shares one Redis: Celery's
broker and result backend, the shared rate limits and the shared ledger. Its URL comes from
``LUABRIDGE_REDIS_URL``, else from ``redis_url`` in the ``[fleet]`` table of
``luabridge.toml``; without either, everything runs in one process as before. The ``redis``
package comes with the ``fleet`` extra (``pip install 'luabridge[fleet]'``).
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from luabridge.errors import ConfigError

if TYPE_CHECKING:
    import redis

__all__ = ["ENV_VAR", "describe_url", "fleet_section", "redis_client", "redis_url_from"]

#: The environment variable naming the fleet's Redis.
ENV_VAR: Final = "LUABRIDGE_REDIS_URL"

_SCHEMES: Final = ("redis", "rediss", "unix")
_KNOWN: Final = {"redis_url", "queue"}


def fleet_section(file: Mapping[str, Any], path: str = "luabridge.toml") -> dict[str, Any]:
    """The ``[fleet]`` table of a parsed config file, checked; ``{}`` when there is none."""
    raw = file.get("fleet")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f'{path}: [fleet] must be a table (redis_url = "redis://...")')
    unknown = set(raw) - _KNOWN
    if unknown:
        raise ConfigError(
            f"{path} [fleet]: unknown setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_KNOWN))}"
        )
    for name in _KNOWN & set(raw):
        if not isinstance(raw[name], str) or not raw[name]:
            raise ConfigError(f"{path} [fleet]: {name} must be a non-empty string")
    return dict(raw)


def _check_url(url: str, where: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"{where}: {describe_url(url)!r} is not a Redis URL; use redis://host:6379/0 "
            "(or rediss:// for TLS, unix:///path/to/socket)"
        )
    return url


def redis_url_from(
    file: Mapping[str, Any], environ: Mapping[str, str] | None = None, path: str = "luabridge.toml"
) -> str | None:
    """The fleet's Redis URL: ``LUABRIDGE_REDIS_URL``, else ``[fleet] redis_url``, else None."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return _check_url(env[ENV_VAR], ENV_VAR)
    url = fleet_section(file, path).get("redis_url")
    return None if url is None else _check_url(url, f"{path} [fleet] redis_url")


def describe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + host))


_CLIENTS: dict[tuple[str, float, int], redis.Redis] = {}
_CLIENTS_LOCK = threading.Lock()


def redis_client(url: str, *, timeout: float = 2.0) -> redis.Redis:
    """A ``redis.Redis`` for ``url`` shared by this process (one connection pool per URL).

    ``timeout`` bounds connecting and each command, so an unreachable Redis is reported within
    it instead of hanging a run.
    """
    try:
        import redis
    except ImportError as exc:
        raise ConfigError(
            f"a Redis URL is configured ({describe_url(url)}) but the redis package is not "
            "installed; install the fleet extra: pip install 'luabridge[fleet]'"
        ) from exc
    key = (url, timeout, os.getpid())
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            _CLIENTS[key] = client
        return client
