"""The HTTP client for one Loops account: rate limiting, retries, idempotency and error mapping.

``LoopsClient`` owns one ``httpx.Client`` (connection reuse, timeouts) and a client-side rate
limiter from ``luabridge.ratelimit`` (one budget per team: in this process, or in the fleet's
Redis). Every failure leaves it as an ``IntegrationError`` from ``luabridge.errors``,
built by ``map_error``, the only place that turns HTTP statuses and httpx exceptions into codes.
"""

from __future__ import annotations

import enum
import hashlib
import http.cookiejar
import json as jsonlib
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    # Imported where a request is made: a process that never opens a Loops client (a script
    # that does not call Loops) does not pay the ~40 ms of importing httpx.
    import httpx

from luabridge.errors import (
    APIError,
    AuthenticationError,
    BackendError,
    IntegrationError,
    NotFoundError,
    RateLimitError,
    TransportError,
)
from luabridge.ratelimit import RateLimiter, open_limiter
from luabridge.redact import REDACTED

__all__ = [
    "DEFAULT_BASE_URL",
    "ClientState",
    "LoopsClient",
    "RateLimiter",
    "map_error",
    "preview_request",
    "redact",
]

DEFAULT_BASE_URL: Final = "https://app.loops.so/api/v1"

#: Methods that can be repeated without changing the outcome. Any other request (a POST) is
#: retried after an attempt that may have reached Loops only when it carries an
#: Idempotency-Key: a repeated create would otherwise come back as a 409 for a contact the
#: first attempt made.
_IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Parsed URLs a client keeps, one per path (the actions use about fifteen).
_KEPT_URLS: Final = 64
#: Methods that only read: a doubtful attempt of one of these changed nothing.
_READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_IDEMPOTENCY_KEY: Final = 100
#: A Retry-After longer than this is not worth waiting for inside one script run.
_MAX_RETRY_AFTER: Final = 60.0
_SNIPPET: Final = 120
_USER_AGENT: Final = "luabridge-loops/0.1"


class ClientState(enum.Enum):
    """Lifecycle of a ``LoopsClient``."""

    #: Requests may be sent; the connection pool is live.
    OPEN = "open"
    #: ``close()`` was called: the pool is released and every request raises.
    CLOSED = "closed"


def redact(value: Any, secret: str) -> Any:
    """``value`` with every occurrence of ``secret`` in its strings replaced by the bridge's
    placeholder (``luabridge.redact.REDACTED``)."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, Mapping):
        return {redact(k, secret): redact(v, secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secret) for v in value]
    return value


def _detail(body: Any) -> str:
    """The error text of a Loops body: ``error.message``, then ``error``, then ``message``."""
    if not isinstance(body, Mapping):
        return ""
    error = body.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("message"), str) and error["message"]:
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    message = body.get("message")
    return message if isinstance(message, str) else ""


def _parse_body(response: httpx.Response) -> tuple[Any, bool]:
    """``(parsed JSON, True)``, or ``(text, False)`` when the body is not JSON."""
    try:
        return jsonlib.loads(response.content), True
    except (ValueError, UnicodeDecodeError):
        return response.content.decode("utf-8", "replace"), False


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _request_id(response: httpx.Response) -> str | None:
    for name in ("x-request-id", "x-vercel-id", "cf-ray"):
        if name in response.headers:
            return response.headers[name]
    return None


class _Unsent:
    """``isinstance`` against the httpx errors raised before anything reached the server
    (a refused or never-opened connection), without importing httpx at module import."""

    def __instancecheck__(self, instance: object) -> bool:
        import httpx

        return isinstance(instance, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


_UNSENT: Any = _Unsent()


def _uncertain(error: IntegrationError, method: str, *, delivered: str, key: str | None) -> None:
    """Mark ``error`` as a failure whose request may have been carried out (a write only)."""
    if method in _READ_METHODS:
        return
    error.delivered = delivered
    if key:
        error.message += (
            f" Its delivery is unknown: send it again with the same idempotency_key ({key!r}) "
            "and Loops will not deliver it twice."
        )
    else:
        error.message += " Its delivery is unknown: check in Loops before repeating it."
    error.args = (error.message,)


def map_error(
    failure: httpx.Response | Exception,
    *,
    response: httpx.Response | None = None,
    secret: str = "",
    attempts: int = 1,
    timeout: float | None = None,
) -> IntegrationError:
    """Translate a failed exchange with Loops into the ``IntegrationError`` a script sees.

    ``failure`` is either the non-successful ``httpx.Response`` (including a 2xx whose body says
    ``success: false``), an ``httpx.RequestError`` raised while sending, or the ``ValueError``
    raised while decoding the ``response`` body. Codes:

    - 401 ``loops.unauthorized``; 404 ``loops.not_found``; 409 ``loops.conflict``;
      400 ``loops.bad_request``; other 4xx ``loops.http_<status>``
    - 429 ``loops.rate_limited`` and 5xx ``loops.server_error`` (both retryable)
    - ``loops.timeout`` / ``loops.connection_error`` for transport failures (retryable)
    - ``loops.invalid_response`` for a body that is not the JSON Loops promises
    - ``loops.api_error`` for a 2xx body carrying ``success: false``

    ``secret`` (the API key) is removed from the message and the body by value.
    """
    import httpx

    tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
    error: IntegrationError
    if isinstance(failure, httpx.TimeoutException):
        limit = f" within {timeout:g} s" if timeout is not None else ""
        error = TransportError(
            f"Loops did not answer{limit} ({type(failure).__name__}){tries}. Try again later, "
            "or give the account a longer timeout.",
            code="loops.timeout",
        )
    elif isinstance(failure, httpx.DecodingError):
        error = TransportError(
            f"Loops sent a body that could not be decoded ({failure}){tries}.",
            code="loops.invalid_response",
        )
    elif isinstance(failure, httpx.RequestError):
        try:
            host = failure.request.url.host
        except RuntimeError:  # httpx raises when the request is not attached
            host = "Loops"
        if isinstance(failure, _UNSENT):
            advice = "Check the account's base_url and the network, then try again."
        else:
            advice = (
                "The connection was lost after the request was sent, so Loops may have carried "
                "it out."
            )
        error = TransportError(
            f"could not talk to {host} ({type(failure).__name__}: {failure}){tries}. {advice}",
            code="loops.connection_error",
        )
    elif isinstance(failure, ValueError) and response is not None:
        text = response.content.decode("utf-8", "replace")
        shown = f": {_snippet(text)!r}" if text.strip() else " (empty body)"
        error = TransportError(
            f"Loops answered HTTP {response.status_code} with a body that is not valid JSON "
            f"(truncated or not JSON){shown}. The request may have been carried out; check "
            "before repeating a write.",
            code="loops.invalid_response",
            status=response.status_code,
            retryable=False,
            body=text[:1000],
            request_id=_request_id(response),
        )
    elif isinstance(failure, httpx.Response):
        error = _error_from_status(failure, tries)
    else:
        error = TransportError(
            f"unexpected failure while talking to Loops: {type(failure).__name__}: {failure}",
            code="loops.connection_error",
        )
    if secret:
        error.message = redact(error.message, secret)
        error.args = (error.message,)
        error.body = redact(error.body, secret)
    return error


def _error_from_status(response: httpx.Response, tries: str) -> IntegrationError:
    status = response.status_code
    body, is_json = _parse_body(response)
    detail = _detail(body) if is_json else ""
    if not detail and not is_json and body.strip() and "<" not in body:
        detail = _snippet(body)
    fallback = f"Loops answered HTTP {status} {response.reason_phrase}".rstrip()
    text = _sentence(detail or fallback)
    common: dict[str, Any] = {
        "status": status,
        "body": body if is_json else body[:1000],
        "request_id": _request_id(response),
    }
    if 200 <= status < 300:
        return APIError(
            _sentence(detail or "Loops answered success=false without a message"),
            code="loops.api_error",
            **common,
        )
    if status == 401:
        return AuthenticationError(
            f"{text} Check the API key configured for this account.",
            code="loops.unauthorized",
            **common,
        )
    if status == 404:
        return NotFoundError(text, code="loops.not_found", **common)
    if status == 409:
        return APIError(text, code="loops.conflict", **common)
    if status == 429:
        limit = response.headers.get("x-ratelimit-limit", "10")
        text = _sentence(detail or f"Rate limit of {limit} requests per second exceeded")
        return RateLimitError(
            f"{text[:-1]}{tries}. Make fewer calls per second, or try again in a moment.",
            code="loops.rate_limited",
            retryable=True,
            **common,
        )
    if status >= 500:
        return APIError(
            f"{text[:-1]}{tries}. Loops had a server error; try again later.",
            code="loops.server_error",
            retryable=True,
            **common,
        )
    code = "loops.bad_request" if status == 400 else f"loops.http_{status}"
    return APIError(text, code=code, **common)


def preview_request(
    base_url: str,
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    json: Any = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A request as a dry-run plan: method, full URL, query params, JSON body and the headers
    that matter (never Authorization)."""
    headers = {"Accept": "application/json"}
    if json is not None:
        headers["Content-Type"] = "application/json"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return {
        "method": method.upper(),
        "url": f"{base_url.rstrip('/')}/{path.lstrip('/')}",
        "params": dict(params) if params else None,
        "json": json,
        "headers": headers,
    }


def _retry_after(response: httpx.Response | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), if any."""
    if response is None or "retry-after" not in response.headers:
        return None
    raw = response.headers["retry-after"].strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing: a Loops response's cookies are dropped unread."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


class LoopsClient:
    """A client for one Loops account (one team and API key), safe to share between threads.

    - ``api_key``: the account's key, sent as ``Authorization: Bearer``; never shown in any
      message, ``repr`` or error body
    - ``base_url``: the API root (default ``https://app.loops.so/api/v1``)
    - ``timeout``: seconds per attempt for connect, read and write (default 10.0)
    - ``rate_limit``: client-side requests per second (default 10.0, the Loops team limit);
      ``0`` or ``None`` turns it off. Clients of the same team in one process share the budget
    - ``redis_url``: keep the team's budget in this Redis instead, shared by every process and
      machine that uses it (see ``luabridge.ratelimit``); default None
    - ``max_retries``: extra attempts after a connection error, 429 or 5xx (default 3)
    - ``backoff_base`` / ``backoff_cap``: the exponential backoff, in seconds (default 0.25
      doubling up to 2.0), with jitter; a ``Retry-After`` header wins when present
    - ``transport``: an ``httpx`` transport, for tests

    Retries never sleep past the ``deadline`` given to ``request``: when the next wait would
    cross it, the last failure is raised instead. Example::

        with LoopsClient(api_key=key) as loops:
            team = loops.request("GET", "/api-key")["teamName"]
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        rate_limit: float | None = 10.0,
        redis_url: str | None = None,
        max_retries: int = 3,
        backoff_base: float = 0.25,
        backoff_cap: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty; pass the Loops API key of the account")
        if not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0 (got {timeout!r})")
        if rate_limit is not None and rate_limit < 0:
            raise ValueError(f"rate_limit must be >= 0 requests per second (got {rate_limit!r})")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 (got {max_retries!r})")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._api_key = api_key
        # Loops counts requests per team, so the budget is named by what identifies the team.
        team = hashlib.sha256(f"{self.base_url}\n{api_key}".encode()).hexdigest()
        self._limiter = (
            open_limiter(f"loops:{team}", float(rate_limit), redis_url=redis_url)
            if rate_limit
            else None
        )
        self._random = random.Random()
        import httpx

        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": _USER_AGENT,
            },
            timeout=httpx.Timeout(self.timeout),
            transport=transport,
            follow_redirects=False,
            # Loops authenticates by key and sets no cookie an API client needs: keeping none
            # keeps one call's state out of the next, and saves every response the cookie
            # jar's parsing (11 us of the 115 us of a request on a mock transport).
            cookies=_NoCookies(),
        )
        # Every request is built here from these rather than by httpx's build_request, which
        # parses the URL, merges headers, cookies and query parameters and encodes the JSON
        # afresh each time: about 35 us of a request on a mock transport (see request()).
        # The names as httpx would send them (``Headers`` keys are lower-cased; its raw
        # pairs keep the case given).
        self._headers = {
            name.decode("ascii"): value.decode("latin-1") for name, value in self._http.headers.raw
        }
        self._urls: dict[str, httpx.URL] = {}
        self._state = ClientState.OPEN

    def __repr__(self) -> str:
        rate = f"{self._limiter.rate:g}/s" if self._limiter else "off"
        return (
            f"LoopsClient(base_url={self.base_url!r}, rate_limit={rate}, state={self._state.value})"
        )

    def __enter__(self) -> LoopsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def rate_limit(self) -> float | None:
        """Requests per second this client keeps to, or None when limiting is off."""
        return self._limiter.rate if self._limiter else None

    def close(self) -> None:
        """Release the connection pool. Closing twice is harmless."""
        if self._state is ClientState.OPEN:
            self._state = ClientState.CLOSED
            self._http.close()

    def url_for(self, path: str) -> str:
        """The full URL of ``path`` (relative to the base URL), without a query string."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def preview(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """The request ``request`` would send, as a dry-run plan (see ``preview_request``)."""
        return preview_request(
            self.base_url,
            method,
            path,
            params=params,
            json=json,
            idempotency_key=idempotency_key,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Send one logical request and return its parsed JSON body.

        Connection errors, 429 and 5xx are retried (``max_retries`` times at most) with capped
        exponential backoff and jitter, honouring ``Retry-After``. A write without
        ``idempotency_key`` (a POST) is not retried once an attempt may have reached Loops (a
        connection lost after sending, a read timeout, a 5xx): it fails with
        ``delivered="unknown"``. ``idempotency_key`` goes out
        as ``Idempotency-Key`` on every attempt, and a 409 on it means Loops has already carried
        out that key (an earlier attempt, or an earlier run of the same execution): the result
        is ``{"success": True, "deduplicated": True}``. ``deadline`` is a ``time.monotonic()``
        value that no attempt and no wait may go past.

        Raises an ``IntegrationError`` (see ``map_error``) when the request fails for good. When
        a write may have been carried out anyway (a connection lost after sending, a 5xx, the
        deadline reached after such an attempt) the error's ``delivered`` is ``"unknown"`` and
        its message says how to repeat it safely.
        """
        import httpx

        if self._state is ClientState.CLOSED:
            raise RuntimeError(
                "this LoopsClient has been closed; open a new one to send more requests"
            )
        method = method.upper()
        headers = self._headers.copy()
        if idempotency_key:
            if len(idempotency_key) > _MAX_IDEMPOTENCY_KEY:
                raise ValueError(
                    f"idempotency_key is {len(idempotency_key)} characters long; Loops accepts "
                    f"at most {_MAX_IDEMPOTENCY_KEY}"
                )
            headers["Idempotency-Key"] = idempotency_key
        body = None
        if json is not None:
            # As httpx writes a json= body; encoded once, before any attempt, so that a value
            # JSON cannot hold fails here without taking a slot of the rate limit.
            body = jsonlib.dumps(
                json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
            headers["Content-Length"] = str(len(body))
            headers["Content-Type"] = "application/json"
        url = self._url(path)
        # A write with no Idempotency-Key is sent again only while no attempt can have reached
        # Loops (a refused connection, a 429); after that, a retry could apply it twice.
        keyless_write = not idempotency_key and method not in _IDEMPOTENT_METHODS
        attempts = 0
        maybe_delivered = False  # an earlier attempt may have been carried out by Loops
        while True:
            attempts += 1
            if self._limiter is not None and not self._acquire(deadline):
                raise RateLimitError(
                    f"the client-side rate limit ({self._limiter.rate:g} requests per second) "
                    "has no free slot before the run's deadline. Make fewer calls, or give the "
                    "run more time.",
                    code="loops.rate_limited",
                    retryable=True,
                )
            try:
                timeout = self._attempt_timeout(deadline, attempts)
            except IntegrationError as late:
                if maybe_delivered:
                    _uncertain(late, method, delivered="unknown", key=idempotency_key)
                raise
            response: httpx.Response | None = None
            try:
                request = httpx.Request(
                    method,
                    url,
                    params=params,
                    headers=headers,
                    content=body,
                    extensions={"timeout": httpx.Timeout(timeout).as_dict()},
                )
                response = self._http.send(request)
            except httpx.RequestError as exc:
                # A refused or never-opened connection carried nothing to Loops.
                maybe_delivered = maybe_delivered or not isinstance(exc, _UNSENT)
                doubtful_write = maybe_delivered and keyless_write
                delay = None if doubtful_write else self._next_delay(attempts, None)
                if delay is None or not self._fits(delay, deadline):
                    error = map_error(exc, secret=self._api_key, attempts=attempts, timeout=timeout)
                    if maybe_delivered:
                        _uncertain(error, method, delivered="unknown", key=idempotency_key)
                    raise error from exc
                time.sleep(delay)
                continue
            status = response.status_code
            if 200 <= status < 300:
                return self._parse_success(response, attempts)
            if status == 409 and idempotency_key:
                # Loops answers 409 only to a key it has already carried out: by an earlier
                # attempt of ours, or by an earlier run that sent the same logical request.
                return {"success": True, "deduplicated": True}
            # A keyless write answered 5xx may have been carried out: sending it again could
            # apply it twice, so it is not retried.
            retry = status == 429 or (status >= 500 and not keyless_write)
            delay = self._next_delay(attempts, response) if retry else None
            if delay is None or not self._fits(delay, deadline):
                failure = map_error(response, secret=self._api_key, attempts=attempts)
                if status >= 500 or (status == 429 and maybe_delivered):
                    _uncertain(failure, method, delivered="unknown", key=idempotency_key)
                raise failure
            maybe_delivered = maybe_delivered or status >= 500
            time.sleep(delay)

    def _url(self, path: str) -> httpx.URL:
        """The parsed URL of ``path`` under the base URL (kept for the few paths in use)."""
        import httpx

        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(self.url_for(path))
            if len(self._urls) < _KEPT_URLS:
                self._urls[path] = url
        return url

    def _acquire(self, deadline: float | None) -> bool:
        """A slot of the team's budget; the one place a limiter failure becomes a Loops error."""
        assert self._limiter is not None
        try:
            return self._limiter.acquire(deadline)
        except BackendError as exc:
            raise TransportError(
                str(exc), code="loops.rate_limit_unavailable", retryable=True
            ) from exc

    @staticmethod
    def _fits(delay: float, deadline: float | None) -> bool:
        """Whether waiting ``delay`` seconds still leaves time before ``deadline``."""
        return deadline is None or time.monotonic() + delay < deadline

    def _attempt_timeout(self, deadline: float | None, attempts: int) -> float:
        """This attempt's timeout: the client's, cut to what is left before ``deadline``."""
        if deadline is None:
            return self.timeout
        left = deadline - time.monotonic()
        if left <= 0:
            again = " before it could be retried" if attempts > 1 else " before it was sent"
            raise TransportError(
                f"the run's deadline passed{again}; give the run more time.",
                code="loops.timeout",
            )
        return min(self.timeout, left)

    def _next_delay(self, attempts: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before the next attempt, or None to stop retrying."""
        if attempts > self.max_retries:
            return None
        hinted = _retry_after(response)
        if hinted is not None:
            return hinted if hinted <= _MAX_RETRY_AFTER else None
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempts - 1))
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    def _parse_success(self, response: httpx.Response, attempts: int) -> Any:
        if response.status_code == 204:
            return None
        try:
            data = jsonlib.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise map_error(
                exc, response=response, secret=self._api_key, attempts=attempts
            ) from exc
        if isinstance(data, Mapping) and data.get("success") is False:
            raise map_error(response, secret=self._api_key, attempts=attempts)
        return data
