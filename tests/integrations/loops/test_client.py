"""Tests of ``integrations.loops.client``: rate limiting, retries, idempotency, error mapping.

Faults the emulator cannot produce cleanly (timeouts, broken bodies, exact retry sequences)
use ``httpx.MockTransport``; the rest talk to the emulator over HTTP when it is available.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from integrations.loops.client import (
    DEFAULT_BASE_URL,
    ClientState,
    LoopsClient,
    RateLimiter,
    map_error,
    preview_request,
)
from integrations.loops.emulator.seed import DEMO_KEYS
from luabridge.errors import (
    APIError,
    AuthenticationError,
    IntegrationError,
    NotFoundError,
    RateLimitError,
    TransportError,
)

if TYPE_CHECKING:
    from integrations.loops.emulator import EmulatorServer

KEY = "sk_test_0123456789abcdef"
Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **options: Any) -> LoopsClient:
    settings: dict[str, Any] = {
        "api_key": KEY,
        "base_url": "http://loops.test/api/v1",
        "rate_limit": None,
        "backoff_base": 0.01,
        "backoff_cap": 0.02,
    }
    settings.update(options)
    return LoopsClient(transport=httpx.MockTransport(handler), **settings)


def replies(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering with ``responses`` in turn (the last one repeats), and its log."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler, seen


def fail(
    client: LoopsClient, method: str = "GET", path: str = "/api-key", **kw: Any
) -> IntegrationError:
    with pytest.raises(IntegrationError) as info:
        client.request(method, path, **kw)
    return info.value


# --- rate limiter ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def max_per_window(starts: list[float], window: float = 1.0) -> int:
    """The most start times found in any half-open window ``[t, t + window)``."""
    starts = sorted(starts)
    best = 0
    for i, first in enumerate(starts):
        best = max(best, sum(1 for t in starts[i:] if t < first + window))
    return best


def test_limiter_burst_of_50_at_most_10_per_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep, slack=0.0)
    starts = []
    for _ in range(50):
        assert limiter.acquire()
        starts.append(clock.now)
    assert max_per_window(starts) == 10
    assert starts[-1] - starts[0] == pytest.approx(4.0)


def test_limiter_fractional_rate_spaces_requests() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock, sleep=clock.sleep, slack=0.0)
    starts = []
    for _ in range(3):
        limiter.acquire()
        starts.append(clock.now)
    assert [b - a for a, b in itertools.pairwise(starts)] == [2.0, 2.0]


def test_limiter_slot_after_deadline_refused() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock, sleep=clock.sleep, slack=0.0)
    assert limiter.acquire(deadline=clock.now + 0.5)
    assert not limiter.acquire(deadline=clock.now + 0.5)
    assert clock.now == 1000.0  # refused without waiting


def test_limiter_rate_not_positive_refused() -> None:
    with pytest.raises(ValueError, match="> 0"):
        RateLimiter(0)


def test_client_burst_of_50_from_8_threads_at_most_10_per_second() -> None:
    """Real time: 50 calls shared by 8 threads through one client limited to 10/s."""
    starts: list[float] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            starts.append(time.monotonic())
        return httpx.Response(200, json={"success": True, "teamName": "t"})

    with make_client(handler, api_key=KEY + "-burst", rate_limit=10.0) as client:
        calls = iter(range(50))

        def worker() -> None:
            while True:
                with lock:
                    if next(calls, None) is None:
                        return
                client.request("GET", "/api-key")

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(starts) == 50
    assert max_per_window(starts) <= 10


def test_client_same_team_shares_limiter() -> None:
    handler, _ = replies(httpx.Response(200, json={}))
    with (
        make_client(handler, api_key=KEY + "-shared", rate_limit=5) as one,
        make_client(handler, api_key=KEY + "-shared", rate_limit=5) as two,
        make_client(handler, api_key=KEY + "-other", rate_limit=5) as other,
    ):
        assert one._limiter is two._limiter
        assert one._limiter is not other._limiter


# --- retries --------------------------------------------------------------------------------


def test_client_429_then_success_retried() -> None:
    handler, seen = replies(
        httpx.Response(429, headers={"Retry-After": "0.05"}),
        httpx.Response(200, json={"success": True, "teamName": "Acme"}),
    )
    with make_client(handler) as client:
        began = time.monotonic()
        assert client.request("GET", "/api-key") == {"success": True, "teamName": "Acme"}
        assert time.monotonic() - began >= 0.05
    assert len(seen) == 2


def test_client_429_after_retries_rate_limited() -> None:
    handler, seen = replies(httpx.Response(429, headers={"x-ratelimit-limit": "10"}))
    with make_client(handler, max_retries=2) as client:
        error = fail(client)
    assert isinstance(error, RateLimitError)
    assert (error.code, error.status, error.retryable) == ("loops.rate_limited", 429, True)
    assert "10 requests per second" in error.message
    assert "3 attempts" in error.message
    assert len(seen) == 3


def test_client_persistent_500_retryable_error_within_deadline() -> None:
    handler, seen = replies(httpx.Response(500, json={"success": False, "message": "Boom."}))
    with make_client(handler, max_retries=50, backoff_base=0.1, backoff_cap=0.3) as client:
        began = time.monotonic()
        error = fail(client, deadline=began + 1.0)
        elapsed = time.monotonic() - began
    assert isinstance(error, APIError)
    assert (error.code, error.status, error.retryable) == ("loops.server_error", 500, True)
    assert error.message.startswith("Boom")
    assert elapsed < 1.0
    assert 2 <= len(seen) < 50


def test_client_retry_after_past_deadline_stops_at_once() -> None:
    handler, seen = replies(httpx.Response(503, headers={"Retry-After": "5"}))
    with make_client(handler) as client:
        began = time.monotonic()
        error = fail(client, deadline=began + 1.0)
        assert time.monotonic() - began < 0.5
    assert error.code == "loops.server_error"
    assert len(seen) == 1


def test_client_retry_after_http_date_honoured() -> None:
    # The date has one-second resolution: two seconds ahead is always more than one away.
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    handler, seen = replies(
        httpx.Response(429, headers={"Retry-After": when}), httpx.Response(200, json=[])
    )
    with make_client(handler) as client:
        began = time.monotonic()
        assert client.request("GET", "/lists") == []
        assert time.monotonic() - began > 0.9
    assert len(seen) == 2


def test_client_deadline_passed_before_send_timeout() -> None:
    handler, seen = replies(httpx.Response(200, json={}))
    with make_client(handler) as client:
        error = fail(client, deadline=time.monotonic() - 1)
    assert (error.code, error.retryable) == ("loops.timeout", True)
    assert seen == []


def test_client_400_not_retried() -> None:
    handler, seen = replies(httpx.Response(400, json={"success": False, "message": "Bad."}))
    with make_client(handler) as client:
        error = fail(client, "POST", "/contacts/create", json={"email": "x"})
    assert (error.code, error.status, error.retryable) == ("loops.bad_request", 400, False)
    assert len(seen) == 1


def test_client_connection_cut_after_processing_counted_as_delivered() -> None:
    """The first attempt is carried out but its answer is lost; the retry gets 409."""
    handler, seen = replies(
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.Response(409, json={"success": False, "message": "already processed"}),
    )
    with make_client(handler) as client:
        result = client.request(
            "POST", "/events/send", json={"eventName": "signup"}, idempotency_key="key-1"
        )
    assert result == {"success": True, "deduplicated": True}
    assert [r.headers["Idempotency-Key"] for r in seen] == ["key-1", "key-1"]


def test_client_500_then_409_with_key_counted_as_delivered() -> None:
    handler, seen = replies(httpx.Response(502), httpx.Response(409, json={"success": False}))
    with make_client(handler) as client:
        result = client.request("POST", "/transactional", json={}, idempotency_key="key-2")
    assert result["deduplicated"] is True
    assert len(seen) == 2


def test_client_409_on_first_attempt_with_key_deduplicated() -> None:
    """A key Loops has already carried out (an earlier run's, or the caller's own) is a send
    that was delivered: success, deduplicated."""
    handler, seen = replies(httpx.Response(409, json={"success": False, "message": "Reused."}))
    with make_client(handler) as client:
        result = client.request("POST", "/events/send", json={}, idempotency_key="key-3")
    assert result == {"success": True, "deduplicated": True}
    assert len(seen) == 1


def test_client_429_then_409_with_key_deduplicated() -> None:
    handler, _ = replies(httpx.Response(429), httpx.Response(409, json={"message": "Reused."}))
    with make_client(handler) as client:
        result = client.request("POST", "/events/send", json={}, idempotency_key="key-4")
    assert result == {"success": True, "deduplicated": True}


def test_client_409_without_key_conflict() -> None:
    handler, _ = replies(httpx.Response(409, json={"message": "Email is already on list."}))
    with make_client(handler) as client:
        error = fail(client, "POST", "/contacts/create", json={"email": "a@b.co"})
    assert (error.code, error.status, error.delivered) == ("loops.conflict", 409, None)


def test_client_cut_after_sending_until_retries_run_out_delivery_unknown() -> None:
    handler, seen = replies(httpx.RemoteProtocolError("Server disconnected"))
    with make_client(handler, max_retries=2) as client:
        error = fail(client, "POST", "/events/send", json={}, idempotency_key="key-5")
    assert (error.code, error.delivered, error.retryable) == (
        "loops.connection_error",
        "unknown",
        True,
    )
    assert "lost after the request was sent" in error.message
    assert "same idempotency_key ('key-5')" in error.message
    assert "base_url" not in error.message
    assert error.to_result()["delivered"] == "unknown"
    assert len(seen) == 3


def test_client_5xx_until_retries_run_out_delivery_unknown() -> None:
    handler, _ = replies(httpx.Response(500))
    with make_client(handler, max_retries=1) as client:
        error = fail(client, "POST", "/contacts/create", json={"email": "a@b.co"})
    assert (error.code, error.delivered) == ("loops.server_error", "unknown")
    assert "check in Loops before repeating it" in error.message


def test_client_read_timeout_on_write_delivery_unknown() -> None:
    handler, _ = replies(httpx.ReadTimeout("timed out"))
    with make_client(handler, max_retries=0) as client:
        error = fail(client, "POST", "/transactional", json={}, idempotency_key="key-6")
    assert (error.code, error.delivered) == ("loops.timeout", "unknown")


def test_client_deadline_after_doubtful_attempt_delivery_unknown() -> None:
    """The answer is lost, and the run's deadline passes before the retry could go out."""
    handler, seen = replies(httpx.ReadError("reset"))
    with make_client(handler, backoff_base=0.05, backoff_cap=0.05) as client:
        deadline = time.monotonic() + 0.06
        with pytest.raises(TransportError) as info:
            client.request(
                "POST", "/events/send", json={}, idempotency_key="key-7", deadline=deadline
            )
    assert info.value.delivered == "unknown"
    assert len(seen) >= 1


def test_client_refused_connection_delivery_known() -> None:
    handler, _ = replies(httpx.ConnectError("Connection refused"))
    with make_client(handler, max_retries=0) as client:
        error = fail(client, "POST", "/events/send", json={}, idempotency_key="key-8")
    assert error.delivered is None
    assert "delivered" not in error.to_result()
    assert "base_url" in error.message


def test_client_read_cut_on_get_delivery_not_marked() -> None:
    handler, _ = replies(httpx.ReadError("reset"))
    with make_client(handler, max_retries=0) as client:
        error = fail(client, "GET", "/api-key")
    assert error.delivered is None


def test_client_connect_error_retried_then_connection_error() -> None:
    handler, seen = replies(httpx.ConnectError("Connection refused"))
    with make_client(handler, max_retries=2) as client:
        error = fail(client)
    assert isinstance(error, TransportError)
    assert (error.code, error.retryable) == ("loops.connection_error", True)
    assert "Connection refused" in error.message
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert len(seen) == 3


def test_client_read_timeout_loops_timeout() -> None:
    handler, _ = replies(httpx.ReadTimeout("timed out"))
    with make_client(handler, max_retries=0, timeout=2.5) as client:
        error = fail(client)
    assert (error.code, error.retryable, error.status) == ("loops.timeout", True, None)
    assert "2.5 s" in error.message


@pytest.mark.parametrize(
    "first",
    [httpx.ReadError("reset"), httpx.ReadTimeout("timed out"), httpx.Response(502)],
    ids=["lost-after-send", "read-timeout", "5xx"],
)
def test_client_keyless_write_not_retried_once_it_may_have_arrived(first: object) -> None:
    """A create has no Idempotency-Key: a second attempt could apply it twice (or answer 409
    for the contact the first one made), so the client stops and says delivery is unknown."""
    handler, seen = replies(first, httpx.Response(409, json={"message": "Dup."}))
    with make_client(handler) as client:
        error = fail(client, "POST", "/contacts/create", json={"email": "a@b.co"})
    assert error.delivered == "unknown"
    assert error.code != "loops.conflict"
    assert "check in Loops before repeating it" in error.message
    assert len(seen) == 1


def test_client_keyless_write_retried_when_nothing_arrived() -> None:
    """A refused connection or a 429 carried nothing to Loops: retrying a create is safe."""
    handler, seen = replies(
        httpx.ConnectError("refused"), httpx.Response(429), httpx.Response(200, json={"id": "c1"})
    )
    with make_client(handler) as client:
        result = client.request("POST", "/contacts/create", json={"email": "a@b.co"})
    assert result == {"id": "c1"}
    assert len(seen) == 3


# --- bodies and statuses --------------------------------------------------------------------


def test_client_non_json_body_invalid_response() -> None:
    handler, _ = replies(httpx.Response(200, text="<html>maintenance</html>"))
    with make_client(handler) as client:
        error = fail(client)
    assert isinstance(error, TransportError)
    assert (error.code, error.status, error.retryable) == ("loops.invalid_response", 200, False)
    assert "not valid JSON" in error.message
    assert isinstance(error.__cause__, ValueError)


def test_client_truncated_body_invalid_response() -> None:
    handler, _ = replies(httpx.Response(200, content=b'{"success": true, "id": "cm'))
    with make_client(handler) as client:
        error = fail(client, "POST", "/contacts/create", json={})
    assert error.code == "loops.invalid_response"
    assert "truncated" in error.message


def test_client_empty_body_invalid_response() -> None:
    handler, _ = replies(httpx.Response(200, content=b""))
    with make_client(handler) as client:
        assert "empty body" in fail(client).message


def test_client_204_returns_none() -> None:
    handler, _ = replies(httpx.Response(204))
    with make_client(handler) as client:
        assert client.request("DELETE", "/x") is None


def test_client_success_false_on_200_api_error() -> None:
    handler, _ = replies(httpx.Response(200, json={"success": False, "message": "Nope."}))
    with make_client(handler) as client:
        error = fail(client, "POST", "/contacts/update", json={})
    assert (error.code, error.status, error.message) == ("loops.api_error", 200, "Nope.")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"message": "m", "error": {"path": "x", "message": "nested"}}, "nested."),
        ({"message": "m", "error": "flat"}, "flat."),
        ({"success": False, "message": "Contact not found."}, "Contact not found."),
    ],
)
def test_client_error_message_taken_like_the_sdk(body: dict[str, Any], expected: str) -> None:
    handler, _ = replies(httpx.Response(404, json=body))
    with make_client(handler) as client:
        error = fail(client)
    assert isinstance(error, NotFoundError)
    assert (error.code, error.message, error.body) == ("loops.not_found", expected, body)


@pytest.mark.parametrize(
    ("status", "code", "kind", "retryable"),
    [
        (400, "loops.bad_request", APIError, False),
        (401, "loops.unauthorized", AuthenticationError, False),
        (404, "loops.not_found", NotFoundError, False),
        (405, "loops.http_405", APIError, False),
        (409, "loops.conflict", APIError, False),
        (418, "loops.http_418", APIError, False),
        (429, "loops.rate_limited", RateLimitError, True),
        (500, "loops.server_error", APIError, True),
        (503, "loops.server_error", APIError, True),
    ],
)
def test_map_error_status_codes(
    status: int, code: str, kind: type[IntegrationError], retryable: bool
) -> None:
    response = httpx.Response(status, json={"success": False, "message": "why"})
    error = map_error(response)
    assert type(error) is kind
    assert (error.code, error.status, error.retryable) == (code, status, retryable)


def test_client_html_5xx_message_without_markup() -> None:
    handler, _ = replies(httpx.Response(502, text="<html><body>Bad gateway</body></html>"))
    with make_client(handler, max_retries=0) as client:
        error = fail(client)
    assert error.message.startswith("Loops answered HTTP 502 Bad Gateway")
    assert "<html>" not in error.message


def test_client_401_message_says_what_to_check() -> None:
    handler, _ = replies(httpx.Response(401, json={"error": "Invalid API key"}))
    with make_client(handler) as client:
        error = fail(client)
    assert error.message == "Invalid API key. Check the API key configured for this account."


def test_client_key_never_in_messages_reprs_or_bodies() -> None:
    echo = {"success": False, "message": f"bad key {KEY}", "error": {"message": f"key={KEY}"}}
    handler, seen = replies(httpx.Response(401, json=echo))
    with make_client(handler) as client:
        error = fail(client)
        assert KEY not in repr(client)
        assert seen[0].headers["Authorization"] == f"Bearer {KEY}"
    assert KEY not in error.message
    assert KEY not in str(error)
    assert KEY not in json.dumps(error.body)
    assert KEY not in json.dumps(error.to_result())
    assert "[REDACTED]" in error.message


def test_client_key_not_in_transport_errors() -> None:
    handler, _ = replies(httpx.ConnectError(f"refused for {KEY}"))
    with make_client(handler, max_retries=0) as client:
        error = fail(client)
    assert KEY not in error.message


# --- requests -------------------------------------------------------------------------------


def test_client_sends_json_params_and_headers() -> None:
    handler, seen = replies(httpx.Response(200, json=[]))
    with make_client(handler) as client:
        client.request("GET", "/contacts/find", params={"email": "a+b@example.com"})
        client.request("POST", "/events/send", json={"eventName": "e"}, idempotency_key="k")
    find, send = seen
    assert str(find.url) == "http://loops.test/api/v1/contacts/find?email=a%2Bb%40example.com"
    assert "Idempotency-Key" not in find.headers
    assert json.loads(send.content) == {"eventName": "e"}
    assert send.headers["Idempotency-Key"] == "k"
    assert send.headers["Content-Type"] == "application/json"


def test_client_idempotency_key_too_long_refused() -> None:
    handler, seen = replies(httpx.Response(200, json={}))
    with make_client(handler) as client, pytest.raises(ValueError, match="at most 100"):
        client.request("POST", "/events/send", json={}, idempotency_key="k" * 101)
    assert seen == []


def test_client_closed_refuses_requests() -> None:
    handler, _ = replies(httpx.Response(200, json={}))
    client = make_client(handler)
    client.close()
    client.close()
    assert client.state is ClientState.CLOSED
    with pytest.raises(RuntimeError, match="has been closed"):
        client.request("GET", "/api-key")


@pytest.mark.parametrize(
    "options",
    [{"api_key": ""}, {"timeout": 0}, {"rate_limit": -1}, {"max_retries": -1}],
)
def test_client_bad_options_refused(options: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"api_key": KEY, **options}
    with pytest.raises(ValueError):
        LoopsClient(**settings)


def test_client_defaults() -> None:
    with LoopsClient(api_key=KEY) as client:
        assert client.base_url == DEFAULT_BASE_URL
        assert client.rate_limit == 10.0
        assert client.timeout == 10.0
    with LoopsClient(api_key=KEY, rate_limit=0) as client:
        assert client.rate_limit is None


def test_preview_request_without_authorization() -> None:
    with LoopsClient(api_key=KEY, base_url="http://x/api/v1/") as client:
        plan = client.preview("post", "/events/send", json={"a": 1}, idempotency_key="k")
    assert plan == {
        "method": "POST",
        "url": "http://x/api/v1/events/send",
        "params": None,
        "json": {"a": 1},
        "headers": {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Idempotency-Key": "k",
        },
    }
    assert preview_request("", "GET", "/lists")["url"] == "/lists"


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    yield waits


def test_client_backoff_grows_and_is_capped(no_sleep: list[float]) -> None:
    handler, _ = replies(httpx.Response(500))
    with make_client(handler, max_retries=6, backoff_base=0.25, backoff_cap=2.0) as client:
        fail(client)
    ceilings = [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert len(no_sleep) == len(ceilings)
    for wait, ceiling in zip(no_sleep, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling


# --- against the emulator, over HTTP --------------------------------------------------------


@pytest.fixture
def emulated(emulator: EmulatorServer) -> Iterator[LoopsClient]:
    with LoopsClient(
        api_key=DEMO_KEYS["default"], base_url=emulator.base_url, backoff_base=0.05
    ) as client:
        yield client


def settle(emulator: EmulatorServer, count: int) -> None:
    """Wait until ``count`` requests are logged, so slow ones do not spill into other tests."""
    give_up = time.monotonic() + 5
    while len(emulator.requests()) < count and time.monotonic() < give_up:
        time.sleep(0.05)


def test_emulator_api_key_names_the_team(emulated: LoopsClient) -> None:
    assert emulated.request("GET", "/api-key") == {"success": True, "teamName": "default"}


def test_emulator_each_key_its_own_team(emulator: EmulatorServer) -> None:
    for team, key in DEMO_KEYS.items():
        with LoopsClient(api_key=key, base_url=emulator.base_url) as client:
            assert client.request("GET", "/api-key")["teamName"] == team


def test_emulator_bad_key_unauthorized_without_leaking(emulator: EmulatorServer) -> None:
    secret = "wrong_key_0123456789"
    with LoopsClient(api_key=secret, base_url=emulator.base_url) as client:
        error = fail(client)
    assert isinstance(error, AuthenticationError)
    assert (error.code, error.status, error.retryable) == ("loops.unauthorized", 401, False)
    assert error.message.startswith("Invalid API key")
    assert secret not in json.dumps(error.to_result()) + json.dumps(error.body)


def test_emulator_429_fault_retried(emulator: EmulatorServer, emulated: LoopsClient) -> None:
    emulator.add_fault("429", count=2)
    assert emulated.request("GET", "/lists")[0]["name"] == "Newsletter"
    statuses = [entry["status"] for entry in emulator.requests()]
    assert statuses == [429, 429, 200]


def test_emulator_persistent_500_server_error(
    emulator: EmulatorServer, emulated: LoopsClient
) -> None:
    emulator.add_fault("500", count=10)
    began = time.monotonic()
    error = fail(emulated, "GET", "/lists", deadline=began + 2.0)
    assert (error.code, error.status, error.retryable) == ("loops.server_error", 500, True)
    assert "Retry the request" in error.message
    assert time.monotonic() - began < 2.0
    assert 2 <= len(emulator.requests()) <= 4


def test_emulator_cut_after_event_delivered_once(
    emulator: EmulatorServer, emulated: LoopsClient
) -> None:
    """The event is recorded, the answer is lost; the retry's 409 means it was delivered."""
    emulator.add_fault("cut_after", path="/events/send")
    body = {"eventName": "signup", "email": "ada@example.com"}
    result = emulated.request("POST", "/events/send", json=body, idempotency_key="evt-0001")
    assert result == {"success": True, "deduplicated": True}
    events = emulator.team("default").snapshot("events")
    assert [(e["eventName"], e["idempotencyKey"]) for e in events] == [("signup", "evt-0001")]
    log = emulator.requests()
    assert [entry["status"] for entry in log][-1] == 409
    assert {entry["headers"].get("idempotency-key") for entry in log} == {"evt-0001"}


def test_emulator_cut_after_keyless_create_not_retried(
    emulator: EmulatorServer, emulated: LoopsClient
) -> None:
    """The contact is created, the answer is lost: no second create, delivery unknown."""
    emulator.add_fault("cut_after", count=10, path="/api/v1/contacts/create")
    error = fail(emulated, "POST", "/contacts/create", json={"email": "cut@example.com"})
    assert (error.code, error.delivered) == ("loops.connection_error", "unknown")
    emails = [c["email"] for c in emulator.team("default").snapshot("contacts")]
    assert emails.count("cut@example.com") == 1
    creates = [e for e in emulator.requests() if e["path"].endswith("/contacts/create")]
    assert len(creates) == 1


def test_emulator_cut_before_handling_retried_once(
    emulator: EmulatorServer, emulated: LoopsClient
) -> None:
    emulator.add_fault("cut", path="/events/send")
    body = {"eventName": "signup", "email": "ada@example.com"}
    result = emulated.request("POST", "/events/send", json=body, idempotency_key="evt-0002")
    assert result == {"success": True}
    assert len(emulator.team("default").snapshot("events")) == 1


def test_emulator_slow_answer_times_out(emulator: EmulatorServer) -> None:
    emulator.add_fault("slow", delay=1.0, count=5)
    with LoopsClient(
        api_key=DEMO_KEYS["default"], base_url=emulator.base_url, timeout=0.2, max_retries=1
    ) as client:
        error = fail(client)
    assert (error.code, error.retryable) == ("loops.timeout", True)
    settle(emulator, 2)


def test_emulator_deadline_bounds_slow_answer(emulator: EmulatorServer) -> None:
    """The attempt's timeout is cut to what is left before the run's deadline."""
    emulator.add_fault("slow", delay=2.0)
    with LoopsClient(api_key=DEMO_KEYS["default"], base_url=emulator.base_url) as client:
        began = time.monotonic()
        error = fail(client, deadline=began + 0.5)
        assert time.monotonic() - began < 1.0
    assert error.code == "loops.timeout"
    settle(emulator, 1)


def test_emulator_client_limit_avoids_429(emulator: EmulatorServer) -> None:
    """25 calls from 5 threads at the client's 10/s never trip the emulator's 10/s."""
    with LoopsClient(api_key=DEMO_KEYS["marketing"], base_url=emulator.base_url) as client:

        def worker() -> None:
            for _ in range(5):
                client.request("GET", "/api-key")

        threads = [threading.Thread(target=worker) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    statuses = [e["status"] for e in emulator.requests() if e["team"] == "marketing"]
    assert statuses == [200] * 25


def test_emulator_not_found_and_bad_request(emulated: LoopsClient) -> None:
    missing = fail(emulated, "POST", "/contacts/delete", json={"email": "nobody@example.com"})
    assert (missing.code, missing.status) == ("loops.not_found", 404)
    assert missing.message.endswith(".")
    both = fail(emulated, "GET", "/contacts/find", params={"email": "a@b.co", "userId": "u"})
    assert (both.code, both.status) == ("loops.bad_request", 400)


def test_emulator_conflict_on_duplicate_contact(emulated: LoopsClient) -> None:
    error = fail(emulated, "POST", "/contacts/create", json={"email": "ada@example.com"})
    assert (error.code, error.status, error.retryable) == ("loops.conflict", 409, False)


def test_emulator_query_encoding(emulated: LoopsClient) -> None:
    created = emulated.request("POST", "/contacts/create", json={"email": "a+b@example.com"})
    found = emulated.request("GET", "/contacts/find", params={"email": "a+b@example.com"})
    assert [contact["id"] for contact in found] == [created["id"]]


# --- the fleet's shared limit --------------------------------------------------------------


def test_client_redis_limit_unreachable_fails_retryable_without_sending() -> None:
    """Redis being down is a clear, retryable failure; the request is never sent unlimited."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler, seen = replies(httpx.Response(200, json={"success": True}))
    with make_client(
        handler, rate_limit=10, redis_url=f"redis://127.0.0.1:{port}/0", max_retries=0
    ) as client:
        with pytest.raises(TransportError) as info:
            client.request("GET", "/api-key")
    assert (info.value.code, info.value.retryable) == ("loops.rate_limit_unavailable", True)
    assert "could not be reached" in info.value.message
    assert seen == []


def test_emulator_redis_limit_shared_by_clients(emulator: EmulatorServer, redis_url: str) -> None:
    """Two clients of one team, as two processes would be, share one budget kept in Redis."""
    clients = [
        LoopsClient(api_key=DEMO_KEYS["marketing"], base_url=emulator.base_url, redis_url=redis_url)
        for _ in range(2)
    ]
    assert clients[0]._limiter is not clients[1]._limiter

    def worker(client: LoopsClient) -> None:
        for _ in range(8):
            client.request("GET", "/api-key")

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    statuses = [e["status"] for e in emulator.requests() if e["team"] == "marketing"]
    assert statuses == [200] * 32


def test_client_redis_limit_slot_after_deadline_fails_without_waiting(redis_url: str) -> None:
    """The wait for a shared slot respects the run's deadline: past it, the call fails at once
    with loops.rate_limited and sends nothing."""
    handler, seen = replies(httpx.Response(200, json={"success": True}))
    with make_client(handler, rate_limit=1, redis_url=redis_url) as client:
        client.request("GET", "/api-key")
        began = time.monotonic()
        with pytest.raises(RateLimitError) as info:
            client.request("GET", "/api-key", deadline=began + 0.3)
        assert time.monotonic() - began < 0.25
    assert (info.value.code, info.value.retryable) == ("loops.rate_limited", True)
    assert len(seen) == 1


def test_a_cookie_loops_sets_is_never_sent_back() -> None:
    """The client keeps no cookies: one call's Set-Cookie must not ride along on the next
    (the emulator sets none, hence the mock transport)."""
    handler, seen = replies(
        httpx.Response(
            200,
            json={"success": True, "teamName": "t"},
            headers={"set-cookie": "session=abc; Path=/"},
        )
    )
    client = make_client(handler)
    try:
        client.request("GET", "/api-key")
        client.request("GET", "/api-key")
        assert len(seen) == 2 and "cookie" not in seen[1].headers
        assert not client._http.cookies
    finally:
        client.close()


def test_a_request_carries_the_clients_headers_and_httpxs_json_body() -> None:
    """The client builds its requests itself: the same headers, URL, query and body bytes as
    httpx's own json= would give, on the first attempt and on a retry alike."""
    handler, seen = replies(
        httpx.Response(429, headers={"retry-after": "0"}),
        httpx.Response(200, json={"success": True}),
    )
    client = make_client(handler)
    body = {"email": "zoë@example.com", "n": 1.5, "tags": ["a", None]}
    try:
        client.request(
            "post", "/events/send", json=body, params={"x": "1 2"}, idempotency_key="k-1"
        )
        expected = httpx.Request("POST", "http://loops.test/api/v1/events/send", json=body)
        # Byte for byte what httpx's own request building sends, names and order included.
        built = client._http.build_request(
            "POST",
            "/events/send",
            json=body,
            params={"x": "1 2"},
            headers={"Idempotency-Key": "k-1"},
        )
        assert len(seen) == 2
        for request in seen:
            assert request.headers.raw == built.headers.raw
            assert request.method == "POST"
            assert str(request.url) == "http://loops.test/api/v1/events/send?x=1+2"
            assert request.content == expected.content
            assert request.headers["content-type"] == "application/json"
            assert request.headers["content-length"] == str(len(expected.content))
            assert request.headers["idempotency-key"] == "k-1"
            assert request.headers["authorization"] == f"Bearer {KEY}"
            assert request.headers["accept"] == "application/json"
            assert request.headers["user-agent"].startswith("luabridge")
            assert request.extensions["timeout"]["read"] == pytest.approx(client.timeout, abs=1)
        client.request("GET", "/api-key")
        assert seen[-1].headers.raw == client._http.build_request("GET", "/api-key").headers.raw
        assert "content-type" not in seen[-1].headers and seen[-1].content == b""
        assert "idempotency-key" not in seen[-1].headers
    finally:
        client.close()


def test_a_body_json_cannot_hold_fails_before_it_takes_a_rate_slot() -> None:
    """NaN is refused while the request is built, with nothing sent and the client's one slot
    per second still free for the next call."""
    handler, seen = replies(httpx.Response(200, json={"success": True}))
    client = make_client(handler, rate_limit=1)
    try:
        with pytest.raises(ValueError, match="JSON"):
            client.request("POST", "/events/send", json={"n": float("nan")})
        assert seen == []
        client.request("POST", "/events/send", json={"n": 1}, deadline=time.monotonic() + 0.3)
        assert len(seen) == 1
    finally:
        client.close()


def test_a_client_keeps_a_bounded_number_of_parsed_urls() -> None:
    handler, seen = replies(httpx.Response(200, json={"success": True}))
    client = make_client(handler)
    try:
        for i in range(80):
            client.request("GET", f"/things/{i}")
        client.request("GET", "/things/79")
        assert [r.url.path for r in seen] == [f"/api/v1/things/{i}" for i in [*range(80), 79]]
        assert len(client._urls) == 64
    finally:
        client.close()
