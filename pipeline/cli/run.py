"""`batchwise run FILE`: submit a job file, answer it with a worker in this process, write the
results and print the summary. SIGINT and SIGTERM stop it cleanly (docs/state.md)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.cli import jobfile
from pipeline.cli.common import say, worker_state
from pipeline.cli.interrupts import Interrupts
from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient, Submission, new_run_id
from pipeline.core.wiring import Pipeline

if TYPE_CHECKING:
    from arq.connections import ArqRedis


def add_cli(subparsers: Any) -> None:
    """Register `batchwise run`."""
    run = subparsers.add_parser(
        "run", help="run a job file end to end (embedded Redis unless REDIS_URL)"
    )
    run.add_argument("file", type=Path)
    run.add_argument("--out", help="results file (default: FILE.results.jsonl)")
    run.add_argument("--strict", action="store_true", help="refuse the file if any line is bad")
    run.set_defaults(handler=cmd_run)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from arq.connections import RedisSettings, create_pool

    out_path = jobfile.results_path(args.file, args.out)
    with Interrupts() as interrupts:
        async with worker_state(settings) as state:
            assert state.redis_url
            redis = await create_pool(RedisSettings.from_dsn(state.redis_url))
            try:
                return await _run(args, out_path, state, redis, interrupts)
            finally:
                await redis.aclose()


async def _run(
    args: argparse.Namespace,
    out_path: Path,
    settings: Settings,
    redis: ArqRedis,
    interrupts: Interrupts,
) -> int:
    """Submit, wait and write with an in-process worker; on SIGINT/SIGTERM drain and say how
    to fetch the results."""
    from workers.lifecycle import in_process_worker, stop

    pipeline = Pipeline(settings, redis)
    client = BatchwiseClient(pipeline)
    run_id = new_run_id()
    say(f"run {run_id}: {args.file}")
    worker = in_process_worker(settings, redis)
    worker_task = asyncio.create_task(worker.async_run())
    interrupted = False
    try:
        interrupted, _ = await interrupts.until_signal(_run_file(client, args, run_id, out_path))
        if interrupted:
            try:
                done, total, _ = await pipeline.runs.progress(run_id)
            except KeyError:  # interrupted before the run was created
                done = total = 0
            say(
                f"interrupted: run {run_id} has {done} of {total} results; finishing the "
                f"batches in flight (up to {settings.worker_drain_s:g}s; signal again to stop "
                "now)"
            )
    finally:
        hurry = interrupts.again if interrupts.first.is_set() else interrupts.first
        await stop(worker, worker_task, settings.worker_drain_s, hurry=hurry)
        await pipeline.aclose()
    if interrupted:
        say(
            f"run {run_id} stopped; its queued tasks resume with the next `batchwise run` (or "
            f"worker) on this state. Fetch its results with: batchwise results {run_id} --out "
            f"{out_path}"
        )
        return interrupts.exit_code
    return 0


async def _run_file(
    client: BatchwiseClient, args: argparse.Namespace, run_id: str, out_path: Path
) -> Submission:
    with jobfile.progress_bars() as progress:
        submission = await jobfile.submit_file(
            client, args.file, args.strict, progress, run_id=run_id
        )
        await jobfile.wait_for_results(client, submission.run_id, progress)
    await jobfile.finish(client, submission, out_path)
    return submission
