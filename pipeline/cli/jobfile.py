"""A job file's way through `batchwise run` and `batchwise submit`: its paths checked before any
work, the progress bars, and at the end the lines refused, the results file and the summary."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.cli.common import err, out
from pipeline.cli.results import write_results
from pipeline.core.client import BatchwiseClient, Submission
from pipeline.core.intake import check_job_file
from pipeline.core.summary import Summary
from pipeline.outfile import check_destination
from pipeline.terminal import printable, terminal_safe

LEVER_LABELS = {
    "cache": "exact cache",
    "semantic_cache": "semantic cache",
    "calls": "packing, single-flight",
}


def results_path(job_file: Path, out: str | None) -> Path:
    """Where the results go (`--out`, else FILE.results.jsonl), once a missing job file or an
    unwritable results path has been refused, before any work starts."""
    out_path = (
        Path(out)
        if out
        else job_file.with_name(job_file.name.removesuffix(".jsonl") + ".results.jsonl")
    )
    check_job_file(job_file)
    check_destination(out_path)
    return out_path


def count_lines(path: Path) -> int:
    """Fast newline count, for the progress bar's total."""
    total = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            total += block.count(b"\n")
    return total


def progress_bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


async def submit_file(
    client: BatchwiseClient, path: Path, strict: bool, progress: Progress, run_id: str | None = None
) -> Submission:
    """Queue the file with a bar counting its lines."""
    bar = progress.add_task("submitted", total=count_lines(path))
    submission = await client.submit_file(
        path,
        strict=strict,
        run_id=run_id,
        on_progress=lambda n: progress.update(bar, completed=n),
    )
    progress.update(bar, completed=submission.total, total=submission.total)
    return submission


async def wait_for_results(client: BatchwiseClient, run_id: str, progress: Progress) -> None:
    """Until every task of the run has its result, with a bar counting them."""
    now = await client.progress(run_id)  # waits through a Redis outage, or says what to do
    bar = progress.add_task("results  ", total=now.total, completed=now.done)
    while True:
        now = await client.progress(run_id)
        progress.update(bar, completed=now.done, total=now.total)
        if now.complete:
            return
        await asyncio.sleep(0.1)


async def finish(client: BatchwiseClient, submission: Submission, out_path: Path) -> None:
    """A run whose results are all in: the lines refused, the results file, the summary."""
    report_errors(submission)
    await write_results(client.pipeline.runs, submission.run_id, out_path)
    print_summary(await client.summary(submission.run_id), out_path)


def report_errors(submission: Submission) -> None:
    if not submission.errors:
        return
    err.print(f"[yellow]{len(submission.errors)} invalid line(s) were rejected:[/yellow]")
    for error in submission.errors[:20]:
        err.print(f"  {printable(error)}", markup=False, highlight=False, soft_wrap=True)
    if len(submission.errors) > 20:
        err.print(f"  ... and {len(submission.errors) - 20} more (see the results file)")


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
