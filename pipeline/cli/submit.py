"""`batchwise submit FILE [--wait]`: queue a job file for the workers of the state (`REDIS_URL`,
else the embedded server of the state directory) and, with `--wait`, write its results."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.cli import jobfile
from pipeline.cli.common import out, say
from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.state.embedded import EmbeddedRedis
from pipeline.state.opening import attach


def add_cli(subparsers: Any) -> None:
    """Register `batchwise submit`."""
    submit = subparsers.add_parser(
        "submit", help="queue a job file for the workers (REDIS_URL, else the embedded state)"
    )
    submit.add_argument("file", type=Path)
    submit.add_argument("--wait", action="store_true", help="wait for results and write them")
    submit.add_argument("--out", help="results file (with --wait)")
    submit.add_argument("--strict", action="store_true")
    submit.set_defaults(handler=cmd_submit)


async def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    out_path = jobfile.results_path(args.file, args.out)
    with attach(settings) as attached:
        if attached.embedded is not None and args.wait:
            _say_if_no_worker(attached.embedded)
        client = await BatchwiseClient.connect(attached.settings)  # pings: no bar before Redis
        try:
            await _submit(client, args, out_path, attached.embedded)
        finally:
            await client.close()
    return 0


async def _submit(
    client: BatchwiseClient,
    args: argparse.Namespace,
    out_path: Path,
    embedded: EmbeddedRedis | None,
) -> None:
    with jobfile.progress_bars() as progress:
        submission = await jobfile.submit_file(client, args.file, args.strict, progress)
        out.print(
            f"run {submission.run_id}: {submission.accepted} queued, {submission.rejected} rejected"
        )
        if args.wait:
            await jobfile.wait_for_results(client, submission.run_id, progress)
    if not args.wait:
        if embedded is not None and not (await client.progress(submission.run_id)).complete:
            say(
                f"its queued tasks are answered by `batchwise worker` (or `batchwise run`) on "
                f"{embedded.dir}; fetch the results with: batchwise results {submission.run_id}"
            )
        return
    await jobfile.finish(client, submission, out_path)


def _say_if_no_worker(embedded: EmbeddedRedis) -> None:
    """Waiting on the embedded state answers nothing until a worker attaches: say so at once."""
    if not embedded.workers_attached():
        say(
            f"no worker is attached to {embedded.dir} yet: start `batchwise worker` in another "
            "shell to answer this file (or use `batchwise run FILE`)"
        )
