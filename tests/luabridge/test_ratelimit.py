"""Tests of ``luabridge.ratelimit``: the shared Redis budget against a real ``redis-server``."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from luabridge.errors import BackendError
from luabridge.ratelimit import KEY_PREFIX, RateLimiter, RedisRateLimiter, open_limiter


def max_per_window(starts: list[float], window: float = 1.0) -> int:
    """The most times found in any half-open window ``[t, t + window)``."""
    starts = sorted(starts)
    return max(sum(1 for t in starts[i:] if t < first + window) for i, first in enumerate(starts))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_open_limiter_without_redis_shares_in_process() -> None:
    one = open_limiter("team-a", 10.0)
    assert isinstance(one, RateLimiter)
    assert open_limiter("team-a", 10.0) is one
    assert open_limiter("team-b", 10.0) is not one


def test_open_limiter_with_redis_url(redis_url: str) -> None:
    limiter = open_limiter("team-a", 10.0, redis_url=redis_url)
    assert isinstance(limiter, RedisRateLimiter)
    assert limiter.key.startswith(KEY_PREFIX) and "team-a" not in limiter.key
    assert "10/s" in repr(limiter)


def test_redis_limiter_paces_evenly(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, "pace", 20.0)
    began = time.monotonic()
    for _ in range(11):
        assert limiter.acquire()
    # Ten intervals of (1 + 0.08) / 20 s each after the first, immediate, slot.
    assert time.monotonic() - began >= 10 * 0.054 - 0.01


def test_redis_limiter_shared_by_instances_and_threads(redis_url: str) -> None:
    """Four limiters of one key, each in its own thread, keep to one budget together."""
    starts: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        limiter = RedisRateLimiter(redis_url, "shared", 10.0)
        for _ in range(6):
            assert limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(starts) == 24
    assert max_per_window(starts) <= 10
    # 24 slots 108 ms apart: about 2.5 s, well under what one process at a time would take.
    assert 2.3 <= max(starts) - min(starts) <= 3.5


def test_redis_limiter_slot_after_deadline_refused_without_reserving(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, "deadline", 1.0)
    assert limiter.acquire()
    began = time.monotonic()
    assert limiter.acquire(deadline=began + 0.2) is False
    assert time.monotonic() - began < 0.2
    # The refusal reserved nothing: the next slot is still the one a second after the first.
    assert limiter.acquire(deadline=time.monotonic() + 1.2)


def test_redis_limiter_unreachable_is_backend_error() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    limiter = RedisRateLimiter(url, "gone", 10.0)
    began = time.monotonic()
    with pytest.raises(BackendError, match="could not be reached") as info:
        limiter.acquire()
    assert time.monotonic() - began < 3.0
    assert "LUABRIDGE_REDIS_URL" in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_redis_limiter_hides_password_in_messages() -> None:
    url = f"redis://:s3cret-pass@127.0.0.1:{closed_port()}/0"
    limiter = RedisRateLimiter(url, "gone", 10.0)
    assert "s3cret" not in repr(limiter)
    with pytest.raises(BackendError) as info:
        limiter.acquire()
    assert "s3cret" not in str(info.value)


def test_redis_limiter_rate_not_positive_refused() -> None:
    with pytest.raises(ValueError, match="> 0"):
        RedisRateLimiter("redis://127.0.0.1:1/0", "x", 0)
