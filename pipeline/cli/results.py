"""`batchwise results RUN_ID [--out FILE]`: a run's results as JSONL, in input order."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli.common import err, say
from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.runs import RunStore, to_result
from pipeline.core.wiring import Pipeline
from pipeline.errors import InputError
from pipeline.outfile import check_destination, writing
from pipeline.state.opening import open_state
from pipeline.terminal import printable

IN_PROGRESS_EXIT = 3


def add_cli(subparsers: Any) -> None:
    """Register `batchwise results`."""
    results = subparsers.add_parser("results", help="print a run's results as JSONL")
    results.add_argument("run_id")
    results.add_argument("--out", help="write to this file instead of stdout")
    results.set_defaults(handler=cmd_results)


async def write_results(runs: RunStore, run_id: str, out_path: Path) -> int:
    """Stream the run's results to a JSONL file in input order; returns the line count."""
    written = 0
    try:
        with writing(out_path) as fh:
            async for record in runs.records(run_id):
                fh.write(to_result(record).model_dump_json().encode() + b"\n")
                written += 1
    except InputError as exc:
        raise InputError(
            f"{exc.reason}; the results of run {run_id} stay in Redis: "
            f"batchwise results {run_id} --out FILE",
            where=exc.where,
        ) from None
    return written


async def cmd_results(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 with a finished run's results; exit 3, after what there is so far and a warning,
    while the run is still in progress."""
    if args.out:
        check_destination(Path(args.out))
    async with open_state(settings, require_data=True) as redis:
        await redis.ping()  # an unreachable REDIS_URL is one error line, before any output
        client = BatchwiseClient(Pipeline(settings, redis))
        try:
            state = await client.progress(args.run_id)
            if args.out:
                n = await write_results(client.pipeline.runs, args.run_id, Path(args.out))
                say(f"{n} results written to {args.out}")
            else:
                async for result in client.results(args.run_id):
                    sys.stdout.buffer.write(orjson.dumps(result.model_dump(mode="json")) + b"\n")
        finally:
            await client.pipeline.aclose()
    if state.complete:
        return 0
    err.print(
        f"warning: run {printable(args.run_id)} is still in progress ({state.done} of "
        f"{state.total} results{'' if state.sealed else ', submission not finished'}); run "
        "this again when it is done",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return IN_PROGRESS_EXIT
