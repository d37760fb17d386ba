"""Plan limits at admission, on a real Redis: each limit rejects with a reason that names it and
says by how much; a task whose only problem is its model runs on the best allowed model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipeline.budgets.admission import Admission
from pipeline.budgets.breaker import Budgets
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import connect_redis
from pipeline.costs.prices import PriceTable
from pipeline.errors import ConfigError
from pipeline.keys import Keys
from pipeline.models import Message, Result, Task
from pipeline.providers.chain import ProviderChain
from pipeline.routing.router import Rejection, Router
from pipeline.testing import FakeProvider, make_settings
from pipeline.tokens import count_messages
from workers.testing import pipeline_client

T0 = 20_000 * 86400 + 10 * 3600  # 10:00 UTC


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def plan_client(
    redis_url: str, fake: FakeProvider, request: pytest.FixtureRequest
) -> AsyncIterator[BatchwiseClient]:
    plan: dict[str, Any] = request.param
    settings = make_settings(redis_url, fake, plans={"test": plan}, plan_default="test")
    async with pipeline_client(settings) as client:
        client.pipeline.budgets.set_clock(Clock(T0))
        yield client


def with_plan(**plan: Any) -> Any:
    return pytest.mark.parametrize("plan_client", [plan], indirect=True)


async def submit(client: BatchwiseClient, jobs: list[dict[str, Any]]) -> list[Result | None]:
    run_id = await client.submit(jobs)
    return [await client.result(job["id"], run_id) for job in jobs]


def rejected(result: Result | None, code: str) -> str:
    assert result is not None and result.status == "rejected", result
    assert result.error is not None and result.error.code == code
    return result.error.message


@with_plan(max_input_tokens=20)
async def test_max_input_tokens(plan_client: BatchwiseClient) -> None:
    long_prompt = "word " * 40
    short, long = await submit(
        plan_client, [{"id": "short", "prompt": "hi"}, {"id": "long", "prompt": long_prompt}]
    )
    assert short is None  # admitted: queued, no result yet
    message = rejected(long, "plan_max_input_tokens")
    tokens = count_messages("", [long_prompt])
    assert f"max_input_tokens: {tokens} input tokens, the plan allows 20 ({tokens - 20} over)" in (
        message
    )


@with_plan(max_output_tokens=100)
async def test_max_output_tokens_rejects_an_explicit_ask_and_caps_a_default(
    plan_client: BatchwiseClient,
) -> None:
    [explicit] = await submit(plan_client, [{"id": "e", "prompt": "p", "max_tokens": 300}])
    message = rejected(explicit, "plan_max_output_tokens")
    assert "max_output_tokens: 300 output tokens asked (max_tokens), the plan allows 100" in message
    assert "(200 over)" in message
    # an article defaults to 1000 output tokens: the plan caps it instead of refusing it
    task = plan_client.pipeline.router.shape(
        Task(id="a", messages=(Message(role="user", content="p"),), task_type="article")
    )
    assert isinstance(task, Task) and task.max_tokens == 1000
    admitted, refused = await plan_client.pipeline.admission.admit([task])
    assert refused == [] and admitted[0].max_tokens == 100


@with_plan(allowed_models=["gpt-4o-mini", "gpt-4.1-mini"])
async def test_a_model_outside_the_plan_runs_on_the_best_allowed_model(
    plan_client: BatchwiseClient,
) -> None:
    p = plan_client.pipeline
    asked = [
        Task(id="best", messages=(Message(role="user", content="p"),), task_type="analysis"),
        Task(
            id="named",
            messages=(Message(role="user", content="p"),),
            requested_model="gpt-4.1",
        ),
        Task(id="cheap", messages=(Message(role="user", content="p"),), task_type="faq"),
    ]
    shaped = [p.router.shape(t) for t in asked]
    assert [t.model for t in shaped if isinstance(t, Task)] == ["gpt-4o", "gpt-4.1", "gpt-4o-mini"]
    admitted, refused = await p.admission.admit([t for t in shaped if isinstance(t, Task)])
    assert refused == []
    # high_quality falls to the best allowed tier below it (balanced); fast_cheap stays
    assert [t.model for t in admitted] == ["gpt-4.1-mini", "gpt-4.1-mini", "gpt-4o-mini"]


@with_plan(allowed_models=["claude-*"])
async def test_no_allowed_model_with_a_provider_is_rejected(plan_client: BatchwiseClient) -> None:
    [result] = await submit(plan_client, [{"id": "x", "prompt": "p"}])
    message = rejected(result, "plan_allowed_models")
    assert "allowed_models" in message and "claude-*" in message


@with_plan(requests_per_min=3)
async def test_requests_per_min(plan_client: BatchwiseClient) -> None:
    results = await submit(plan_client, [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(5)])
    assert results[:3] == [None] * 3
    message = rejected(results[3], "plan_requests_per_min")
    assert "requests_per_min: 4 requests this minute, the plan allows 3 (1 over)" in message
    rejected(results[4], "plan_requests_per_min")  # rejected tasks are not counted
    clock = plan_client.pipeline.budgets.clock
    assert isinstance(clock, Clock)
    clock.now += 60
    assert await submit(plan_client, [{"id": "next", "prompt": "p"}]) == [None]


@with_plan(daily_requests=2)
async def test_daily_requests(plan_client: BatchwiseClient) -> None:
    jobs = [{"id": f"d{i}", "prompt": f"p{i}", "user_id": "ann"} for i in range(3)]
    results = await submit(plan_client, jobs)
    message = rejected(results[2], "plan_daily_requests")
    assert "daily_requests: 3 requests today, the plan allows 2 (1 over)" in message
    # another user has their own counters
    assert await submit(plan_client, [{"id": "b", "prompt": "p", "user_id": "bob"}]) == [None]
    clock = plan_client.pipeline.budgets.clock
    assert isinstance(clock, Clock)
    clock.now += 86400
    assert await submit(plan_client, [{"id": "d9", "prompt": "p", "user_id": "ann"}]) == [None]


@with_plan(daily_tokens=100)
async def test_daily_tokens(plan_client: BatchwiseClient) -> None:
    # each task counts its input tokens plus its max_tokens
    each = count_messages("", ["hi"]) + 40
    jobs = [{"id": f"k{i}", "prompt": "hi", "max_tokens": 40} for i in range(3)]
    results = await submit(plan_client, jobs)
    assert results[:2] == [None, None]
    message = rejected(results[2], "plan_daily_tokens")
    expected = f"daily_tokens: {3 * each} tokens today (this task: {each}), the plan allows 100"
    assert f"{expected} ({3 * each - 100} over)" in message


async def test_plan_assignment_precedence(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(
        redis_url,
        fake,
        plans={"one": {"requests_per_min": 1}},
        plan_assignments={"tenant:acme": "one", "user:vip": "one"},
    )
    async with pipeline_client(settings) as client:
        await client.pipeline.admission.plan_store.assign("user:bob", "enterprise")
        jobs = [
            {"id": f"{who}{i}", "prompt": f"{who}{i}", "tenant": tenant, "user_id": user}
            for who, tenant, user in [
                ("carol", "acme", "carol"),  # the tenant's plan: 1 per minute
                ("bob", "acme", "bob"),  # his own override: unlimited
                ("other", "other", ""),  # no plan at all
                ("vip", "other", "vip"),  # a user plan outside the planned tenant
            ]
            for i in range(2)
        ]
        results = dict(zip([j["id"] for j in jobs], await submit(client, jobs), strict=True))
    assert results["carol0"] is None
    rejected(results["carol1"], "plan_requests_per_min")
    assert results["bob0"] is None and results["bob1"] is None
    assert results["other0"] is None and results["other1"] is None
    assert results["vip0"] is None
    rejected(results["vip1"], "plan_requests_per_min")


async def test_default_plans_and_an_unknown_plan(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake, plan_default="free")
    async with pipeline_client(settings) as client:
        assert set(client.pipeline.admission.plans) >= {"free", "starter", "pro", "enterprise"}
        task = client.pipeline.router.shape(
            Task(id="x", messages=(Message(role="user", content="p"),), task_type="analysis")
        )
        assert isinstance(task, Task)
        admitted, refused = await client.pipeline.admission.admit([task])
        assert not isinstance(admitted, Rejection) and refused == []
        assert admitted[0].model == "gpt-4o-mini"  # free plans run on the cheap models
        assert admitted[0].max_tokens == 500  # analysis asks 800 by default; free allows 500
    bad = make_settings(redis_url, fake, plan_default="platinum")
    redis = connect_redis(redis_url)
    keys = Keys(bad.key_prefix)
    budgets = Budgets(redis, bad, keys, PriceTable())
    router = Router(bad, ProviderChain([], bad), PriceTable())
    with pytest.raises(ConfigError, match="unknown plan"):
        Admission(budgets, router)
    await redis.aclose()
