"""The shared rate limiter, the shared provider circuit and the fallback chain, on a real Redis
and the fake provider (in process; the multi-process behaviour is in test_multiworker.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.config.records import ProviderConfig
from pipeline.config.settings import Settings
from pipeline.costs.prices import PriceTable
from pipeline.errors import AccountRefused, TransientError
from pipeline.keys import Keys
from pipeline.models import Message
from pipeline.providers import build_providers
from pipeline.providers.base import ChatRequest
from pipeline.providers.chain import CircuitOpen, ProviderChain, ProviderDown
from pipeline.providers.health import ProviderHealth
from pipeline.providers.ratelimit import RateLimiter, header_limits, parse_reset_s
from pipeline.testing import FAKE_KEY, FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def two_providers(fake: FakeProvider, **claude: Any) -> tuple[ProviderConfig, ...]:
    return (
        ProviderConfig(
            name="claude",
            kind="anthropic",
            base_url=fake.anthropic_base_url,
            api_key=FAKE_KEY,
            models=("claude-*",),
            read_timeout_s=2.0,
            **claude,
        ),
        ProviderConfig(
            name="gpt",
            kind="openai",
            base_url=fake.openai_base_url,
            api_key=FAKE_KEY,
            models=("gpt-*",),
            read_timeout_s=2.0,
        ),
    )


def chain_settings(redis_url: str, fake: FakeProvider, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "providers": two_providers(fake),
        "fallbacks": {"claude-3-5-haiku-latest": ("gpt-4o-mini",)},
        "health_failures": 3,
        "health_cooldown_s": 0.5,
        "provider_retries": 2,
    }
    values.update(overrides)
    return make_settings(redis_url, fake, **values)


def ask(text: str, model: str = "claude-3-5-haiku-latest") -> ChatRequest:
    return ChatRequest(
        model=model, system="", messages=(Message(role="user", content=text),), max_tokens=40
    )


@pytest.fixture
async def chains(
    redis_url: str, fake: FakeProvider
) -> AsyncIterator[tuple[Settings, list[ProviderChain]]]:
    """Two chains on separate connections: two workers sharing one Redis."""
    settings = chain_settings(redis_url, fake)
    made: list[tuple[ProviderChain, Redis]] = []
    for _ in range(2):
        redis = Redis.from_url(redis_url)
        made.append((ProviderChain(build_providers(settings), settings, redis=redis), redis))
    yield settings, [c for c, _ in made]
    for chain, redis in made:
        for provider in chain.providers:
            await provider.aclose()
        await redis.aclose()


# ---- the rate limiter ---------------------------------------------------------------------------


def max_in_window(times: list[float], window_s: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window_s) for t in times)


async def test_limiter_shares_requests_per_window_between_workers(redis_url: str) -> None:
    settings = make_settings(redis_url, rate_window_s=0.5, rate_guard_s=0.0)
    config = ProviderConfig(name="p", model_rpm={"m*": 5})
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    limiters = [RateLimiter(c, Keys(settings.key_prefix), settings) for c in clients]
    granted: list[float] = []

    async def one(i: int) -> None:
        await limiters[i % 2].acquire(config, "m1")
        granted.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(15)))
    elapsed = time.monotonic() - started
    for c in clients:
        await c.aclose()
    # measured after each grant returns, so allow the grants' own jitter at the edges
    assert max_in_window(granted, 0.45) <= 5
    assert elapsed >= 1.0  # 15 grants at 5 per 0.5 s need two more windows after the first


async def test_limiter_counts_tokens_and_provider_wide_limits(redis_url: str, redis: Redis) -> None:
    settings = make_settings(redis_url, rate_window_s=10.0, rate_guard_s=0.0, rate_wait_max_s=0.2)
    limiter = RateLimiter(redis, Keys(settings.key_prefix), settings)
    config = ProviderConfig(name="p", tpm=100, rpm=3)
    assert limiter.needs_tokens(config, "any")
    await limiter.acquire(config, "a", tokens=40)
    await limiter.acquire(config, "b", tokens=40)
    with pytest.raises(TransientError, match="no capacity"):  # 120 tokens > 100
        await limiter.acquire(config, "c", tokens=40)
    await limiter.acquire(config, "c", tokens=20)  # fits exactly; a third request
    with pytest.raises(TransientError, match="no capacity"):  # rpm 3 reached, across models
        await limiter.acquire(config, "d", tokens=0)


async def test_block_waits_every_worker_and_is_never_shortened(
    redis_url: str, redis: Redis
) -> None:
    settings = make_settings(redis_url)
    limiter = RateLimiter(redis, Keys(settings.key_prefix), settings)
    config = ProviderConfig(name="p")
    await limiter.block("p", "m", 0.4)
    await limiter.block("p", "m", 0.05)  # a shorter Retry-After must not cut the first one
    waited = await limiter.acquire(config, "m")
    assert waited >= 0.3
    assert await limiter.acquire(config, "other") < 0.05  # other models are not blocked


async def test_headers_teach_limits_and_exhaustion(redis_url: str, redis: Redis) -> None:
    settings = make_settings(redis_url, rate_window_s=60.0)
    limiter = RateLimiter(redis, Keys(settings.key_prefix), settings)
    config = ProviderConfig(name="p")
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "300ms",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-tokens": "2s",
    }
    await limiter.learn("p", "m", headers)
    fresh = RateLimiter(redis, Keys(settings.key_prefix), settings)  # another worker
    limits = {(lim.scope, lim.measure): lim.limit for lim in await fresh.limits(config, "m", 10)}
    assert limits == {("p/m", "req"): 500, ("p/m", "tok"): 30000}
    assert await fresh.acquire(config, "m") >= 0.2  # nothing remained until the reset


def test_reset_and_limit_header_formats() -> None:
    assert parse_reset_s("6m0s") == 360.0
    assert parse_reset_s("1h2m3.5s") == 3723.5
    assert parse_reset_s("20ms") == pytest.approx(0.02)
    assert parse_reset_s("2") == 2.0
    assert parse_reset_s("2030-01-01T00:00:10Z", now_s=1893456000.0) == pytest.approx(10.0)
    assert parse_reset_s("soon") is None
    found = header_limits(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:10Z",
        }
    )
    assert found["req"][:2] == (50, 0) and "tok" not in found


# ---- the provider circuit -----------------------------------------------------------------------


async def test_circuit_opens_after_n_failures_then_lets_one_probe(
    redis_url: str, redis: Redis
) -> None:
    settings = make_settings(redis_url, health_failures=3, health_cooldown_s=0.3)
    workers = [ProviderHealth(redis, Keys(settings.key_prefix), settings) for _ in range(3)]
    for health in workers[:2]:
        assert (await health.gate("p")).allowed
        await health.failed("p", "p HTTP 500: boom")
    assert (await workers[2].gate("p")).allowed  # two failures: still closed
    assert await workers[2].failed("p", "p HTTP 500: boom")  # the third opens it
    skipped = await workers[0].gate("p")
    assert not skipped.allowed and "boom" in skipped.reason and skipped.retry_in_s > 0.1
    await asyncio.sleep(0.35)
    gates = await asyncio.gather(*(h.gate("p") for h in workers))
    assert sum(a.probe for a in gates) == 1  # half-open: exactly one probe
    assert sum(a.allowed for a in gates) == 1
    probe = next(a for a in gates if a.probe)
    await workers[0].succeeded("p", probe)
    assert all([(await h.gate("p")).allowed for h in workers])


async def test_auth_failure_opens_at_once(redis_url: str, redis: Redis) -> None:
    settings = make_settings(redis_url, health_failures=5)
    health = ProviderHealth(redis, Keys(settings.key_prefix), settings)
    await health.failed("p", "p HTTP 401: bad key", account=True)
    await health.failed("p", "p HTTP 500: a straggler")  # must not shorten or relabel it
    gate = await health.gate("p")
    assert not gate.allowed and gate.account and "bad key" in gate.reason
    assert gate.retry_in_s > settings.health_auth_cooldown_s - 5


# ---- the chain ----------------------------------------------------------------------------------


async def test_chain_falls_back_and_stops_calling_a_failing_provider(
    chains: tuple[Settings, list[ProviderChain]], fake: FakeProvider
) -> None:
    _, (one, two) = chains
    fake.add_faults({"kind": "503", "path": "anthropic", "times": 100})
    first = await one.complete(ask("q1"))
    assert (first.provider, first.model, first.text) == (
        "gpt",
        "gpt-4o-mini",
        expected_output("q1"),
    )
    assert fake.stats()["by_path"]["anthropic"] == 3  # provider_retries + 1, then it opened
    second = await two.complete(ask("q2"))  # another worker: skips claude without calling it
    assert second.provider == "gpt"
    assert fake.stats()["by_path"]["anthropic"] == 3


async def test_chain_without_fallback_reports_every_provider_transiently(
    chains: tuple[Settings, list[ProviderChain]], fake: FakeProvider
) -> None:
    _, (one, _) = chains
    fake.add_faults({"kind": "529", "path": "anthropic", "times": 100})
    with pytest.raises(TransientError) as caught:
        await one.complete(ask("q", model="claude-3-opus-latest"))
    with pytest.raises(CircuitOpen) as skipped:
        await one.complete(ask("q", model="claude-3-opus-latest"))
    assert "HTTP 529" in str(caught.value)
    assert skipped.value.retry_after_s is not None and skipped.value.retry_after_s > 0


async def test_chain_auth_failure_marks_down_for_every_worker(
    chains: tuple[Settings, list[ProviderChain]], fake: FakeProvider
) -> None:
    _, (one, two) = chains
    fake.add_faults({"kind": "401", "path": "anthropic", "times": 100, "message": FAKE_KEY})
    answer = await one.complete(ask("q"))
    assert answer.provider == "gpt"
    with pytest.raises(ProviderDown) as caught:
        await two.complete(ask("q", model="claude-3-opus-latest"))
    assert isinstance(caught.value, AccountRefused)
    assert "claude" in str(caught.value) and FAKE_KEY not in str(caught.value)
    assert fake.stats()["unauthorized"] == 1  # one 401, no retries, no second worker trying


async def test_a_429_waits_every_worker_instead_of_collecting_more(
    chains: tuple[Settings, list[ProviderChain]], fake: FakeProvider
) -> None:
    _, (one, two) = chains
    fake.add_faults({"kind": "429", "path": "anthropic", "retry_after": 0.4})
    started = time.monotonic()
    first, second = await asyncio.gather(one.complete(ask("a")), two.complete(ask("b")))
    assert (first.provider, second.provider) == ("claude", "claude")
    assert fake.stats()["by_status"] == {"429": 1, "200": 2}
    assert time.monotonic() - started >= 0.3


async def test_bounded_calls_in_flight_per_worker(redis_url: str, fake: FakeProvider) -> None:
    providers = two_providers(fake, max_in_flight=2)
    settings = chain_settings(redis_url, fake, providers=providers)
    redis = Redis.from_url(redis_url)
    chain = ProviderChain(build_providers(settings), settings, redis=redis)
    fake.add_faults({"kind": "latency", "delay_s": 0.2, "times": 6, "path": "anthropic"})
    started = time.monotonic()
    try:
        await asyncio.gather(*(chain.complete(ask(f"q{i}")) for i in range(6)))
    finally:
        for provider in chain.providers:
            await provider.aclose()
        await redis.aclose()
    assert time.monotonic() - started >= 0.55  # 6 calls of 0.2 s, 2 at a time


async def test_fallback_answer_is_recorded_and_priced_as_the_model_that_answered(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = chain_settings(redis_url, fake)
    fake.add_faults({"kind": "500", "path": "anthropic", "times": 100})
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(
            [{"id": "t1", "model": "claude-3-5-haiku-latest", "prompt": "hello"}], complete=True
        )
        await client.wait(run_id, timeout_s=20)
        results = [r async for r in client.results(run_id)]
        records = [r async for r in client.pipeline.ledger.records()]
    assert [(r.status, r.provider, r.model) for r in results] == [("ok", "gpt", "gpt-4o-mini")]
    (record,) = records
    assert (record.provider, record.model) == ("gpt", "gpt-4o-mini")
    expected = PriceTable(settings.prices).price("gpt-4o-mini", record.usage)
    assert expected is not None and record.cost_usd is not None
    assert abs(record.cost_usd - expected) <= Decimal("1e-9")


async def test_limits_learned_from_headers_keep_workers_under_an_unconfigured_limit(
    redis_url: str, fake: FakeProvider
) -> None:
    fake.set_rate_limit({"gpt-4o-mini": 4}, window_s=1.0)
    settings = chain_settings(redis_url, fake, rate_window_s=1.0, rate_guard_s=0.1)
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    chains = [ProviderChain(build_providers(settings), settings, redis=r) for r in clients]
    try:
        await chains[0].complete(ask("first", model="gpt-4o-mini"))  # teaches: 4 per window
        answers = await asyncio.gather(
            *(chains[i % 2].complete(ask(f"q{i}", model="gpt-4o-mini")) for i in range(12))
        )
    finally:
        for chain in chains:
            for provider in chain.providers:
                await provider.aclose()
        for client in clients:
            await client.aclose()
    assert [a.text for a in answers] == [expected_output(f"q{i}") for i in range(12)]
    # the first call was not in the learned log yet, so one window may see one 429
    assert fake.stats()["rate_limited"] <= 1
