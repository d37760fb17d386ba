"""`batchwise report`: the cost report as text tables, JSON or an HTML dashboard (reports.py)."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.cli.common import iso_day, usd_amount
from pipeline.config.settings import Settings
from pipeline.costs.reports import Report, build_report
from pipeline.keys import Keys
from pipeline.outfile import check_destination
from pipeline.state.opening import open_state
from pipeline.terminal import printable


def _money(value: Decimal | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.4f}" if abs(value) >= 1 else f"${value:.6f}"


def render_text(report: Report, *, top: int = 10) -> str:
    """The report as plain text tables, for a terminal or an email."""
    lines: list[str] = []
    period = f"{report.since or 'start'} .. {report.until or 'now'}"
    lines.append(f"Cost report {period} (UTC)")
    if report.simulated_calls:
        lines.append(
            f"  SIMULATED provider: {report.simulated_calls:,} of {report.calls:,} calls; "
            "their costs are estimates, not real spend"
        )
    lines.append(
        f"  spend {_money(report.cost_usd)} over {report.calls:,} calls "
        f"({report.errors} failed, {report.unpriced_calls} unpriced), {report.tasks:,} tasks"
    )
    lines.append(
        f"  tokens in {report.input_tokens:,} (cached {report.cached_input_tokens:,}) "
        f"out {report.output_tokens:,}; mean latency {report.mean_latency_ms:.0f} ms"
    )
    lines.append(f"  unit cost {_money(report.unit_cost_usd)} per task")
    if report.revenue_usd is not None:
        ratio = report.cost_revenue_ratio
        margin = report.gross_margin
        lines.append(
            f"  revenue {_money(report.revenue_usd)}: cost/revenue "
            f"{'-' if ratio is None else f'{ratio:.1%}'}, gross margin "
            f"{'-' if margin is None else f'{margin:.1%}'}"
        )
    baseline = report.baseline_model or "the models asked for"
    lines.append(
        f"  saved {_money(report.saved_usd)} against {_money(report.naive_cost_usd)} "
        f"(every task alone on {baseline}); cache hit rate {report.cache_hit_rate:.1%}"
    )
    lines.append(
        f"  saved {_money(report.same_models_cost_usd - report.cost_usd)} against "
        f"{_money(report.same_models_cost_usd)} (every task alone on the model that answered)"
    )
    for s in report.savings:
        if s.tasks or s.saved_usd:
            lines.append(f"    {s.lever:<14} {_money(s.saved_usd):>14}  {s.tasks:,} tasks")
    if report.peak_hour_of_day is not None:
        lines.append(
            f"  peak hour of day {report.peak_hour_of_day:02d}:00 UTC "
            f"({_money(report.peak_hour_of_day_cost_usd)}); busiest hour {report.peak_hour} "
            f"({_money(report.peak_hour_cost_usd)})"
        )
    lines.append(f"  top 20% of users: {report.top20_users_share:.1%} of spend")
    lines.append("")
    lines.append("Daily")
    for d in report.daily:
        models = ", ".join(f"{m} {_money(c)}" for m, c in list(d.by_model.items())[:3])
        lines.append(f"  {d.day}  {_money(d.cost_usd):>14}  {d.calls:>8,} calls  {models}")
    for title, rows in (
        ("By tenant", report.by_tenant),
        ("By model", report.by_model),
        ("By endpoint", report.by_endpoint),
        ("By user", report.by_user),
        ("Top cost drivers (model @ endpoint)", report.top_drivers),
    ):
        lines.append("")
        lines.append(title + (f" (top {top} of {len(rows)})" if len(rows) > top else ""))
        for r in rows[:top]:
            lines.append(f"  {r.name[:40]:<40} {_money(r.cost_usd):>14} {r.share:>7.1%}")
    if report.anomalies:
        lines.append("")
        lines.append("Anomalies")
        lines += [f"  {a.describe()}" for a in report.anomalies]
    return "\n".join(lines)


def add_cli(subparsers: Any) -> None:
    """Register `batchwise report`."""
    p = subparsers.add_parser("report", help="cost report from the ledger (text, JSON or HTML)")
    p.add_argument("--since", type=iso_day, help="first day, YYYY-MM-DD (UTC; default: the first)")
    p.add_argument("--until", type=iso_day, help="last day, YYYY-MM-DD (UTC; default: the last)")
    p.add_argument("--revenue", type=usd_amount, help="revenue in USD over the period")
    p.add_argument("--top", type=int, default=10, help="rows per breakdown (default 10)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", type=Path, help="also write a self-contained HTML dashboard")
    p.set_defaults(handler=cmd_report)


async def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """`batchwise report`: print the report; write the dashboard with --html."""
    import orjson

    from pipeline.costs.dashboard import write_html

    if args.html:
        check_destination(args.html)
    async with open_state(settings, require_data=True) as redis:
        report = await build_report(
            redis,
            Keys(settings.key_prefix),
            since=args.since,
            until=args.until,
            revenue_usd=args.revenue,
            top=args.top,
            sigma_warning=settings.anomaly_sigma_warning,
            sigma_critical=settings.anomaly_sigma_critical,
            baseline_model=settings.baseline_model,
        )
    if args.json:
        print(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(printable(render_text(report, top=args.top), keep_lines=True))
    if args.html:
        write_html(report, args.html)
        print(printable(f"dashboard written to {args.html}"))
    return 0
