"""The routing-and-optimisation commands: `batchwise plan` (the lever table and its rendering),
`selfhost` and `audit`."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from pipeline.config.settings import Settings
from pipeline.keys import Keys
from pipeline.packing.audit import TaskTypeAudit, audit_report
from pipeline.routing import selfhost
from pipeline.routing.estimate import Plan, by_type, plan_file
from pipeline.state.opening import open_state
from pipeline.terminal import terminal_safe


def add_cli(subparsers: Any) -> None:
    """Register this issue's subcommands; each sets an async `handler(args, settings) -> int`."""
    _add_plan_cli(subparsers)
    selfhost.add_cli(subparsers)
    p = subparsers.add_parser(
        "audit", help="packing-audit agreement per task type and batch size, and limit changes"
    )
    p.set_defaults(handler=cmd_audit)


async def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """Handler of `batchwise audit`: reads REDIS_URL, else the embedded Redis of the state dir."""
    return await _audit(settings)


async def _audit(settings: Settings) -> int:
    async with open_state(settings) as redis:
        rows, events = await audit_report(redis, Keys(settings.key_prefix), settings)
    console = Console()
    if rows:
        console.print(_audit_table(rows))
    else:
        console.print("no audits yet: set audit_share (BATCHWISE_AUDIT_SHARE) above 0")
    for event in events:
        console.print(
            f"{event['task_type']}: max batch size {event['from_items']} → {event['to_items']} "
            f"(agreement {event['agreement']:.1%} over {event['samples']} audits, "
            f"threshold {event['threshold']:.0%})",
            highlight=False,
        )
    return 0


def _audit_table(rows: list[TaskTypeAudit]) -> Table:
    table = Table(title="packing audit: packed answers against the same tasks sent alone")
    for name in ("task type", "max items (config → now)", "batch size", "audits", "agreement"):
        table.add_column(name, justify="left" if name == "task type" else "right")
    for row in rows:
        limit = f"{row.configured_max} → {row.current_max}"
        if not row.by_size:
            table.add_row(row.task_type, limit, "", "0", "")
        for i, (size, (n, mean)) in enumerate(sorted(row.by_size.items())):
            table.add_row(
                row.task_type if i == 0 else "",
                limit if i == 0 else "",
                str(size),
                str(n),
                f"{mean:.1%}",
            )
    return table


def render(plan: Plan, console: Console) -> None:
    """Print the lever table, its legend and notes."""
    naive = plan.naive_usd
    source = terminal_safe(plan.source)
    table = Table(title=f"plan for {source}: {plan.tasks} tasks (no model was called)")
    table.add_column("lever", no_wrap=True)
    for name in ("calls", "tokens in", "tokens out", "cost", "vs naive", "this lever"):
        table.add_column(name, justify="right")
    previous: Decimal | None = None
    for lever in plan.levers:
        unpriced = f" (+{lever.unpriced_calls} unpriced)" if lever.unpriced_calls else ""
        table.add_row(
            lever.name,
            f"{len(lever.calls):,}",
            f"{lever.input_tokens:,}",
            f"{lever.output_tokens:,}",
            f"${lever.cost_usd:.6f}{unpriced}",
            f"{lever.cost_usd / naive - 1:+.1%}" if naive else "",
            f"{lever.cost_usd / previous - 1:+.1%}" if previous else "",
        )
        previous = lever.cost_usd
    console.print(table)
    for lever in plan.levers:
        console.print(f"  {lever.name}: {lever.description}", highlight=False)
    console.print(
        f"expected cost of `batchwise run`: ${plan.run_estimate_usd:.6f} "
        f"(naive ${naive:.6f}, {plan.run_estimate_usd / naive - 1:+.1%})"
        if naive
        else "nothing to run",
        highlight=False,
    )
    if plan.invalid or plan.rejected:
        console.print(
            f"{plan.invalid} invalid line(s) and {plan.rejected} unroutable task(s) left out",
            highlight=False,
        )
    if plan.tokens_saved_by_compression:
        total = sum(plan.tokens_saved_by_compression.values())
        console.print(
            f"compression saves {total:,} prompt tokens over "
            f"{len(plan.tokens_saved_by_compression)} task(s) sent alone",
            highlight=False,
        )
    if plan.prompt_cache_tokens:
        console.print(
            f"provider prompt caches could read {plan.prompt_cache_tokens:,} repeated system "
            f"tokens, saving about ${plan.prompt_cache_saving_usd:.6f} more (not in the table; "
            "the simulated provider does not cache)",
            highlight=False,
        )
    console.print(
        "output lengths follow the simulated provider's length model; "
        "cascades are costed as if nothing escalates",
        highlight=False,
    )


def render_by_type(plan: Plan, console: Console) -> None:
    """Print where packing pays: each task type's cost alone and packed."""
    table = Table(title="by task type: routed models, alone and packed")
    table.add_column("task type", no_wrap=True)
    for name in ("items", "calls alone", "cost alone", "calls packed", "cost packed", "packing"):
        table.add_column(name, justify="right")
    for task_type, row in sorted(by_type(plan).items()):
        alone, packed = row["routing_usd"], row["packing_usd"]
        table.add_row(
            task_type,
            f"{row['items']:,}",
            f"{row['routing_calls']:,}",
            f"${alone:.4f}",
            f"{row['packing_calls']:,}",
            f"${packed:.4f}",
            f"{packed / alone - 1:+.1%}" if alone else "",
        )
    console.print(table)


def _add_plan_cli(subparsers: Any) -> None:
    """Register `batchwise plan FILE`."""
    p = subparsers.add_parser("plan", help="estimate a job file's cost per lever, calling nothing")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument(
        "--per-task", action="store_true", help="list prompt tokens saved per task (compression)"
    )
    p.add_argument(
        "--by-type", action="store_true", help="cost per task type with and without packing"
    )
    p.set_defaults(handler=cmd_plan)


async def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    """Handler of `batchwise plan`."""
    plan = await plan_file(args.file, settings)
    console = Console()
    if args.json:
        console.out(orjson.dumps(plan.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return 0
    render(plan, console)
    if args.by_type:
        render_by_type(plan, console)
    if args.per_task:
        for task_id, saved in plan.tokens_saved_by_compression.items():
            console.print(
                f"  {terminal_safe(task_id)}: {saved} prompt tokens saved", highlight=False
            )
    return 0
