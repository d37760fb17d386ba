"""`batchwise budget status | set | close-breaker`: the operator's view of budgets and breakers."""

from __future__ import annotations

import argparse
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from pipeline.config.settings import Settings
from pipeline.core.wiring import Pipeline
from pipeline.costs.money import usd
from pipeline.errors import ConfigError
from pipeline.state.opening import open_state
from pipeline.terminal import terminal_safe

out = Console()


def _usd(text: str) -> Decimal | None:
    if text.lower() in ("none", "off", "unlimited"):
        return None
    try:
        value = Decimal(text.lstrip("$"))
    except InvalidOperation:
        raise ConfigError(f"not an amount in USD: {text!r} (use e.g. 12.50, or none)") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"an amount must be a finite, non-negative number: {text!r}")
    return value


def add_cli(subparsers: Any) -> None:
    """Register `batchwise budget ...` on the main parser's subparsers."""
    budget = subparsers.add_parser("budget", help="budgets, plans and cost breakers")
    budget.set_defaults(handler=cmd_budget)
    sub = budget.add_subparsers(
        dest="budget_command", required=True, metavar="{status,set,close-breaker}"
    )
    status = sub.add_parser("status", help="pace, projection, state and open breakers")
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    setter = sub.add_parser("set", help="override a budget, a breaker limit or a plan in Redis")
    what = setter.add_subparsers(dest="what", required=True, metavar="{monthly,limit,plan}")
    monthly = what.add_parser("monthly", help="the monthly budget: USD or none")
    monthly.add_argument("amount")
    limit = what.add_parser("limit", help="a breaker limit: SCOPE hourly|daily USD|none")
    limit.add_argument("scope", help="global, tenant (every tenant's default) or tenant:NAME")
    limit.add_argument("window", choices=("hourly", "daily"))
    limit.add_argument("amount")
    plan = what.add_parser("plan", help="the plan of a user or tenant: SUBJECT PLAN|none")
    plan.add_argument("subject", help="user:ID or tenant:NAME")
    plan.add_argument("plan")
    close = sub.add_parser("close-breaker", help="close an open breaker now: SCOPE")
    close.add_argument("scope", help="global or tenant:NAME")


async def cmd_budget(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `batchwise budget` command against the state (REDIS_URL or the embedded one)."""
    async with open_state(settings) as redis:
        return await _budget(args, Pipeline(settings, redis))


async def _budget(args: argparse.Namespace, pipeline: Pipeline) -> int:
    try:
        if args.budget_command == "status":
            report = await status_report(pipeline)
            if args.json:
                out.print_json(orjson.dumps(report).decode())
            else:
                print_status(report)
        elif args.budget_command == "close-breaker":
            closed = await pipeline.budgets.close_breaker(args.scope)
            state = "closed" if closed else "was not open"
            out.print(f"breaker {terminal_safe(args.scope)}: {state}")
        else:
            await _set(pipeline, args)
    finally:
        await pipeline.aclose()
    return 0


async def _set(pipeline: Pipeline, args: argparse.Namespace) -> None:
    budgets = pipeline.budgets
    if args.what == "monthly":
        amount = _usd(args.amount)
        await budgets.monthly.set_budget(amount)
        out.print(f"monthly budget: {'none' if amount is None else f'${amount}'}")
    elif args.what == "limit":
        amount = _usd(args.amount)
        if not (args.scope in ("global", "tenant") or args.scope.startswith("tenant:")):
            raise ConfigError(f"scope must be global, tenant or tenant:NAME, not {args.scope!r}")
        await budgets.set_limit(args.scope, args.window, amount)
        shown = "none" if amount is None else f"${amount}"
        out.print(f"breaker {terminal_safe(args.scope)} {args.window} limit: {shown}")
    else:
        if not args.subject.startswith(("user:", "tenant:")):
            raise ConfigError(f"subject must be user:ID or tenant:NAME, not {args.subject!r}")
        name = None if args.plan.lower() == "none" else args.plan
        plans = pipeline.admission.plans
        if name is not None and name not in plans:
            raise ConfigError(f"unknown plan {name!r}; defined: {sorted(plans)}")
        await pipeline.admission.plan_store.assign(args.subject, name)
        out.print(f"{terminal_safe(args.subject)}: plan {terminal_safe(name or '(settings)')}")


async def status_report(pipeline: Pipeline) -> dict[str, Any]:
    """Everything `budget status` shows, as plain JSON-ready data."""
    budgets = pipeline.budgets
    pace = await budgets.monthly.pace(budgets.clock())
    breakers = []
    for scope in await budgets.scopes():
        lim = await budgets.limits(scope)
        spent = await budgets.window_spend(scope)
        breakers.append(
            {
                "scope": scope,
                **{f"{w}_limit_usd": None if v is None else str(usd(v)) for w, v in lim.items()},
                **{f"{w}_spent_usd": str(spent[f"{w}_settled"]) for w in lim},
                **{f"{w}_in_flight_usd": str(spent[w] - spent[f"{w}_settled"]) for w in lim},
            }
        )
    return {
        "pace": pace.as_dict(),
        "policy": pipeline.settings.breaker_policy,
        "breakers": breakers,
        "open_breakers": [
            {
                **b.__dict__,
                "limit_usd": str(b.limit_usd),
                "used_usd": str(b.used_usd),
                "wanted_usd": str(b.wanted_usd),
            }
            for b in await budgets.open_breakers()
        ],
        "degraded": await pipeline.admission.degraded_counts(),
        "plans": {
            "default": pipeline.settings.plan_default,
            "assignments": {
                **pipeline.settings.plan_assignments,
                **await pipeline.admission.plan_store.overrides(),
            },
        },
    }


def print_status(report: dict[str, Any]) -> None:
    pace = report["pace"]
    table = Table(title=f"budget {pace['month']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("status", pace["status"])
    table.add_row("budget", "none" if pace["budget_usd"] is None else f"${pace['budget_usd']}")
    used = "" if pace["used_pct"] is None else f" ({pace['used_pct']:.1f}%)"
    table.add_row("spent", f"${pace['spent_usd']}{used}")
    table.add_row("expected to date", f"${pace['expected_usd']}")
    table.add_row("pace", "-" if pace["ratio"] is None else f"{pace['ratio']:.2f}x")
    table.add_row("projected month end", f"${pace['projected_usd']}")
    table.add_row("day of month", f"{pace['elapsed_days']:.1f} of {pace['month_days']}")
    degraded = report["degraded"]
    table.add_row("tasks moved to a cheaper tier", degraded.get("total", "0"))
    out.print(table)
    for action in pace["actions"]:
        out.print(f"  - {terminal_safe(action)}", highlight=False)
    breakers = Table(title=f"cost breakers (policy: {report['policy']})")
    for column in ("scope", "hour spent / limit", "day spent / limit", "state"):
        breakers.add_column(column)
    open_by_scope = {b["scope"]: b for b in report["open_breakers"]}
    for b in report["breakers"]:
        state = "closed"
        if (info := open_by_scope.get(b["scope"])) is not None:
            until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info["until"]))
            state = f"OPEN ({info['window']} limit) until {until}"
        breakers.add_row(
            terminal_safe(b["scope"]),
            _window(b, "hourly"),
            _window(b, "daily"),
            state,
        )
    out.print(breakers)
    plans = report["plans"]
    assigned = ", ".join(terminal_safe(f"{k}={v}") for k, v in sorted(plans["assignments"].items()))
    out.print(
        f"plans: default {plans['default'] or '(none: unlimited)'}; {assigned or 'no assignments'}"
    )


def _limit(value: str | None) -> str:
    return "none" if value is None else f"${value}"


def _window(b: dict[str, Any], window: str) -> str:
    text = f"${b[f'{window}_spent_usd']}"
    if Decimal(b[f"{window}_in_flight_usd"]):
        text += f" (+${b[f'{window}_in_flight_usd']} in flight)"
    return f"{text} / {_limit(b[f'{window}_limit_usd'])}"
