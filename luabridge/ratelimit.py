"""Request-rate limits that clients of a service keep to: in one process, or shared in Redis.

An integration's client asks :func:`open_limiter` for the limiter of one budget (a team, an
account), named by a key of its choosing, at the rate its service allows. Without a Redis URL
the budget is :class:`RateLimiter`, shared by every client of the same key in this process.
With one it is :class:`RedisRateLimiter`: one budget for every process and machine that uses
that Redis, so a fleet of workers keeps to the service's limit together.

Both reserve a slot first and wait for it afterwards, and both refuse (return False, without
waiting) a slot that would open after the caller's deadline. When Redis cannot be reached the
shared limiter raises :class:`~luabridge.errors.BackendError`; it never lets a request through
unlimited.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from luabridge.errors import BackendError
from luabridge.fleet import describe_url, redis_client

if TYPE_CHECKING:
    import redis

__all__ = ["KEY_PREFIX", "Limiter", "RateLimiter", "RedisRateLimiter", "open_limiter"]

#: Prefix of the Redis keys of shared budgets (``luabridge:rate:<sha256 of the budget key>``).
KEY_PREFIX: Final = "luabridge:rate:"

#: How long a shared limiter waits for Redis to answer before it reports it unreachable.
_REDIS_TIMEOUT: Final = 2.0

# GCRA ("generic cell rate algorithm") with no burst: the key holds the earliest time the next
# request may start (its "theoretical arrival time"), in microseconds of the Redis server's
# clock, so machines with different clocks still share one schedule. A caller gets the slot
# max(now, tat), the key moves one interval on, and the answer is {granted, wait in µs}. A slot
# past the caller's longest wait is refused and nothing is reserved.
_GCRA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local start = math.max(tat, now)
local wait = start - now
if wait > tonumber(ARGV[2]) then
  return {0, wait}
end
local nxt = start + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
return {1, wait}
"""


class Limiter(Protocol):
    """What a client needs of a limiter."""

    rate: float

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for a request slot; False (without waiting) if it would open after
        ``deadline`` (a ``time.monotonic()`` value)."""
        ...


class RateLimiter:
    """A thread-safe sliding-window limiter: at most ``rate`` request starts per second.

    It keeps the start times of the last ``n`` requests (``n = floor(rate)``, at least 1) and
    lets a new one start only once the oldest of them is a full window (``n / rate`` seconds,
    plus ``slack``) old. Unlike a token bucket it never allows a burst above the limit, so a
    burst of 50 calls at 10/s puts at most 10 in any one-second window. Slots are reserved in
    order under a lock and waited for outside it.

    - ``rate``: requests per second (> 0)
    - ``clock`` / ``sleep``: time sources (default ``time.monotonic`` / ``time.sleep``), for tests
    - ``slack``: extra seconds added to the window, to absorb network jitter (default 0.05)

    >>> limiter = RateLimiter(10.0)
    >>> limiter.acquire(deadline=None)
    True
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        slack: float = 0.05,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be a number of requests per second > 0 (got {rate!r})")
        self.rate = float(rate)
        self._size = max(1, int(rate))
        self._window = self._size / self.rate + slack
        self._starts: deque[float] = deque(maxlen=self._size)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:g}/s)"

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for a request slot; False (without waiting) if it would open after ``deadline``."""
        with self._lock:
            now = self._clock()
            start = now
            if len(self._starts) == self._size:
                start = max(now, self._starts[0] + self._window)
            if deadline is not None and start > deadline:
                return False
            self._starts.append(start)
        if start > now:
            self._sleep(start - now)
        return True


class RedisRateLimiter:
    """One budget of ``rate`` requests per second shared through Redis by every process.

    Requests are paced evenly, one every ``(1 + slack) / rate`` seconds (108 ms at 10/s), so
    no one-second window anywhere sees more than ``rate`` of them, whichever process sent
    them: eleven requests in a row span 1.08 s, which leaves 80 ms for the network, the
    scheduling of busy machines and the server to bunch them up. The schedule lives in one
    Redis key (see ``KEY_PREFIX``) and is advanced by one atomic script per request, on the
    Redis server's clock.

    - ``url``: the Redis URL (``redis://host:port/db``)
    - ``key``: the budget's name; clients of the same key share it
    - ``rate``: requests per second (> 0)
    - ``slack``: the fraction added to each interval to absorb jitter (default 0.08; the
      budget still gets more than 92% of the rate)

    ``acquire`` raises ``BackendError`` when Redis does not answer within 2 s.
    """

    def __init__(self, url: str, key: str, rate: float, *, slack: float = 0.08) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be a number of requests per second > 0 (got {rate!r})")
        self.rate = float(rate)
        self.url = url
        self.key = KEY_PREFIX + hashlib.sha256(key.encode()).hexdigest()
        self._interval_us = round(1_000_000 * (1 + slack) / self.rate)
        self._client: redis.Redis = redis_client(url, timeout=_REDIS_TIMEOUT)
        self._script: Any = self._client.register_script(_GCRA)

    def __repr__(self) -> str:
        return f"RedisRateLimiter(rate={self.rate:g}/s, redis={describe_url(self.url)})"

    def acquire(self, deadline: float | None = None) -> bool:
        """Reserve the next shared slot and wait for it; False (nothing reserved) when it would
        open after ``deadline``. Raises ``BackendError`` when Redis cannot be reached."""
        import redis

        now = time.monotonic()
        longest = 3600.0 if deadline is None else max(0.0, deadline - now)
        try:
            granted, wait_us = self._script(
                keys=[self.key], args=[self._interval_us, int(longest * 1_000_000)]
            )
        except redis.RedisError as exc:
            raise BackendError(
                f"the shared rate limit in Redis ({describe_url(self.url)}) could not be "
                f"reached ({type(exc).__name__}: {exc}); the request was not sent. Check that "
                "Redis is running and that LUABRIDGE_REDIS_URL points at it, then try again."
            ) from exc
        if not granted:
            return False
        if wait_us > 0:
            time.sleep(wait_us / 1_000_000)
        return True


# In-process budgets are shared by every client of the same key and rate in this process;
# weak values let one go away with the last client that uses it.
_LOCAL: weakref.WeakValueDictionary[tuple[str, float], RateLimiter] = weakref.WeakValueDictionary()
_LOCAL_LOCK = threading.Lock()


def open_limiter(key: str, rate: float, *, redis_url: str | None = None) -> Limiter:
    """The limiter of budget ``key`` at ``rate`` requests per second: shared through Redis
    when ``redis_url`` is given, else shared by the clients of this process."""
    if redis_url:
        return RedisRateLimiter(redis_url, key, rate)
    with _LOCAL_LOCK:
        limiter = _LOCAL.get((key, rate))
        if limiter is None:
            limiter = RateLimiter(rate)
            _LOCAL[(key, rate)] = limiter
        return limiter
