"""VendorClient retry loop, classification and auth over aioresponses (narrow cases)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aioresponses.core import normalize_url
from yarl import URL

from service.errors import (
    AuthError,
    ConfigError,
    ParseError,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
)
from service.http import BearerLogin, HttpClient, RetryPolicy, Token, VendorClient
from tests.unit.http.conftest import BASE, FakeTime, RegisterVendor

URL_ITEMS = f"{BASE}/items"


def calls(m: Any, method: str, url: str) -> list[Any]:
    return m.requests.get((method, normalize_url(URL(url))), [])


async def test_retry_on_503_then_success(mocked: Any, register: RegisterVendor) -> None:
    vc = register()
    mocked.get(URL_ITEMS, status=503, body="busy")
    mocked.get(URL_ITEMS, status=200, payload={"items": [1, 2]})
    resp = await vc.request("GET", "items")
    assert resp.status == 200
    assert resp.json() == {"items": [1, 2]}
    assert len(calls(mocked, "GET", URL_ITEMS)) == 2
    snap = vc.stats.snapshot()
    assert snap["retries"] == 1
    assert snap["by_status"] == {200: 1, 503: 1}
    assert vc.limiter.pauses == 1  # overload: the vendor paused, not just this task
    assert vc.limiter.slots_granted == 2


async def test_500_retried_with_task_backoff_not_a_vendor_pause(
    mocked: Any, register: RegisterVendor, fake: FakeTime
) -> None:
    vc = register()
    mocked.get(URL_ITEMS, status=500)
    mocked.get(URL_ITEMS, status=200, body="ok")
    assert (await vc.request("GET", "items")).text() == "ok"
    assert vc.limiter.pauses == 0
    assert len(fake.slept) == 1
    assert 0.25 <= fake.slept[0] <= 0.5


async def test_retry_after_is_honoured(
    mocked: Any, register: RegisterVendor, fake: FakeTime
) -> None:
    vc = register()
    mocked.get(URL_ITEMS, status=429, headers={"Retry-After": "7"})
    mocked.get(URL_ITEMS, status=200, body="{}")
    await vc.request("GET", "items")
    assert fake.slept == [pytest.approx(7)]  # waited in the limiter's pause
    assert vc.stats.snapshot()["rate_limited"] == 1


async def test_retry_after_http_date_on_503(
    mocked: Any, register: RegisterVendor, fake: FakeTime
) -> None:
    vc = register()
    mocked.get(URL_ITEMS, status=503, headers={"Retry-After": "Wed, 01 May 2024 12:00:03 GMT"})
    mocked.get(URL_ITEMS, status=200)
    await vc.request("GET", "items")
    assert fake.slept == [pytest.approx(3)]


async def test_429_pauses_the_whole_vendor(
    mocked: Any, register: RegisterVendor, fake: FakeTime
) -> None:
    vc = register(retry=RetryPolicy(max_attempts=1))
    mocked.get(URL_ITEMS, status=429, headers={"Retry-After": "30"})
    mocked.get(f"{BASE}/other", status=200)
    with pytest.raises(RateLimited) as info:
        await vc.request("GET", "items")
    assert info.value.retry_after_s == 30
    assert vc.limiter.paused_for_s() == pytest.approx(30)
    start = fake.now
    await vc.request("GET", "other")  # another task, another path: it waits too
    assert fake.now - start == pytest.approx(30)


async def test_404_raises_request_rejected_with_excerpt(
    mocked: Any, register: RegisterVendor
) -> None:
    vc = register()
    url = f"{URL_ITEMS}/42?api_key=SECRET"
    mocked.get(
        url, status=404, body='{"message": "item 42 not found", "trace": "' + "x" * 900 + '"}'
    )
    with pytest.raises(RequestRejected) as info:
        await vc.request("GET", "items/42", params={"api_key": "SECRET"})
    err = info.value
    assert err.status == 404
    assert err.vendor == "acme"
    assert "item 42 not found" in err.body
    assert len(err.body) <= 200
    assert err.url is not None
    assert "SECRET" not in err.url
    assert "SECRET" not in str(err)
    assert len(calls(mocked, "GET", url)) == 1  # never retried


async def test_expected_error_status_is_returned(mocked: Any, register: RegisterVendor) -> None:
    vc = register()
    mocked.get(URL_ITEMS, status=404, body="gone")
    resp = await vc.request("GET", "items", expected=(200, 404))
    assert resp.status == 404
    assert resp.body == b"gone"


async def test_unexpected_success_status_is_a_parse_error(
    mocked: Any, register: RegisterVendor
) -> None:
    vc = register()
    mocked.post(URL_ITEMS, status=202)
    with pytest.raises(ParseError, match="unexpected HTTP 202"):
        await vc.request("POST", "items", json={"a": 1}, expected=(200,))


async def test_malformed_json_raises_parse_error_with_excerpt(
    mocked: Any, register: RegisterVendor
) -> None:
    vc = register()
    mocked.get(URL_ITEMS, status=200, body='{"items": [1, 2')
    resp = await vc.request("GET", "items")
    with pytest.raises(ParseError, match=r'invalid JSON.*\{"items": \[1, 2'):
        resp.json()


async def test_malformed_json_retried_when_expect_json(
    mocked: Any, register: RegisterVendor
) -> None:
    vc = register()
    mocked.get(URL_ITEMS, status=200, body="<html>proxy error</html>")
    mocked.get(URL_ITEMS, status=200, body='{"ok": true}')
    resp = await vc.request("GET", "items", expect_json=True)
    assert resp.json() == {"ok": True}
    assert vc.stats.retries == 1

    mocked.get(URL_ITEMS, status=200, body="nope", repeat=True)
    with pytest.raises(ParseError):
        await vc.request("GET", "items", expect_json=True)
    assert vc.stats.retries == 1 + 3  # max_attempts=4


async def test_timeout_gives_transport_error_after_bounded_attempts(
    mocked: Any, register: RegisterVendor
) -> None:
    vc = register(retry=RetryPolicy(max_attempts=3, base_s=0.1))
    mocked.get(URL_ITEMS, exception=TimeoutError(), repeat=True)
    with pytest.raises(TransportError, match="timed out") as info:
        await vc.request("GET", "items")
    assert isinstance(info.value.__cause__, TimeoutError)
    assert len(calls(mocked, "GET", URL_ITEMS)) == 3
    assert vc.stats.snapshot()["errors"] == {"TimeoutError": 3}


async def test_connection_error_is_translated_and_retried(
    mocked: Any, register: RegisterVendor
) -> None:
    vc = register()
    mocked.get(URL_ITEMS, exception=aiohttp.ServerDisconnectedError())
    mocked.get(URL_ITEMS, status=200)
    assert (await vc.request("GET", "items")).status == 200


async def test_total_elapsed_time_bounds_retries(
    mocked: Any, register: RegisterVendor, fake: FakeTime
) -> None:
    policy = RetryPolicy(
        max_attempts=100, base_s=1, max_backoff_s=4, max_elapsed_s=10, jitter=False
    )
    vc = register(retry=policy)
    mocked.get(URL_ITEMS, status=502, repeat=True)
    start = fake.now
    with pytest.raises(ServerError) as info:
        await vc.request("GET", "items")
    assert info.value.status == 502
    # sleeps 1, 2, 4 (elapsed 7); the next 4 would end at 11 > 10: give up.
    assert fake.slept == [1, 2, 4]
    assert len(calls(mocked, "GET", URL_ITEMS)) == 4
    assert fake.now - start <= 10


async def test_retry_after_longer_than_budget_gives_up_at_once(
    mocked: Any, register: RegisterVendor, fake: FakeTime
) -> None:
    vc = register(retry=RetryPolicy(max_elapsed_s=60))
    mocked.get(URL_ITEMS, status=429, headers={"Retry-After": "3600"})
    with pytest.raises(RateLimited) as info:
        await vc.request("GET", "items")
    assert info.value.retry_after_s == 3600
    assert fake.slept == []
    assert vc.limiter.paused_for_s() == pytest.approx(60)  # capped: no frozen vendor


def _bearer(logins: list[str]) -> BearerLogin:
    async def login() -> Token:
        logins.append(f"tok-{len(logins) + 1}")
        return Token(logins[-1], None)

    return BearerLogin(login)


async def test_401_refreshes_the_token_once_then_succeeds(
    mocked: Any, register: RegisterVendor
) -> None:
    logins: list[str] = []
    vc = register(auth=_bearer(logins))
    mocked.get(URL_ITEMS, status=401)
    mocked.get(URL_ITEMS, status=200)
    assert (await vc.request("GET", "items")).status == 200
    sent = [c.kwargs["headers"]["Authorization"] for c in calls(mocked, "GET", URL_ITEMS)]
    assert sent == ["Bearer tok-1", "Bearer tok-2"]
    assert vc.stats.retries == 0  # a refresh is not a retry of a failure


async def test_second_401_is_an_auth_error(mocked: Any, register: RegisterVendor) -> None:
    logins: list[str] = []
    vc = register(auth=_bearer(logins))
    mocked.get(URL_ITEMS, status=401, body="bad token", repeat=True)
    with pytest.raises(AuthError) as info:
        await vc.request("GET", "items")
    assert info.value.status == 401
    assert logins == ["tok-1", "tok-2"]
    assert len(calls(mocked, "GET", URL_ITEMS)) == 2


async def test_403_is_an_auth_error_without_refresh(mocked: Any, register: RegisterVendor) -> None:
    logins: list[str] = []
    vc = register(auth=_bearer(logins))
    mocked.get(URL_ITEMS, status=403)
    with pytest.raises(AuthError):
        await vc.request("GET", "items")
    assert logins == ["tok-1"]


async def test_login_calls_go_through_the_limiter_without_deadlock(
    mocked: Any, register: RegisterVendor
) -> None:
    holder: dict[str, VendorClient] = {}

    async def login() -> Token:
        resp = await holder["vc"].request("POST", "login", json={"user": "u"}, auth=False)
        return Token(resp.json()["token"], None)

    vc = register(max_parallel=1, auth=BearerLogin(login))
    holder["vc"] = vc
    mocked.post(f"{BASE}/login", payload={"token": "abc"}, repeat=True)
    mocked.get(URL_ITEMS, status=200, repeat=True)
    await asyncio.wait_for(asyncio.gather(*(vc.request("GET", "items") for _ in range(5))), 5)
    assert len(calls(mocked, "POST", f"{BASE}/login")) == 1
    assert vc.limiter.slots_granted == 6  # 5 requests + 1 login
    login_headers = calls(mocked, "POST", f"{BASE}/login")[0].kwargs["headers"]
    assert "Authorization" not in login_headers


async def test_headers_params_and_url_joining(mocked: Any, register: RegisterVendor) -> None:
    vc = register(default_headers={"Accept": "application/json"}, auth=None)
    url = f"{BASE}/items?page=2&filter=ge:2024-01-01"
    mocked.get(url, status=200)
    mocked.get("https://cdn.acme.test/export.csv", status=200)
    await vc.request(
        "GET", "/items", params={"page": "2", "filter": "ge:2024-01-01"}, headers={"X-Trace": "1"}
    )
    await vc.request("GET", "https://cdn.acme.test/export.csv")
    sent = calls(mocked, "GET", url)[0].kwargs["headers"]
    assert sent["Accept"] == "application/json"
    assert sent["X-Trace"] == "1"
    assert vc.url_for("") == URL(BASE)


async def test_json_body_is_resent_on_retry(mocked: Any, register: RegisterVendor) -> None:
    vc = register()
    mocked.post(URL_ITEMS, status=503)
    mocked.post(URL_ITEMS, status=201, payload={"id": 1})
    resp = await vc.request("POST", "items", json={"name": "x"})
    assert resp.status == 201
    bodies = [c.kwargs["json"] for c in calls(mocked, "POST", URL_ITEMS)]
    assert bodies == [{"name": "x"}, {"name": "x"}]


async def test_stream_reads_chunks_and_retries_before_first_byte(
    mocked: Any, register: RegisterVendor
) -> None:
    vc = register()
    body = b"".join(f"row-{i}\n".encode() for i in range(2000))
    mocked.get(URL_ITEMS, status=503)
    mocked.get(URL_ITEMS, status=200, body=body)
    chunks: list[bytes] = []
    async with vc.stream("GET", "items", chunk_size=1000) as resp:
        assert resp.status == 200
        assert vc.limiter.in_flight == 1  # the slot is held while streaming
        async for chunk in resp.iter_chunks(1000):
            assert len(chunk) <= 1000
            chunks.append(chunk)
    assert vc.limiter.in_flight == 0
    assert b"".join(chunks) == body
    assert vc.stats.retries == 1


async def test_stream_lines_and_error_status(mocked: Any, register: RegisterVendor) -> None:
    vc = register()
    mocked.get(URL_ITEMS, status=200, body=b"a,b\n1,2\n3,4")
    async with vc.stream("GET", "items", chunk_size=5) as resp:
        lines = [line async for line in resp.content]
    assert lines == [b"a,b\n", b"1,2\n", b"3,4"]
    mocked.get(URL_ITEMS, status=410, body="expired link")
    with pytest.raises(RequestRejected, match="expired link"):
        async with vc.stream("GET", "items"):
            pass
    assert vc.limiter.in_flight == 0


async def test_register_validates(client: HttpClient, register: RegisterVendor) -> None:
    register("acme")
    with pytest.raises(ConfigError, match="already registered"):
        register("acme")
    with pytest.raises(ConfigError, match="base_url"):
        register("other", base_url="ftp://x")
    assert client.vendor("acme").vendor == "acme"
    assert set(client.snapshot()["acme"]) >= {"requests", "limiter"}


async def test_pool_sized_to_vendor_parallelism() -> None:
    from service.http import VendorLimiter

    http = HttpClient()
    http.register("a", "https://a.test", limiter=VendorLimiter("a", 10, 10))
    http.register("b", "https://b.test", limiter=VendorLimiter("b", 5, 100))
    async with http:
        assert http.session.connector is not None
        assert http.session.connector.limit == 15
    with pytest.raises(RuntimeError, match="not started"):
        _ = http.session


async def test_borrowed_session_is_not_closed() -> None:
    async with aiohttp.ClientSession() as session:
        async with HttpClient(session=session) as http:
            assert http.session is session
        assert not session.closed


def test_response_repr_hides_query_secrets() -> None:
    from service.http import Response

    resp = Response(200, {}, "https://h/x?token=abc", json.dumps({"a": 1}).encode())
    assert "abc" not in repr(resp)
    assert resp.json() == {"a": 1}


async def test_url_for_keeps_base_path_and_spots_absolute_urls(register: RegisterVendor) -> None:
    vc = register(base_url="https://api.acme.test/v1/")
    assert str(vc.url_for("items")) == "https://api.acme.test/v1/items"
    assert str(vc.url_for("/items?x=1")) == "https://api.acme.test/v1/items?x=1"
    assert str(vc.url_for("items?next=http://a/b")).startswith("https://api.acme.test/v1/items")
    assert str(vc.url_for("http://other.test/x")) == "http://other.test/x"


async def test_prometheus_counts_every_attempt(mocked: Any, fake: FakeTime) -> None:
    from prometheus_client import CollectorRegistry

    from service.http import HttpMetrics, VendorLimiter

    registry = CollectorRegistry()
    async with HttpClient(
        metrics=HttpMetrics(registry), clock=fake.clock, sleep=fake.sleep
    ) as http:
        limiter = VendorLimiter("acme", 2, 1000, clock=fake.clock, sleep=fake.sleep)
        vc = http.register("acme", BASE, limiter=limiter)
        mocked.get(URL_ITEMS, status=502)
        mocked.get(URL_ITEMS, exception=aiohttp.ServerDisconnectedError())
        mocked.get(URL_ITEMS, status=200)
        await vc.request("GET", "items")
    get = registry.get_sample_value
    for status in ("502", "error", "200"):
        assert get("vendorsync_http_requests_total", {"vendor": "acme", "status": status}) == 1
    assert get("vendorsync_http_limiter_wait_seconds_count", {"vendor": "acme"}) == 3
    assert get("vendorsync_http_request_duration_seconds_count", {"vendor": "acme"}) == 3
