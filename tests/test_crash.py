"""At-least-once execution with idempotent effects: killed workers and re-run batches never lose
a task, duplicate a result, or add a second ledger record."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from pipeline.models import CallRecord
from tests.conftest import FAKE_KEY, make_settings, pipeline_client, running_worker
from tests.fake_provider import FakeProvider, expected_output


def worker_process(settings_env: dict[str, str], config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env, "BATCHWISE_CONFIG": str(config), "FAKE_KEY": FAKE_KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def ledger_records(client_pipeline) -> list[CallRecord]:  # type: ignore[no-untyped-def]
    return [r async for r in client_pipeline.ledger.records()]


async def test_worker_killed_mid_batch_loses_nothing_and_records_once(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, job_timeout_s=2)
    config = tmp_path / "batchwise.toml"
    config.write_text(
        f'[providers.fake]\nkind = "openai"\nbase_url = "{fake.openai_base_url}"\n'
        f'api_key_env = "FAKE_KEY"\nmodels = ["gpt-*"]\nread_timeout_s = 30\n'
    )
    env = {
        "REDIS_URL": redis_url,
        "BATCHWISE_KEY_PREFIX": settings.key_prefix,
        "BATCHWISE_QUEUE": settings.queue_name,
        "BATCHWISE_JOB_TIMEOUT_S": "2",
        "BATCHWISE_LINGER_MS": "20",
    }
    fake.add_faults({"kind": "latency", "delay_s": 4, "times": 1})
    prompts = [f"crash question {i}" for i in range(10)]
    first = worker_process(env, config)
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
            second = worker_process(env, config)
            await client.wait(run_id, timeout_s=60)
            results = [r async for r in client.results(run_id)]
            records = await ledger_records(client.pipeline)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    assert [r.id for r in results] == [f"c{i}" for i in range(10)]
    assert all(r.status == "ok" for r in results)
    assert [r.output for r in results] == [expected_output(p) for p in prompts]
    # one packed batch: the killed worker's call was never recorded, the re-run's once
    assert [r.batch_size for r in records] == [10]
    assert fake.stats()["requests"] == 2


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
