"""The Python API for services, single-flight, rejections and cost attribution."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.errors import InputError
from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker


async def test_submit_wait_results_and_result(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake)
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(
            [{"id": "a", "prompt": "alpha", "metadata": {"row": 1}}, {"id": "b", "prompt": "beta"}]
        )  # a service submission: groups flush after their linger time
        await client.wait(run_id, timeout_s=20)
        results = [r async for r in client.results(run_id)]
        one = await client.result("a")
    assert [(r.id, r.status, r.output) for r in results] == [
        ("a", "ok", expected_output("alpha")),
        ("b", "ok", expected_output("beta")),
    ]
    assert one is not None and one.metadata == {"row": 1} and one.batch_size == 2


async def test_invalid_api_task_raises_before_anything_is_queued(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with pipeline_client(settings) as client:
        with pytest.raises(InputError, match=r"task 1.*max_tokens"):
            await client.submit([{"prompt": "fine"}, {"prompt": "bad", "max_tokens": 0}])
        assert await client.pipeline.redis.zcard(client.pipeline.keys.groups()) == 0


async def test_identical_pending_tasks_share_one_item(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake)
    tasks = [{"id": f"d{i}", "task_type": "faq", "prompt": "same question"} for i in range(5)]
    tasks += [
        {"id": "fresh1", "prompt": "same question", "task_type": "faq", "ttl_class": "no_cache"},
        {"id": "fresh2", "prompt": "same question", "task_type": "faq", "ttl_class": "no_cache"},
    ]
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(tasks, complete=True)
        await client.wait(run_id, timeout_s=20)
        results = [r async for r in client.results(run_id)]
        summary = await client.summary(run_id)
    assert all(r.status == "ok" and r.output == expected_output("same question") for r in results)
    assert fake.stats()["items"] == 3  # one shared item + two no_cache items of their own
    shared = [Decimal(str(r.cost_usd)) for r in results[:5]]
    assert max(shared) - min(shared) <= Decimal("0.000000001")  # the shared cost split evenly
    assert summary.provider_calls == 2 and summary.ok == 7


async def test_task_costs_add_up_to_the_call_cost(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake)
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(
            [{"id": str(i), "task_type": "faq", "prompt": "q" * (i + 1) * 20} for i in range(7)],
            complete=True,
        )
        await client.wait(run_id, timeout_s=20)
        results = [r async for r in client.results(run_id)]
        records = [r async for r in client.pipeline.ledger.records()]
    (record,) = records
    assert record.cost_usd is not None and record.cost_usd > 0
    nano = sum(round(Decimal(str(r.cost_usd)) * 10**9) for r in results)
    assert nano == record.cost_usd * 10**9
    assert sum(r.input_tokens for r in results) == record.usage.input_tokens
    assert sum(r.output_tokens for r in results) == record.usage.output_tokens
    longest, shortest = results[-1], results[0]
    assert longest.cost_usd and shortest.cost_usd and longest.cost_usd > shortest.cost_usd


async def test_unserved_model_is_rejected_with_a_reason(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake)
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(
            [{"id": "x", "prompt": "hi", "model": "claude-opus-4-0"}], complete=True
        )
        await client.wait(run_id, timeout_s=10)
        (result,) = [r async for r in client.results(run_id)]
    assert result.status == "rejected" and result.error is not None
    assert result.error.code == "no_provider" and "claude-opus-4-0" in result.error.message
