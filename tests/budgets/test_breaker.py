"""The cost circuit breaker on a real Redis: reserve, settle, release; opens, holds and closes
with a controllable clock; and inside real workers, where open breakers stop calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from pipeline.budgets.breaker import Budgets
from pipeline.core.wiring import connect_redis
from pipeline.costs.prices import PriceTable
from pipeline.errors import BreakerOpen, BudgetBusy
from pipeline.keys import Keys
from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker

HOUR = 3600
DAY = 86400
T0 = 20_000 * DAY + 5 * HOUR + 60  # one minute into 05:00 UTC of some day
USD = 1_000_000_000  # nano-dollars


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def open_budgets(redis_url: str, limits: dict[str, Any]) -> Budgets:
    settings = make_settings(redis_url, breaker_limits=limits, breaker_recheck_s=30)
    redis = connect_redis(redis_url)
    keys = Keys(settings.key_prefix)
    return Budgets(redis, settings, keys, PriceTable(), clock=Clock(T0))


@pytest.fixture
async def budgets(redis_url: str) -> AsyncIterator[Budgets]:
    b = await open_budgets(redis_url, {"global": {"hourly_usd": "1"}})
    yield b
    await b.redis.aclose()


@pytest.fixture
async def tenant_budgets(redis_url: str) -> AsyncIterator[Budgets]:
    b = await open_budgets(
        redis_url, {"tenant": {"daily_usd": "1"}, "tenant:big": {"daily_usd": "5"}}
    )
    yield b
    await b.redis.aclose()


def clock_of(b: Budgets) -> Clock:
    assert isinstance(b.clock, Clock)
    return b.clock


async def test_breaker_opens_holds_and_closes_at_the_next_window(budgets: Budgets) -> None:
    clock = clock_of(budgets)
    await budgets.reserve("a", "acme", 600 * USD // 1000)
    await budgets.settle("a", "acme", 600 * USD // 1000)
    with pytest.raises(BreakerOpen) as opened:
        await budgets.reserve("b", "acme", 500 * USD // 1000)  # 0.6 + 0.5 > 1.0
    assert opened.value.scope == "global"
    assert opened.value.until == (T0 // HOUR + 1) * HOUR
    assert opened.value.retry_after_s == 30  # recheck, not the whole hour
    [state] = await budgets.open_breakers()
    assert (state.scope, state.window, state.limit_usd) == ("global", "hourly", Decimal(1))

    assert not isinstance(opened.value, BudgetBusy)

    # open means open: even a call that would fit waits, until the window ends
    clock.now += 30 * 60
    with pytest.raises(BreakerOpen) as held:
        await budgets.reserve("c", "acme", 1)
    assert held.value.scope == "global" and not isinstance(held.value, BudgetBusy)
    assert (await budgets.window_spend("global"))["hourly"] == Decimal("0.6")

    clock.now = (T0 // HOUR + 1) * HOUR  # the next hour: closed, fresh window
    await budgets.reserve("c", "acme", 900 * USD // 1000)
    assert await budgets.open_breakers() == []
    assert (await budgets.window_spend("global"))["hourly"] == Decimal("0.9")


async def test_operator_close_resumes_calls_that_fit(budgets: Budgets) -> None:
    await budgets.reserve("a", "acme", 700 * USD // 1000)
    await budgets.settle("a", "acme", 700 * USD // 1000)
    with pytest.raises(BreakerOpen):
        await budgets.reserve("b", "acme", 400 * USD // 1000)
    assert await budgets.close_breaker("global") is True
    assert await budgets.close_breaker("global") is False
    await budgets.reserve("small", "acme", 200 * USD // 1000)  # fits under 1.0 again
    with pytest.raises(BreakerOpen):  # still does not fit: opens again
        await budgets.reserve("b", "acme", 400 * USD // 1000)
    # raising the limit and closing lets it through
    await budgets.set_limit("global", "hourly", Decimal(2))
    await budgets.close_breaker("global")
    await budgets.reserve("b", "acme", 400 * USD // 1000)
    assert (await budgets.window_spend("global"))["hourly"] == Decimal("1.3")


async def test_settle_release_and_reruns_never_charge_twice(budgets: Budgets) -> None:
    await budgets.reserve("x", "acme", 300 * USD // 1000)
    await budgets.reserve("x", "acme", 300 * USD // 1000)  # the same batch again
    assert (await budgets.window_spend("global"))["hourly"] == Decimal("0.3")
    assert await budgets.settle("x", "acme", 120 * USD // 1000) == 120 * USD // 1000
    assert await budgets.settle("x", "acme", 120 * USD // 1000) is None
    await budgets.reserve("x", "acme", 300 * USD // 1000)  # a re-run after its call: no charge
    spent = await budgets.window_spend("tenant:acme")
    assert set(spent.values()) == {Decimal("0.12")}

    await budgets.reserve("y", "acme", 200 * USD // 1000)
    await budgets.release("y")  # the call failed
    assert (await budgets.window_spend("global"))["hourly"] == Decimal("0.12")
    await budgets.reserve("y", "acme", 200 * USD // 1000)  # its retry reserves afresh
    assert (await budgets.window_spend("global"))["hourly"] == Decimal("0.32")
    pace = await budgets.monthly.pace(T0)
    assert pace.spent_usd == Decimal("0.12")  # only settled spend counts for the month
    assert pace.tenants_usd == {"acme": Decimal("0.12")}


async def test_tenant_daily_limits_hold_per_tenant_until_the_next_day(
    tenant_budgets: Budgets,
) -> None:
    budgets = tenant_budgets
    clock = clock_of(budgets)
    await budgets.reserve("a1", "a", 800 * USD // 1000)
    await budgets.settle("a1", "a", 800 * USD // 1000)
    await budgets.reserve("b1", "b", 800 * USD // 1000)
    await budgets.reserve("big1", "big", 3 * USD)  # its own, higher limit
    with pytest.raises(BreakerOpen) as opened:
        await budgets.reserve("a2", "a", 300 * USD // 1000)
    assert opened.value.scope == "tenant:a"
    assert opened.value.until == (T0 // DAY + 1) * DAY
    await budgets.reserve("b2", "b", 100 * USD // 1000)  # another tenant is not affected
    clock.now += 2 * HOUR  # a new hour does not close a daily breaker
    with pytest.raises(BreakerOpen):
        await budgets.reserve("a3", "a", 1)
    clock.now = (T0 // DAY + 1) * DAY + 1
    await budgets.reserve("a3", "a", 900 * USD // 1000)
    assert [b.scope for b in await budgets.open_breakers()] == []


async def test_limit_resolution_override_setting_then_tenant_default(
    tenant_budgets: Budgets,
) -> None:
    b = tenant_budgets
    assert await b.limits("tenant:zed") == {"hourly": None, "daily": USD}
    assert await b.limits("tenant:big") == {"hourly": None, "daily": 5 * USD}
    assert await b.limits("global") == {"hourly": None, "daily": None}
    await b.set_limit("tenant", "daily", Decimal(2))  # every tenant's default, at run time
    await b.set_limit("tenant:big", "daily", None)  # an explicit "no limit" for one tenant
    assert await b.limits("tenant:zed") == {"hourly": None, "daily": 2 * USD}
    assert await b.limits("tenant:big") == {"hourly": None, "daily": None}
    await b.reserve("z1", "zed", 2 * USD)
    await b.settle("z1", "zed", 2 * USD)
    with pytest.raises(BreakerOpen):
        await b.reserve("z2", "zed", 1)
    await b.reserve("big", "big", 100 * USD)  # unlimited now
    assert await b.scopes() == ["global", "tenant:big", "tenant:zed"]


async def test_calls_in_flight_make_others_wait_without_opening_the_breaker(
    budgets: Budgets,
) -> None:
    await budgets.reserve("x", "acme", 600 * USD // 1000)  # worst case of a call in flight
    with pytest.raises(BudgetBusy) as busy:
        await budgets.reserve("y", "acme", 500 * USD // 1000)
    assert busy.value.retry_after_s is not None and busy.value.retry_after_s <= 1.0
    assert await budgets.open_breakers() == []
    await budgets.settle("x", "acme", 100 * USD // 1000)  # it cost less than its worst case
    await budgets.reserve("y", "acme", 500 * USD // 1000)
    spent = await budgets.window_spend("global")
    assert (spent["hourly"], spent["hourly_settled"]) == (Decimal("0.6"), Decimal("0.1"))


async def test_racing_reservations_never_pass_the_limit(budgets: Budgets) -> None:
    async def one(i: int) -> bool:
        try:
            await budgets.reserve(f"r{i}", "acme", 70 * USD // 1000)
        except BudgetBusy:
            return False
        return True

    granted = await asyncio.gather(*(one(i) for i in range(40)))
    assert sum(granted) == 14  # 14 x 0.07 = 0.98 <= 1.0 < 15 x 0.07
    assert (await budgets.window_spend("global"))["hourly"] == Decimal("0.98")


# -- inside real workers ------------------------------------------------------------------

PRICES = {"gpt-*": {"input": "1", "output": "2"}}


async def spend_earlier(budgets: Budgets, usd: Decimal) -> None:
    """Settled spend from calls made before the test's tasks arrive."""
    await budgets.reserve("earlier", "default", int(usd * USD))
    await budgets.settle("earlier", "default", int(usd * USD))


def jobs(n: int) -> list[dict[str, Any]]:
    return [{"id": f"t{i}", "prompt": f"question {i}", "max_tokens": 50} for i in range(n)]


async def test_open_breaker_rejects_by_policy_and_makes_no_call(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(
        redis_url,
        fake,
        prices=PRICES,
        breaker_policy="reject",
        breaker_limits={"global": {"hourly_usd": "0.01"}},
    )
    async with pipeline_client(settings) as client, running_worker(settings):
        await spend_earlier(client.pipeline.budgets, Decimal("0.0099"))
        run_id = await client.submit(jobs(3), complete=True)
        await client.wait(run_id, timeout_s=15)
        first = [r async for r in client.results(run_id)]
        # while open, new work is refused at admission, before it is queued
        later = await client.submit(jobs(1), complete=True)
        await client.wait(later, timeout_s=5)
        second = [r async for r in client.results(later)]
    assert fake.stats()["requests"] == 0
    for result in first + second:
        assert result.status == "rejected"
        assert result.error is not None and result.error.code == "budget_exceeded"
        assert "global" in result.error.message and "hourly" in result.error.message
    assert second[0].batch_id is None


async def test_waiting_tasks_survive_an_open_breaker_and_run_when_closed(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(
        redis_url,
        fake,
        prices=PRICES,
        breaker_policy="wait",
        breaker_recheck_s=0.05,
        job_max_tries=2,  # runs out of tries quickly: items move to continuation batches
        breaker_limits={"global": {"hourly_usd": "0.01"}},
    )
    async with pipeline_client(settings) as client, running_worker(settings):
        await spend_earlier(client.pipeline.budgets, Decimal("0.0099"))
        run_id = await client.submit(jobs(4), complete=True)
        budgets = client.pipeline.budgets
        for _ in range(200):
            if await budgets.open_breakers():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        done, total, _ = await client.pipeline.runs.progress(run_id)
        assert (done, total) == (0, 4)
        assert fake.stats()["requests"] == 0
        await budgets.set_limit("global", "hourly", None)
        assert await budgets.close_breaker("global")
        await client.wait(run_id, timeout_s=15)
        results = [r async for r in client.results(run_id)]
    assert [r.status for r in results] == ["ok"] * 4
    assert [r.output for r in results] == [expected_output(f"question {i}") for i in range(4)]
    assert all(r.batch_id and ".w" in r.batch_id for r in results)
    assert fake.stats()["requests"] == 1


async def test_a_batch_too_costly_for_the_limit_splits_and_a_lone_one_is_rejected(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(
        redis_url,
        fake,
        prices=PRICES,
        breaker_limits={"global": {"hourly_usd": "0.0003"}},  # one small task fits, four do not
    )
    lines = [*jobs(4), {"id": "big", "prompt": "write a lot", "max_tokens": 400}]
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(lines, complete=True)
        await client.wait(run_id, timeout_s=15)
        results = {r.id: r async for r in client.results(run_id)}
        assert await client.pipeline.budgets.open_breakers() == []  # it never opened
    for i in range(4):
        small = results[f"t{i}"]
        assert small.status == "ok" and small.output == expected_output(f"question {i}")
        assert small.batch_id is not None and ".b" in small.batch_id
    big = results["big"]
    assert big.status == "rejected" and big.error is not None
    assert big.error.code == "budget_exceeded"
    assert (
        "worst case of $0.0008" in big.error.message
        and "hourly limit of $0.0003" in big.error.message
    )


async def test_a_failed_call_gives_its_reservation_back(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(
        redis_url,
        fake,
        prices=PRICES,
        job_max_tries=1,
        provider_retries=0,
        breaker_limits={"global": {"hourly_usd": "1"}},
    )
    fake.add_faults({"kind": "500", "times": 1})
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(jobs(1), complete=True)
        await client.wait(run_id, timeout_s=15)
        [result] = [r async for r in client.results(run_id)]
        spent = await client.pipeline.budgets.window_spend("global")
        pace = await client.pipeline.budgets.monthly.pace()
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "provider_unavailable"
    assert set(spent.values()) == {Decimal(0)}  # reserved, then released: nothing held
    assert pace.spent_usd == 0
