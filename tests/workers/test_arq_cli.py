"""arq's own CLI (`arq workers.WorkerSettings`) leases its jobs as `batchwise worker` does."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.core.client import BatchwiseClient
from pipeline.testing import (
    ARQ_WORKER,
    FakeProvider,
    expected_output,
    fake_provider_worker,
    make_settings,
)
from tests.state.test_durability import _first_request, _ok_records, _stop


async def test_a_dead_arq_cli_workers_batch_reruns_within_its_lease(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    """Killed mid-call with the default 300 s job timeout, an `arq workers.WorkerSettings`
    worker's batch is rerun by another once the 1 s lease runs out, not after the timeout."""
    settings = make_settings(redis_url, fake, job_timeout_s=300)
    fake.add_faults({"kind": "latency", "delay_s": 60, "times": 1})
    env = {"BATCHWISE_WORKER_HEARTBEAT_S": "1", "BATCHWISE_JOB_TIMEOUT_S": "300"}
    first = fake_provider_worker(tmp_path, settings, fake, ARQ_WORKER, **env)
    second = None
    prompts = [f"arq lease question {i}" for i in range(6)]
    try:
        async with BatchwiseClient.connect(settings) as client:
            run_id = await client.submit(
                [{"id": f"q{i}", "task_type": "faq", "prompt": p} for i, p in enumerate(prompts)],
                complete=True,
            )
            await _first_request(fake)
            second = fake_provider_worker(tmp_path, settings, fake, ARQ_WORKER, **env)
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
    assert recovery_s < 8, f"rerun took {recovery_s:.1f}s"
    assert [r.output for r in results] == [expected_output(p) for p in prompts]
    assert [r.batch_size for r in records] == [6]  # the killed call was never recorded


def test_importing_workers_reads_no_settings_and_arq_reads_them_when_it_asks() -> None:
    """A bad setting fails arq's lookup of WorkerSettings with its name, not every import of a
    workers module (the batchwise CLI imports them too)."""
    env = {**os.environ, "BATCHWISE_LINGER_MS": "abc"}
    imports = subprocess.run(
        [sys.executable, "-c", "import workers, workers.jobs, workers.lifecycle"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    assert imports.returncode == 0, imports.stderr
    lookup = subprocess.run(
        [sys.executable, "-c", "import workers; workers.WorkerSettings"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    assert lookup.returncode != 0
    assert "BATCHWISE_LINGER_MS" in lookup.stderr
