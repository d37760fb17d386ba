"""Stopping a worker with a job in flight: SIGTERM drains it; a cut-short job reruns elsewhere."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from arq.connections import RedisSettings, create_pool

from pipeline.config.settings import Settings
from pipeline.models import CallRecord
from pipeline.testing import FakeProvider, expected_output, fake_provider_worker, make_settings
from workers.lifecycle import in_process_worker, running
from workers.testing import pipeline_client, running_worker


async def until_in_flight(fake: FakeProvider) -> None:
    for _ in range(200):
        if fake.stats()["requests"] >= 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never called the provider")


def tasks(n: int, prefix: str) -> list[dict[str, str]]:
    return [{"id": f"{prefix}{i}", "task_type": "faq", "prompt": f"{prefix} {i}"} for i in range(n)]


def start_worker(tmp_path: Path, settings: Settings, fake: FakeProvider) -> subprocess.Popen[bytes]:
    return fake_provider_worker(tmp_path, settings, fake, BATCHWISE_WORKER_DRAIN_S="20")


def reap(*workers: subprocess.Popen[bytes] | None) -> None:
    for worker in workers:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(10)


async def test_sigterm_lets_the_batch_in_flight_finish_then_exits(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake)
    fake.add_faults({"kind": "latency", "delay_s": 2, "times": 1})
    worker = start_worker(tmp_path, settings, fake)
    try:
        async with pipeline_client(settings) as client:
            run_id = await client.submit(tasks(6, "drain"), complete=True)
            await until_in_flight(fake)
            worker.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = await asyncio.to_thread(worker.wait, 30)
            stopped_after = time.monotonic() - started
            # no worker runs now: the results are there because the drain finished the batch
            done, total, _ = await client.pipeline.runs.progress(run_id)
            results = [r async for r in client.results(run_id)]
            records: list[CallRecord] = [r async for r in client.pipeline.ledger.records()]
    finally:
        reap(worker)
    stderr = (tmp_path / "worker.log").read_text()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert stopped_after < 15
    assert (done, total) == (6, 6)
    assert [r.output for r in results] == [expected_output(f"drain {i}") for i in range(6)]
    assert len(records) == 1 and fake.stats()["requests"] == 1


async def test_a_second_sigterm_cuts_the_drain_short_and_loses_nothing(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake)
    fake.add_faults({"kind": "latency", "delay_s": 15, "times": 1})
    first = start_worker(tmp_path, settings, fake)
    second = None
    try:
        async with pipeline_client(settings) as client:
            run_id = await client.submit(tasks(4, "hurry"), complete=True)
            await until_in_flight(fake)
            first.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            first.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = await asyncio.to_thread(first.wait, 30)
            stopped_after = time.monotonic() - started
            second = start_worker(tmp_path, settings, fake)  # the cancelled batch reruns here
            await client.wait(run_id, timeout_s=60)
            results = [r async for r in client.results(run_id)]
    finally:
        reap(first, second)
    stderr = (tmp_path / "worker.log").read_text()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert stopped_after < 5  # not the 15 s call, nor the 20 s drain
    assert [r.output for r in results] == [expected_output(f"hurry {i}") for i in range(4)]


async def test_a_job_cut_short_at_stop_reruns_on_the_next_worker(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake)
    fake.add_faults({"kind": "latency", "delay_s": 1.5, "times": 1})
    async with pipeline_client(settings) as client:
        pool = await create_pool(RedisSettings.from_dsn(redis_url))
        async with running(in_process_worker(settings, pool, poll_delay=0.02), grace_s=0.1):
            run_id = await client.submit(tasks(5, "cut"), complete=True)
            await until_in_flight(fake)
        # stop() returned without raising; the cancelled call was neither answered nor recorded
        assert [r async for r in client.pipeline.ledger.records()] == []
        async with running_worker(settings):
            await client.wait(run_id, timeout_s=20)
        results = [r async for r in client.results(run_id)]
        records = [r async for r in client.pipeline.ledger.records()]
    assert [r.status for r in results] == ["ok"] * 5
    assert [r.output for r in results] == [expected_output(f"cut {i}") for i in range(5)]
    assert len(records) == 1 and fake.stats()["requests"] == 2


async def test_stop_runs_the_shutdown_hook_whatever_a_job_in_flight_does(redis_url: str) -> None:
    # arq's close() alone re-raised the CancelledError of a job it cancelled (a cron tick in CI),
    # skipping on_shutdown: provider clients stayed open and `batchwise run` ended in a traceback
    settings = make_settings(redis_url)
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = in_process_worker(settings, pool, poll_delay=0.02)
    async with running(worker, grace_s=0.1):
        while "flusher" not in worker.ctx:  # started: on_startup has run
            await asyncio.sleep(0.01)
        worker.tasks["stuck"] = asyncio.create_task(asyncio.sleep(60))  # ends only when cancelled
    assert worker.ctx["flusher"].done()
    assert "batchapi" not in worker.ctx  # on_shutdown closed the batch-API clients
    assert worker.tasks == {}
