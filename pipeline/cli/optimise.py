"""The routing-and-optimisation commands: `batchwise plan` (the lever table and its rendering),
`selfhost` (API against self-hosted GPUs) and `audit`."""

from __future__ import annotations

import argparse
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from pipeline.config.settings import Settings
from pipeline.costs.prices import PriceTable
from pipeline.keys import Keys
from pipeline.packing.audit import TaskTypeAudit, audit_report
from pipeline.routing import selfhost
from pipeline.routing.estimate import Plan, by_type, plan_file
from pipeline.state.opening import open_state
from pipeline.terminal import terminal_safe

TOKEN_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def add_cli(subparsers: Any) -> None:
    """Register `plan`, `selfhost` and `audit`."""
    _add_plan_cli(subparsers)
    _add_selfhost_cli(subparsers)
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


def parse_tokens(text: str) -> float:
    """`500M`, `2.5B`, `1e9` or a plain number of tokens."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMbBgGtT]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r} (e.g. 500M, 2B)")
    try:
        return float(match.group(1)) * TOKEN_SUFFIX[match.group(2).lower()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r}") from None


def _add_selfhost_cli(subparsers: Any) -> None:
    """Register `batchwise selfhost`."""
    p = subparsers.add_parser("selfhost", help="API vs self-hosted GPU cost for a monthly volume")
    p.add_argument("tokens", type=parse_tokens, help="tokens a month, e.g. 500M or 2B")
    p.add_argument("--model", default="gpt-4o-mini", help="API model to compare with")
    p.add_argument("--api-usd-per-mtok", type=float, help="blended API price (overrides --model)")
    p.add_argument("--batch-api", action="store_true", help="price the API at batch-API rates")
    p.add_argument("--output-share", type=float, default=0.25, help="share of output tokens")
    p.add_argument("--gpu-usd-per-hour", type=float, default=2.5)
    p.add_argument("--throughput", type=float, default=2500.0, help="tokens/s per GPU")
    p.add_argument("--utilisation", type=float, default=0.5, help="0-1, average GPU busy share")
    p.add_argument("--fixed-usd-per-month", type=float, default=2000.0, help="ops overhead")
    p.add_argument("--min-gpus", type=int, default=1)
    p.set_defaults(handler=cmd_selfhost)


async def cmd_selfhost(args: argparse.Namespace, settings: Settings) -> int:
    """Handler of `batchwise selfhost`."""
    price = args.api_usd_per_mtok
    label = f"{price} $/Mtok"
    if price is None:
        price = selfhost.blended_usd_per_mtok(
            PriceTable(settings.prices), args.model, args.output_share, batch_api=args.batch_api
        )
        label = f"{args.model}{' batch API' if args.batch_api else ''}, ${price:.3f}/Mtok blended"
    report = selfhost.compare(
        selfhost.SelfHostInputs(
            tokens_per_month=args.tokens,
            output_share=args.output_share,
            api_usd_per_mtok=price,
            gpu_usd_per_hour=args.gpu_usd_per_hour,
            throughput_tokens_per_s=args.throughput,
            utilisation=args.utilisation,
            fixed_usd_per_month=args.fixed_usd_per_month,
            min_gpus=args.min_gpus,
        )
    )
    inputs = report.inputs
    table = Table(
        title=f"{selfhost.tokens_text(inputs.tokens_per_month)} tokens a month", show_header=False
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row(f"API ({label})", f"${report.api_usd:,.2f} / month")
    table.add_row(
        f"self-hosted ({report.gpus} GPU x ${inputs.gpu_usd_per_hour}/h, "
        f"+${inputs.fixed_usd_per_month:,.0f} fixed)",
        f"${report.selfhost_usd:,.2f} / month",
    )
    table.add_row(
        "GPU capacity",
        f"{selfhost.tokens_text(inputs.gpu_capacity_tokens)} tokens/month each "
        f"({inputs.throughput_tokens_per_s:,.0f} tok/s at {inputs.utilisation:.0%})",
    )
    table.add_row(
        "break-even volume",
        "never"
        if report.break_even_tokens is None
        else f"{selfhost.tokens_text(report.break_even_tokens)}",
    )
    table.add_row("recommendation", report.recommendation)
    Console().print(table)
    return 0
