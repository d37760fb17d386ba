"""At-least-once execution with idempotent effects: killed workers and re-run batches never lose
a task, duplicate a result, or add a second ledger record."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import orjson

from pipeline.models import CallRecord
from pipeline.testing import FakeProvider, expected_output, fake_provider_worker, make_settings
from workers.testing import pipeline_client, running_worker


async def ledger_records(client_pipeline) -> list[CallRecord]:  # type: ignore[no-untyped-def]
    return [r async for r in client_pipeline.ledger.records()]


async def test_worker_killed_mid_batch_loses_nothing_and_records_once(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, job_timeout_s=2)
    fake.add_faults({"kind": "latency", "delay_s": 4, "times": 1})
    prompts = [f"crash question {i}" for i in range(10)]
    first = fake_provider_worker(tmp_path, settings, fake, BATCHWISE_JOB_TIMEOUT_S="2")
    second = None
    try:
        async with pipeline_client(settings) as client:
            run_id = await client.submit(
                [{"id": f"c{i}", "task_type": "faq", "prompt": p} for i, p in enumerate(prompts)],
                complete=True,
            )
            for _ in range(200):  # until the slow call is in flight
                if fake.stats()["requests"] >= 1:
                    break
                await asyncio.sleep(0.05)
            assert fake.stats()["requests"] >= 1, "the worker never called the provider"
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            second = fake_provider_worker(tmp_path, settings, fake, BATCHWISE_JOB_TIMEOUT_S="2")
            await client.wait(run_id, timeout_s=60)
            results = [r async for r in client.results(run_id)]
            records = await ledger_records(client.pipeline)
            calls = [r async for r in client.pipeline.ledger.records(errors=True)]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    assert [r.id for r in results] == [f"c{i}" for i in range(10)]
    assert all(r.status == "ok" for r in results)
    assert [r.output for r in results] == [expected_output(p) for p in prompts]
    # one packed batch answered once; the killed worker's call, which may have been billed, is
    # recorded too, as an attempt of unknown outcome reconciled by the answer
    assert [r.batch_size for r in records] == [10]
    assert sorted(r.status for r in calls) == ["adjustment", "ok", "unknown"]
    assert fake.stats()["requests"] == 2 == len([r for r in calls if r.status != "adjustment"])


async def test_rerunning_a_finished_batch_changes_nothing(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake)
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(
            [{"id": f"r{i}", "task_type": "faq", "prompt": f"rerun {i}"} for i in range(4)],
            complete=True,
        )
        await client.wait(run_id, timeout_s=20)
        before = [r async for r in client.results(run_id)]
        (record,) = await ledger_records(client.pipeline)
        # as after a crash between the answer and closing the batch: the job runs again
        await client.pipeline.redis.hset(
            client.pipeline.keys.batch(record.batch_id), "status", "open"
        )
        children = await client.pipeline.executor.run(record.batch_id)
        after = [r async for r in client.results(run_id)]
        records = await ledger_records(client.pipeline)
        done, total, _ = await client.pipeline.runs.progress(run_id)
    assert children == []
    assert after == before
    assert len(records) == 1 and (done, total) == (4, 4)
    assert fake.stats()["requests"] == 1
    assert sum(r.cost_usd or 0 for r in after) == float(
        orjson.loads(record.model_dump_json())["cost_usd"]
    )
