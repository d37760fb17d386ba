"""The command line: `batchwise run | submit | worker | results | serve | ...`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import pipeline.cli.budget as budget_cli
import pipeline.cli.providers as provider_cli
import pipeline.nightly.inbox as nightly
from pipeline import cache
from pipeline.cli.interrupts import Interrupts
from pipeline.cli.optimise import add_cli as add_optimise_cli
from pipeline.cli.report import add_cli as add_report_cli
from pipeline.cli.serve import add_cli as add_serve_cli
from pipeline.config.loading import load_settings
from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient, Submission, new_run_id
from pipeline.core.intake import check_job_file
from pipeline.core.runs import RunStore
from pipeline.core.summary import Summary
from pipeline.core.wiring import Pipeline
from pipeline.costs.export import add_cli as add_export_cli
from pipeline.errors import ConfigError, InputError, PipelineError
from pipeline.outfile import check_destination, writing
from pipeline.redaction import redact, redact_logs, secret_values
from pipeline.state.opening import attach, open_state
from pipeline.terminal import printable, terminal_safe

if TYPE_CHECKING:
    from arq.connections import ArqRedis

err = Console(stderr=True)
out = Console()


def count_lines(path: Path) -> int:
    """Fast newline count, for the progress bar's total."""
    total = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            total += block.count(b"\n")
    return total


def default_out(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + ".results.jsonl")


async def write_results(runs: RunStore, run_id: str, out_path: Path) -> int:
    """Stream the run's results to a JSONL file in input order; returns the line count."""
    from pipeline.core.runs import to_result

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


def check_paths(job_file: Path, out_path: Path) -> None:
    """Refuse a missing job file or an unwritable results path before any work starts."""
    check_job_file(job_file)
    check_destination(out_path)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


async def _wait_with_progress(client: BatchwiseClient, run_id: str, progress: Progress) -> None:
    now = await client.progress(run_id)  # waits through a Redis outage, or says what to do
    bar = progress.add_task("results  ", total=now.total, completed=now.done)
    while True:
        now = await client.progress(run_id)
        progress.update(bar, completed=now.done, total=now.total)
        if now.complete:
            return
        await asyncio.sleep(0.1)


async def _submit(
    client: BatchwiseClient, path: Path, strict: bool, progress: Progress, run_id: str | None = None
) -> Submission:
    bar = progress.add_task("submitted", total=count_lines(path))
    submission = await client.submit_file(
        path,
        strict=strict,
        run_id=run_id,
        on_progress=lambda n: progress.update(bar, completed=n),
    )
    progress.update(bar, completed=submission.total, total=submission.total)
    return submission


def _say(message: str) -> None:
    """A line on stderr, as it is (no markup, no wrapping: paths stay whole; controls escaped)."""
    err.print(printable(message), markup=False, highlight=False, soft_wrap=True)


def _report_errors(submission: Submission) -> None:
    if not submission.errors:
        return
    err.print(f"[yellow]{len(submission.errors)} invalid line(s) were rejected:[/yellow]")
    for error in submission.errors[:20]:
        err.print(f"  {printable(error)}", markup=False, highlight=False, soft_wrap=True)
    if len(submission.errors) > 20:
        err.print(f"  ... and {len(submission.errors) - 20} more (see the results file)")


LEVER_LABELS = {
    "cache": "exact cache",
    "semantic_cache": "semantic cache",
    "calls": "packing, single-flight",
}


def print_summary(summary: Summary, out_path: Path | None) -> None:
    title = f"run {terminal_safe(summary.run_id)}"
    if summary.simulated:
        title += "  [bold yellow](SIMULATED provider: costs are estimates, not real spend)[/]"
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row(
        "tasks ok / failed / rejected", f"{summary.ok} / {summary.failed} / {summary.rejected}"
    )
    table.add_row("cache hits", str(summary.cache_hits))
    table.add_row("provider calls", str(summary.provider_calls))
    table.add_row("tokens in / out", f"{summary.input_tokens:,} / {summary.output_tokens:,}")
    table.add_row(
        "cost",
        f"${summary.cost_usd:.6f}"
        + (f" (+{summary.unpriced} unpriced)" if summary.unpriced else ""),
    )
    table.add_row("sent one by one (same models)", f"${summary.naive_cost_usd:.6f}")
    table.add_row("saving against the same models", f"{summary.saving:.1%}")
    table.add_row(
        f"sent one by one ({summary.baseline_model})", f"${summary.baseline_cost_usd:.6f}"
    )
    table.add_row(f"saving against {summary.baseline_model}", f"{summary.baseline_saving:.1%}")
    for lever, saved in summary.saved_by.items():
        table.add_row(f"  saved by {LEVER_LABELS.get(lever, lever)}", f"${saved:.6f}")
    table.add_row("elapsed", f"{summary.elapsed_s:.1f}s")
    if out_path:
        table.add_row("results", terminal_safe(out_path))
    out.print(table)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from arq.connections import RedisSettings, create_pool

    from workers.recovery import release_dead_jobs

    out_path = Path(args.out) if args.out else default_out(args.file)
    check_paths(args.file, out_path)
    with Interrupts() as interrupts, attach(settings, hosts_worker=True) as attached:
        settings = attached.settings
        assert settings.redis_url
        redis = await create_pool(RedisSettings.from_dsn(settings.redis_url))
        try:
            embedded = attached.embedded
            if embedded is not None and embedded.adopted:
                _say(
                    f"reusing the Redis server (pid {embedded.pid}) an earlier run left running "
                    f"in {embedded.dir}"
                )
            if embedded is not None and not embedded.other_workers:
                # no other run is attached, so no worker of an earlier run is alive
                released = await release_dead_jobs(redis, settings.queue_name)
                if released:
                    _say(
                        f"an earlier run stopped with {released} batch(es) in progress; "
                        "running them again now"
                    )
            return await _run(args, out_path, settings, redis, interrupts)
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
    _say(f"run {run_id}: {args.file}")
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
            _say(
                f"interrupted: run {run_id} has {done} of {total} results; finishing the "
                f"batches in flight (up to {settings.worker_drain_s:g}s; signal again to stop "
                "now)"
            )
    finally:
        hurry = interrupts.again if interrupts.first.is_set() else interrupts.first
        await stop(worker, worker_task, settings.worker_drain_s, hurry=hurry)
        await pipeline.aclose()
    if interrupted:
        _say(
            f"run {run_id} stopped; its queued tasks resume with the next `batchwise run` (or "
            f"worker) on this state. Fetch its results with: batchwise results {run_id} --out "
            f"{out_path}"
        )
        return interrupts.exit_code
    return 0


async def _run_file(
    client: BatchwiseClient, args: argparse.Namespace, run_id: str, out_path: Path
) -> Submission:
    with _progress() as progress:
        submission = await _submit(client, args.file, args.strict, progress, run_id=run_id)
        await _wait_with_progress(client, submission.run_id, progress)
    _report_errors(submission)
    await write_results(client.pipeline.runs, submission.run_id, out_path)
    print_summary(await client.summary(submission.run_id), out_path)
    return submission


async def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    out_path = Path(args.out) if args.out else default_out(args.file)
    check_paths(args.file, out_path)
    client = await BatchwiseClient.connect(settings)  # pings: no progress bar before Redis answers
    try:
        with _progress() as progress:
            submission = await _submit(client, args.file, args.strict, progress)
            out.print(
                f"run {submission.run_id}: {submission.accepted} queued, "
                f"{submission.rejected} rejected"
            )
            if not args.wait:
                return 0
            await _wait_with_progress(client, submission.run_id, progress)
        _report_errors(submission)
        await write_results(client.pipeline.runs, submission.run_id, out_path)
        print_summary(await client.summary(submission.run_id), out_path)
    finally:
        await client.close()
    return 0


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
                err.print(f"{n} results written to {args.out}")
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
    return 3


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.lifecycle import serve

    if not settings.redis_url:
        raise ConfigError("REDIS_URL must be set for `batchwise worker`")
    # force: main() has already configured WARNING, which would hide the worker's INFO lines
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    redact_logs(secret_values(settings))
    asyncio.run(serve(settings))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batchwise", description="Cut the cost of LLM batch work.")
    p.add_argument("--config", type=Path, help="TOML settings file (default: ./batchwise.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job file end to end (embedded Redis unless REDIS_URL)")
    run.add_argument("file", type=Path)
    run.add_argument("--out", help="results file (default: FILE.results.jsonl)")
    run.add_argument("--strict", action="store_true", help="refuse the file if any line is bad")
    submit = sub.add_parser("submit", help="queue a job file on the shared Redis (REDIS_URL)")
    submit.add_argument("file", type=Path)
    submit.add_argument("--wait", action="store_true", help="wait for results and write them")
    submit.add_argument("--out", help="results file (with --wait)")
    submit.add_argument("--strict", action="store_true")
    sub.add_parser("worker", help="run a worker on the shared Redis (REDIS_URL)")
    results = sub.add_parser("results", help="print a run's results as JSONL")
    results.add_argument("run_id")
    results.add_argument("--out", help="write to this file instead of stdout")
    add_report_cli(sub)
    add_export_cli(sub)
    budget_cli.add_cli(sub)
    provider_cli.add_cli(sub)
    nightly.add_cli(sub)
    add_optimise_cli(sub)
    cache.add_cli(sub)
    add_serve_cli(sub)
    return p


def fail(message: str, settings: Settings | None) -> int:
    """Print `error: ...` (keys masked; data escaped, never read as markup); the exit code."""
    secrets = secret_values(settings) if settings else ()
    text = terminal_safe(redact(message, secrets), keep_lines=True)
    err.print(f"[red]error:[/red] {text}", highlight=False, soft_wrap=True)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings: Settings | None = None
    try:
        settings = load_settings(config_file=args.config)
        redact_logs(secret_values(settings))
        if args.command == "worker":
            return cmd_worker(args, settings)
        if handler := getattr(args, "handler", None):  # subcommands that register their own
            return int(asyncio.run(handler(args, settings)))
        command = {"run": cmd_run, "submit": cmd_submit, "results": cmd_results}[args.command]
        return asyncio.run(command(args, settings))
    except PipelineError as exc:
        return fail(str(exc), settings)
    except RedisConnectionError as exc:
        return fail(f"cannot reach Redis ({exc}); start it, or fix REDIS_URL", settings)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or exc}", settings)
    except KeyboardInterrupt:
        err.print("interrupted; queued work stays in Redis and resumes with the next worker")
        return 130


if __name__ == "__main__":
    sys.exit(main())
