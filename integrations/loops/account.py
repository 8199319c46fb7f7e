"""The per-account handle of the Loops pack and the request plumbing its handlers share.

``open_account`` is the pack's ``open_client``: one ``LoopsAccount`` per configured account,
holding the HTTP client and the contact directory. ``Request`` describes one call to Loops; a
handler sends it with ``send_request`` and a dry-run plan shows it with ``preview``, so both see
the same request.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from luabridge.accounts import AccountSettings
from luabridge.action import CallContext
from luabridge.errors import ConfigError, IntegrationError, NotFoundError

from .client import DEFAULT_BASE_URL, LoopsClient, preview_request
from .directory import (
    LOCAL_ID_PREFIX,
    ContactDirectory,
    DirectoryError,
    EarlierContactsLost,
    account_identity,
    default_directory_path,
)

if TYPE_CHECKING:
    import httpx

    from .models import SendEventInput, SendTransactionalEmailInput

__all__ = [
    "LoopsAccount",
    "Request",
    "account_of",
    "as_items",
    "as_object",
    "compact",
    "directory_of",
    "forget",
    "idempotency_key",
    "noted",
    "open_account",
    "preview",
    "record",
    "resolve",
    "send_request",
    "unknown_contact_id",
]

_log = logging.getLogger(__name__)


@dataclass
class LoopsAccount:
    """What ``ctx.client`` is for a Loops account: its HTTP client and its contact directory.

    - ``name``: the account name (``default``, ``marketing``, ...)
    - ``client``: the account's ``LoopsClient``
    - ``account_id``: the key of its rows in the directory (see ``account_identity``)
    - ``directory_path``: the directory file; it is opened on first use, so a folder that cannot
      be written only fails the actions that need the directory
    """

    name: str
    client: LoopsClient
    account_id: str
    directory_path: Path
    #: Seconds the team's property names are trusted before they are asked for again.
    properties_ttl: float = 60.0
    _directory: ContactDirectory | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _properties: tuple[float, frozenset[str]] | None = field(default=None, repr=False)

    def cached_properties(self) -> frozenset[str] | None:
        """The team's property keys as last fetched, or None when never fetched or stale."""
        with self._lock:
            if self._properties is None:
                return None
            fetched, keys = self._properties
            if time.monotonic() - fetched > self.properties_ttl:
                return None
            return keys

    def remember_properties(self, keys: frozenset[str]) -> None:
        with self._lock:
            self._properties = (time.monotonic(), keys)

    @property
    def directory(self) -> ContactDirectory:
        """The contact directory, opened on first use (raises ``DirectoryError``)."""
        with self._lock:
            if self._directory is None:
                self._directory = ContactDirectory(self.directory_path)
            return self._directory

    def close(self) -> None:
        """Close the HTTP client and the directory."""
        self.client.close()
        with self._lock:
            if self._directory is not None:
                self._directory.close()
                self._directory = None


def open_account(
    settings: AccountSettings,
    *,
    directory_path: str | Path | None = None,
    transport: httpx.BaseTransport | None = None,
) -> LoopsAccount:
    """A ``LoopsAccount`` for ``settings``: the ``Integration.open_client`` of the Loops pack.

    The directory file is ``directory_path`` if given, else ``default_directory_path()``.
    """
    if not settings.api_key:
        raise ConfigError(
            f"Loops account {settings.name!r} has no API key; set LOOPS_API_KEY (for default) or "
            f"LOOPS_API_KEY_{settings.name.upper()}, or api_key_env in luabridge.toml"
        )
    base_url = settings.base_url or DEFAULT_BASE_URL
    client = LoopsClient(
        api_key=settings.api_key,
        base_url=base_url,
        timeout=settings.timeout or 10.0,
        rate_limit=10.0 if settings.rate_limit is None else settings.rate_limit,
        redis_url=settings.redis_url,
        transport=transport,
    )
    return LoopsAccount(
        name=settings.name,
        client=client,
        account_id=account_identity(settings.name, base_url, settings.api_key),
        directory_path=Path(directory_path) if directory_path else default_directory_path(),
    )


# --- plumbing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request to Loops, described once for both the handler and the dry-run plan."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    idempotency_key: str | None = None


def account_of(ctx: CallContext) -> LoopsAccount:
    if not isinstance(ctx.client, LoopsAccount):
        raise IntegrationError(
            f"{ctx.integration}.{ctx.account}: no Loops client is open for this call (got "
            f"{type(ctx.client).__name__}); a dry run cannot look contacts up without one, so "
            "name the contact by email or user_id instead of contact_id",
            code="loops.no_client",
        )
    return ctx.client


def send_request(ctx: CallContext, request: Request) -> Any:
    return account_of(ctx).client.request(
        request.method,
        request.path,
        params=request.params,
        json=request.json,
        idempotency_key=request.idempotency_key,
        deadline=ctx.deadline,
    )


def preview(ctx: CallContext, request: Request) -> dict[str, Any]:
    """The plan of ``request``. Without the account's client (a dry run that opened none) the
    base URL is unknown, so ``url`` is the path relative to the account's base URL."""
    base_url = ctx.client.client.base_url if isinstance(ctx.client, LoopsAccount) else ""
    return preview_request(
        base_url,
        request.method,
        request.path,
        params=request.params,
        json=request.json,
        idempotency_key=request.idempotency_key,
    )


def directory_of(ctx: CallContext) -> ContactDirectory:
    """The directory, for actions that cannot work without it."""
    try:
        return account_of(ctx).directory
    except DirectoryError as exc:
        raise IntegrationError(exc.args[0], code="loops.directory_unavailable") from exc


def record(ctx: CallContext, contact: Mapping[str, Any], *, replace: bool = False) -> str | None:
    """Record ``contact`` in the directory; why it could not be recorded, or None.

    The remote call already worked, so a directory failure does not fail the action: the
    caller puts the reason in the result's ``directory_error`` (and it is logged), so that a
    script learns that ids of this contact will not resolve."""
    if not contact.get("id"):
        return None
    account = account_of(ctx)
    try:
        account.directory.upsert(account.account_id, contact, replace=replace)
    except EarlierContactsLost as exc:
        _log.warning("the contact directory lost contacts of earlier calls: %s", exc)
        return (
            "Loops did it and the contact directory queued it, but it lost contacts of "
            f"earlier calls: {exc}"
        )
    except DirectoryError as exc:
        _log.warning("could not record contact %s: %s", contact.get("id"), exc)
        return f"Loops did it, but the contact directory could not record it: {exc}"
    return None


def forget(ctx: CallContext, **identity: str | None) -> str | None:
    """Drop a contact from the directory; why it could not be dropped, or None (see record)."""
    account = account_of(ctx)
    try:
        account.directory.remove(account.account_id, **identity)
    except DirectoryError as exc:
        _log.warning("could not remove contact from the directory: %s", exc)
        return f"Loops did it, but the contact directory could not forget the contact: {exc}"
    return None


def noted(result: dict[str, Any], *notes: str | None) -> dict[str, Any]:
    """``result`` with ``directory_error`` set to the first directory failure, if any."""
    problem = next((n for n in notes if n), None)
    return {**result, "directory_error": problem} if problem else result


def compact(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the entries that are None (parameters left out)."""
    return {k: v for k, v in values.items() if v is not None}


def as_object(data: Any) -> Mapping[str, Any]:
    # A parsed JSON object is a dict: tested first, the Mapping check is an ABC's.
    return data if type(data) is dict or isinstance(data, Mapping) else {}


def as_items(data: Any) -> list[Mapping[str, Any]]:
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def idempotency_key(params: SendEventInput | SendTransactionalEmailInput) -> str:
    """The caller's key, or one made for this call and kept on it so retries reuse it."""
    if params.idempotency_key:
        return params.idempotency_key
    if params._generated_key is None:
        params._generated_key = str(uuid.uuid4())
    return params._generated_key


def unknown_contact_id(contact_id: str) -> IntegrationError:
    return NotFoundError(
        f"contact_id {contact_id!r} is not in the local contact directory for this "
        "account. Ids are known only after this integration created, updated, found or fetched "
        "the contact; call find_contact with email or user_id to look it up in Loops.",
        code="loops.unknown_contact_id",
    )


def resolve(ctx: CallContext, contact_id: str) -> dict[str, Any]:
    """The contact with this id, fresh from ``/contacts/find``, found through the directory."""
    account = account_of(ctx)
    stored = directory_of(ctx).get(account.account_id, contact_id)
    if stored is None:
        raise unknown_contact_id(contact_id)
    if stored.get("email"):
        query = {"email": stored["email"]}
    elif stored.get("userId"):
        query = {"userId": stored["userId"]}
    else:
        raise unknown_contact_id(contact_id)
    found = as_items(send_request(ctx, Request("GET", "/contacts/find", params=query)))
    for contact in found:
        record(ctx, contact, replace=True)
    if found and contact_id.startswith(LOCAL_ID_PREFIX):
        # An imported row whose export had no id: the contact with its email is the one (its
        # real row, just recorded, has replaced the local one).
        return dict(found[0])
    if not any(contact.get("id") == contact_id for contact in found):
        forget(ctx, contact_id=contact_id)
        raise NotFoundError(
            f"contact {contact_id!r} is no longer in Loops (no contact has its "
            f"{next(iter(query))} {next(iter(query.values()))!r} any more); it has been removed "
            "from the contact directory. Use find_contact to look the person up again.",
            code="loops.not_found",
        )
    return next(dict(contact) for contact in found if contact.get("id") == contact_id)
