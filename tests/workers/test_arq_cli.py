"""arq's own CLI (`arq workers.WorkerSettings`) leases its jobs as `batchwise worker` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.testing import (
    ARQ_WORKER,
    FakeProvider,
    expected_output,
    make_settings,
)
from tests.state.test_durability import rerun_after_a_kill


async def test_a_dead_arq_cli_workers_batch_reruns_within_its_lease(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    """Killed mid-call with the default 300 s job timeout, an `arq workers.WorkerSettings`
    worker's batch is rerun by another once the 1 s lease runs out, not after the timeout."""
    settings = make_settings(redis_url, fake, job_timeout_s=300)
    prompts = [f"arq lease question {i}" for i in range(6)]
    rerun = await rerun_after_a_kill(tmp_path, settings, fake, prompts, ARQ_WORKER)
    assert rerun.recovery_s < 8, f"rerun took {rerun.recovery_s:.1f}s"
    assert [r.output for r in rerun.results] == [expected_output(p) for p in prompts]
    assert [r.batch_size for r in rerun.records] == [6]  # the killed call was never recorded


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
