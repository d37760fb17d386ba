"""No spend goes unrecorded: every request the provider saw is a call in the ledger, whether its
worker stopped mid-call or its answer could not be processed."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline.core.client import BatchwiseClient
from pipeline.models import CallRecord
from pipeline.testing import FakeProvider, make_settings
from workers.testing import pipeline_client


async def calls(client: BatchwiseClient) -> list[CallRecord]:
    """Every call record, failed and unknown ones too, without the adjustments."""
    records = [r async for r in client.pipeline.ledger.records(errors=True)]
    return [r for r in records if r.status != "adjustment"]


async def one_batch(client: BatchwiseClient, n: int, **task: Any) -> tuple[str, str]:
    """Submit `n` tasks (no worker runs) and take them into one batch; (run id, batch id)."""
    run_id = await client.submit(
        [{"id": f"q{i}", "task_type": "faq", "prompt": f"question {i}", **task} for i in range(n)],
        complete=True,
    )
    (batch_id,) = await client.pipeline.packer.flush()
    return run_id, batch_id


async def wait_for_requests(fake: FakeProvider, n: int) -> None:
    for _ in range(200):
        if fake.stats(bodies=False)["requests"] >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the provider never saw {n} request(s)")


async def test_a_call_cut_off_mid_flight_is_recorded_then_reconciled(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake)
    fake.add_faults({"kind": "latency", "delay_s": 1.5, "times": 1})
    async with pipeline_client(settings) as client:
        run_id, batch_id = await one_batch(client, 4)
        executor = client.pipeline.executor
        first = asyncio.create_task(executor.run(batch_id, attempt=1))
        await wait_for_requests(fake, 1)
        first.cancel()  # as a job timeout or a dying worker cuts the call off
        with pytest.raises(asyncio.CancelledError):
            await first
        held = await client.pipeline.redis.hgetall(client.pipeline.keys.reservation(batch_id))
        assert await executor.run(batch_id, attempt=2) == []
        results = [r async for r in client.results(run_id)]
        records = await calls(client)
        entries = [r async for r in client.pipeline.ledger.records(errors=True)]
    assert fake.stats(bodies=False)["requests"] == len(records) == 2
    lost, answered = sorted(records, key=lambda r: r.status != "unknown")
    assert (lost.status, answered.status) == ("unknown", "ok")
    assert (lost.provider, lost.model) == (answered.provider, answered.model)
    worst = Decimal(int(held[b"amount"])) / Decimal(10**9)
    assert held[b"state"] == b"held" and lost.cost_usd == worst
    assert answered.cost_usd is not None and worst > answered.cost_usd > 0
    (adjustment,) = [r for r in entries if r.status == "adjustment"]
    assert adjustment.cost_usd == answered.cost_usd - worst
    # the tasks carry both calls: their costs add up to the ledger's spend
    spend = sum(r.cost_usd or 0 for r in entries)
    assert spend == 2 * answered.cost_usd
    assert sum(Decimal(str(r.cost_usd)) for r in results) == pytest.approx(spend)
    assert all(r.status == "ok" for r in results)


async def test_a_late_answer_after_a_rerun_is_counted_once(
    redis_url: str, fake: FakeProvider
) -> None:
    """Two runs of one batch at once (a worker taken for dead was only slow): both calls are
    paid, both are in the ledger, and the slow one at its exact cost."""
    settings = make_settings(redis_url, fake)
    fake.add_faults({"kind": "latency", "delay_s": 1.0, "times": 1})
    async with pipeline_client(settings) as client:
        run_id, batch_id = await one_batch(client, 3)
        executor = client.pipeline.executor
        slow = asyncio.create_task(executor.run(batch_id, attempt=1))
        await wait_for_requests(fake, 1)
        await executor.run(batch_id, attempt=2)
        await slow
        entries = [r async for r in client.pipeline.ledger.records(errors=True)]
        results = [r async for r in client.results(run_id)]
    records = [r for r in entries if r.status != "adjustment"]
    assert fake.stats(bodies=False)["requests"] == len(records) == 2
    (answered,) = [r for r in records if r.status == "ok"]
    assert sum(r.cost_usd or 0 for r in entries) == 2 * (answered.cost_usd or 0)
    assert [r.status for r in results] == ["ok"] * 3


async def test_an_answer_that_cannot_be_processed_is_recorded_once(
    redis_url: str, fake: FakeProvider
) -> None:
    """A schema that intake would refuse, put in place behind its back: splitting the answer
    raises on every try, and the one paid call is still recorded, once."""
    settings = make_settings(redis_url, fake)
    async with pipeline_client(settings) as client:
        run_id, batch_id = await one_batch(client, 3, response_schema={"type": "object"})
        p = client.pipeline
        group = (await p.redis.hget(p.keys.batch(batch_id), "group")).decode()
        meta = orjson.loads(await p.redis.get(p.keys.group(group)))
        await p.redis.set(
            p.keys.group(group), orjson.dumps({**meta, "response_schema": {"type": 5}})
        )
        for attempt in range(1, settings.job_max_tries + 1):  # as the worker's tries would
            with pytest.raises(TypeError):
                await p.executor.run(batch_id, attempt=attempt)
        await p.executor.fail_batch(batch_id, "internal_error", "the answer could not be split")
        records = await calls(client)
        results = [r async for r in client.results(run_id)]
    assert fake.stats(bodies=False)["requests"] == len(records) == 1
    assert records[0].status == "ok" and (records[0].cost_usd or 0) > 0
    assert [r.status for r in results] == ["failed"] * 3
    # the failed tasks still carry what their call cost
    assert sum(Decimal(str(r.cost_usd)) for r in results) == pytest.approx(records[0].cost_usd)
