"""An alone batch's calls share one budget hold, and each settles its own part exactly once:
answered, failed, or cut off mid-flight and found by the batch's next run."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from pipeline.core.client import BatchwiseClient
from pipeline.testing import FakeProvider, expected_output, make_settings
from tests.core.test_inflight import calls, wait_for_requests
from workers.testing import pipeline_client

PROMPTS = [f"q {i}" for i in range(6)]


async def alone_batch(client: BatchwiseClient) -> tuple[str, str]:
    """Six tasks that go alone (packing them would cost more), taken into one batch."""
    run_id = await client.submit(
        [
            {"id": f"a{i}", "task_type": "short_answer", "system": "Be brief.", "prompt": p}
            for i, p in enumerate(PROMPTS)
        ],
        complete=True,
    )
    (batch_id,) = await client.pipeline.packer.flush()
    return run_id, batch_id


async def holds(client: BatchwiseClient) -> list[bytes]:
    pattern = client.pipeline.keys.reservation("*")
    return sorted([key async for key in client.pipeline.redis.scan_iter(pattern)])


async def test_an_alone_batchs_calls_share_one_hold(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake, pack_only_when_cheaper=True)
    async with pipeline_client(settings) as client:
        run_id, batch_id = await alone_batch(client)
        assert await client.pipeline.executor.run(batch_id) == []
        results = [r async for r in client.results(run_id)]
        (hold,) = await holds(client)
        parts = await client.pipeline.redis.hgetall(hold)
        spent = await client.pipeline.budgets.window_spend("global")
        records = await calls(client)
    assert [r.output for r in results] == [expected_output(p) for p in PROMPTS]
    assert {r.batch_size for r in results} == {1} and len(records) == 6
    assert hold.endswith(f"{batch_id}:alone:1".encode())
    assert parts[b"state"] == b"held" and len([f for f in parts if f.startswith(b"call:")]) == 6
    cost = sum((r.cost_usd or Decimal(0) for r in records), Decimal(0))
    assert cost > 0
    # every part settled to what its call cost: nothing is left held
    assert spent["hourly"] == spent["hourly_settled"] == cost


async def test_a_call_cut_off_in_an_alone_batch_settles_its_part_at_its_worst_case(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, pack_only_when_cheaper=True)
    fake.add_faults({"kind": "latency", "delay_s": 1.5, "times": 1})
    async with pipeline_client(settings) as client:
        run_id, batch_id = await alone_batch(client)
        executor = client.pipeline.executor
        first = asyncio.create_task(executor.run(batch_id, attempt=1))
        await wait_for_requests(fake, 6)
        for _ in range(500):  # the five quick calls are answered and recorded
            if len(await calls(client)) >= 5:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # and their answers stored beside their records
        first.cancel()  # as a job timeout or a dying worker cuts the slow call off
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await executor.run(batch_id, attempt=2) == []
        results = [r async for r in client.results(run_id)]
        spent = await client.pipeline.budgets.window_spend("global")
        records = await calls(client)
    assert [r.output for r in results] == [expected_output(p) for p in PROMPTS]
    assert fake.stats(bodies=False)["requests"] == 7  # only the cut-off call ran again
    statuses = sorted(r.status for r in records)
    assert statuses == ["ok"] * 6 + ["unknown"]
    # the lost call counts at its worst case, as the ledger first recorded it; nothing held
    cost = sum((r.cost_usd or Decimal(0) for r in records), Decimal(0))
    assert spent["hourly"] == spent["hourly_settled"] == cost
