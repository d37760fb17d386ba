"""Durability: workers and producers ride out a Redis crash, a dead worker's batches rerun within
its lease, and every task is still answered exactly once (docs/durability.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.models import CallRecord, Result
from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing import (
    BATCHWISE_WORKER,
    FakeProvider,
    expected_output,
    fake_provider_worker,
    make_settings,
)
from tests.state.test_embedded import gone


async def _ok_records(client: BatchwiseClient) -> list[CallRecord]:
    return [r async for r in client.pipeline.ledger.records()]


async def _first_request(fake: FakeProvider, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while fake.stats(bodies=False)["requests"] < 1:
        assert time.monotonic() < deadline, "no worker called the provider"
        await asyncio.sleep(0.05)


def _stop(*procs: subprocess.Popen[bytes] | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)


async def test_workers_and_client_ride_out_a_redis_crash(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """SIGKILL the Redis server (AOF everysec) under two worker processes mid-run and restart it
    on the same socket 3 s later, after the jobs' 2 s leases ran out: every task is answered
    once, and both workers are still running, without a traceback."""
    server = EmbeddedRedis(tmp_path / "redis")
    settings = make_settings(server.start(), fake, worker_heartbeat_s=2)
    fake.add_faults({"kind": "latency", "delay_s": 3, "times": 10_000})
    env = {"BATCHWISE_WORKER_HEARTBEAT_S": "2", "BATCHWISE_REDIS_BACKOFF_CAP_S": "0.5"}
    workers = [fake_provider_worker(tmp_path, settings, fake, **env) for _ in range(2)]
    prompts = [f"outage question {i}" for i in range(60)]
    try:
        async with BatchwiseClient.connect(settings) as client:
            run_id = await client.submit(
                [{"id": f"o{i}", "task_type": "faq", "prompt": p} for i, p in enumerate(prompts)],
                complete=True,
            )
            await _first_request(fake)
            await asyncio.sleep(1.2)  # the submission is on disk (everysec); calls in flight
            assert server.pid is not None
            os.kill(server.pid, signal.SIGKILL)
            assert gone(server.pid)
            await asyncio.sleep(3.0)  # longer than the leases: they run out in the AOF
            crashed, server = server, EmbeddedRedis(tmp_path / "redis")
            server.start()
            crashed.stop()  # detach from the killed server: the new one stays up
            await client.wait(run_id, timeout=60)
            results = [r async for r in client.results(run_id)]
            records = await _ok_records(client)
        alive = [w.poll() is None for w in workers]
    finally:
        _stop(*workers)
        server.stop()
    log = (tmp_path / "worker.log").read_text()
    assert alive == [True, True], log[-3000:]
    assert "Redis went away" in log and "Redis is back after" in log
    assert "Traceback" not in log, log[-3000:]
    assert [r.id for r in results] == [f"o{i}" for i in range(60)]
    assert [r.output for r in results] == [expected_output(p) for p in prompts]
    batch_ids = [r.batch_id for r in records]
    assert len(batch_ids) == len(set(batch_ids))  # one ledger record per batch
    assert sum(r.batch_size for r in records) == 60


@dataclass
class Rerun:
    recovery_s: float
    results: list[Result]
    records: list[CallRecord]


async def rerun_after_a_kill(
    tmp_path: Path,
    settings: Settings,
    fake: FakeProvider,
    prompts: list[str],
    command: Sequence[str] = BATCHWISE_WORKER,
) -> Rerun:
    """Two worker processes (`command`) with a 1 s heartbeat lease and a 300 s job timeout; the
    one whose call is in flight (the provider holds it 60 s) is SIGKILLed, the other reruns it."""
    fake.add_faults({"kind": "latency", "delay_s": 60, "times": 1})
    env = {"BATCHWISE_WORKER_HEARTBEAT_S": "1", "BATCHWISE_JOB_TIMEOUT_S": "300"}
    first = fake_provider_worker(tmp_path, settings, fake, command, **env)
    second = None
    try:
        async with BatchwiseClient.connect(settings) as client:
            run_id = await client.submit(
                [{"id": f"l{i}", "task_type": "faq", "prompt": p} for i, p in enumerate(prompts)],
                complete=True,
            )
            await _first_request(fake)
            second = fake_provider_worker(tmp_path, settings, fake, command, **env)
            await asyncio.sleep(1.0)  # the second worker is up and polling
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_at = time.monotonic()
            await client.wait(run_id, timeout=30)
            recovery_s = time.monotonic() - killed_at
            results = [r async for r in client.results(run_id)]
            records = await _ok_records(client)
    finally:
        _stop(first, second)
    return Rerun(recovery_s, results, records)


async def test_a_dead_workers_batch_reruns_within_its_lease(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    """A worker killed mid-call with the default 300 s job timeout: another worker reruns its
    batch once the 1 s heartbeat lease runs out, not after the job timeout."""
    settings = make_settings(redis_url, fake, job_timeout_s=300)
    prompts = [f"lease question {i}" for i in range(8)]
    rerun = await rerun_after_a_kill(tmp_path, settings, fake, prompts)
    assert rerun.recovery_s < 8, f"rerun took {rerun.recovery_s:.1f}s"
    assert [r.output for r in rerun.results] == [expected_output(p) for p in prompts]
    assert [r.batch_size for r in rerun.records] == [8]  # the killed call was never recorded
    assert fake.stats(bodies=False)["requests"] == 2


async def test_a_worker_stops_on_sigterm_while_redis_is_gone(
    tmp_path: Path, fake: FakeProvider
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    settings = make_settings(server.start(), fake)
    worker = fake_provider_worker(tmp_path, settings, fake)
    try:
        log = tmp_path / "worker.log"
        deadline = time.monotonic() + 30
        while "worker ready" not in log.read_text():
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
            await asyncio.sleep(0.1)
        server.stop()
        await asyncio.sleep(1.0)
        assert worker.poll() is None  # still there without Redis
        worker.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(worker.wait, 20)
        stopped_s = time.monotonic() - started
    finally:
        _stop(worker)
        server.stop()
    assert code == 0, log.read_text()[-2000:]
    assert stopped_s < 10
