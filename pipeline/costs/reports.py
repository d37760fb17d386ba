"""Cost reports from the ledger's rollups: where the money went, and what was saved.

    report = await build_report(redis, keys, since=date(2026, 11, 1), revenue_usd=Decimal(500))
    print(render_text(report))  # pipeline/cli/report.py: text tables, `batchwise report`

A report reads one rollup hash per day and one per hour of its period (`period.py`), never
the records themselves, so it takes the same time over ten records or ten million. Days and
hours are UTC. Money is exact (`Decimal` USD) until it is rendered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from pipeline.costs.anomalies import detect
from pipeline.costs.money import NANO, usd
from pipeline.costs.period import Rollups, load_rollups
from pipeline.costs.rollup import merge, parse_field
from pipeline.keys import Keys
from pipeline.models import LEVERS

DIMENSIONS = {"m": "model", "p": "provider", "t": "tenant", "e": "endpoint", "u": "user"}


@dataclass(frozen=True)
class Row:
    """One line of a breakdown: a name and what it cost."""

    name: str
    cost_usd: Decimal
    share: float
    calls: int = 0
    items: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Day:
    day: date
    cost_usd: Decimal
    calls: int
    items: int
    by_model: dict[str, Decimal]
    cache_hits: int = 0
    answered: int = 0
    saved_usd: Decimal = Decimal(0)


@dataclass(frozen=True)
class LeverSaving:
    lever: str
    saved_usd: Decimal
    tasks: int


@dataclass
class Report:
    """Every figure `batchwise report` shows; `to_dict()` gives it as JSON-ready data."""

    since: date | None
    until: date | None
    cost_usd: Decimal = Decimal(0)
    calls: int = 0
    errors: int = 0
    unpriced_calls: int = 0
    simulated_calls: int = 0
    items: int = 0
    tasks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    mean_latency_ms: float = 0.0
    daily: list[Day] = field(default_factory=list)
    by_model: list[Row] = field(default_factory=list)
    by_provider: list[Row] = field(default_factory=list)
    by_tenant: list[Row] = field(default_factory=list)
    by_endpoint: list[Row] = field(default_factory=list)
    by_user: list[Row] = field(default_factory=list)
    top_drivers: list[Row] = field(default_factory=list)
    top20_users_share: float = 0.0
    peak_hour_of_day: int | None = None
    peak_hour_of_day_cost_usd: Decimal = Decimal(0)
    peak_hour: str | None = None
    peak_hour_cost_usd: Decimal = Decimal(0)
    hourly_profile: list[Decimal] = field(default_factory=lambda: [Decimal(0)] * 24)
    savings: list[LeverSaving] = field(default_factory=list)
    cache_hits: int = 0
    revenue_usd: Decimal | None = None
    anomalies: list[Any] = field(default_factory=list)
    baseline_model: str = ""

    @property
    def saved_usd(self) -> Decimal:
        """The saving against the baseline: every lever's."""
        return sum((s.saved_usd for s in self.savings), Decimal(0))

    @property
    def naive_cost_usd(self) -> Decimal:
        """What the same work would have cost with every task alone on its baseline model (the
        model it named, else `baseline_model`)."""
        return self.cost_usd + self.saved_usd

    @property
    def same_models_cost_usd(self) -> Decimal:
        """What the same work would have cost with every task alone on the model that answered."""
        routing = sum((s.saved_usd for s in self.savings if s.lever == "routing"), Decimal(0))
        return self.naive_cost_usd - routing

    @property
    def cache_hit_rate(self) -> float:
        answered = next((s.tasks for s in self.savings if s.lever == "packing"), 0)
        total = self.cache_hits + answered
        return self.cache_hits / total if total else 0.0

    @property
    def unit_cost_usd(self) -> Decimal | None:
        """Cost per task served (by a call or from cache)."""
        return self.cost_usd / self.tasks if self.tasks else None

    @property
    def cost_revenue_ratio(self) -> float | None:
        if not self.revenue_usd:
            return None
        return float(self.cost_usd / self.revenue_usd)

    @property
    def gross_margin(self) -> float | None:
        if not self.revenue_usd:
            return None
        return float((self.revenue_usd - self.cost_usd) / self.revenue_usd)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data (money as strings of exact USD)."""

        def rows(items: Iterable[Row]) -> list[dict[str, Any]]:
            return [
                {
                    "name": r.name,
                    "cost_usd": str(r.cost_usd),
                    "share": round(r.share, 6),
                    "calls": r.calls,
                    "items": r.items,
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                }
                for r in items
            ]

        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "cost_usd": str(self.cost_usd),
            "calls": self.calls,
            "errors": self.errors,
            "unpriced_calls": self.unpriced_calls,
            "simulated_calls": self.simulated_calls,
            "items": self.items,
            "tasks": self.tasks,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "mean_latency_ms": round(self.mean_latency_ms, 1),
            "daily": [
                {
                    "day": d.day.isoformat(),
                    "cost_usd": str(d.cost_usd),
                    "calls": d.calls,
                    "items": d.items,
                    "by_model": {k: str(v) for k, v in d.by_model.items()},
                    "cache_hits": d.cache_hits,
                    "answered": d.answered,
                    "saved_usd": str(d.saved_usd),
                }
                for d in self.daily
            ],
            "by_model": rows(self.by_model),
            "by_provider": rows(self.by_provider),
            "by_tenant": rows(self.by_tenant),
            "by_endpoint": rows(self.by_endpoint),
            "by_user": rows(self.by_user),
            "top_drivers": rows(self.top_drivers),
            "top20_users_share": round(self.top20_users_share, 6),
            "peak_hour_of_day": self.peak_hour_of_day,
            "peak_hour_of_day_cost_usd": str(self.peak_hour_of_day_cost_usd),
            "peak_hour": self.peak_hour,
            "peak_hour_cost_usd": str(self.peak_hour_cost_usd),
            "unit_cost_usd": None if self.unit_cost_usd is None else str(self.unit_cost_usd),
            "revenue_usd": None if self.revenue_usd is None else str(self.revenue_usd),
            "cost_revenue_ratio": self.cost_revenue_ratio,
            "gross_margin": self.gross_margin,
            "savings": [
                {"lever": s.lever, "saved_usd": str(s.saved_usd), "tasks": s.tasks}
                for s in self.savings
            ],
            "saved_usd": str(self.saved_usd),
            "naive_cost_usd": str(self.naive_cost_usd),
            "baseline_model": self.baseline_model,
            "same_models_cost_usd": str(self.same_models_cost_usd),
            "cache_hits": self.cache_hits,
            "cache_hit_rate": round(self.cache_hit_rate, 6),
            "anomalies": [a.to_dict() for a in self.anomalies],
        }


def _breakdown(totals: dict[str, int], dim: str, cost_total: int) -> list[Row]:
    found: dict[str, dict[str, int]] = {}
    for name, value in totals.items():
        parts = parse_field(name)
        if len(parts) == 3 and parts[1] == dim:
            found.setdefault(parts[2], {})[parts[0]] = value
    rows = [
        Row(
            name=name or "(none)",
            cost_usd=usd(m.get("cost", 0)),
            share=m.get("cost", 0) / cost_total if cost_total else 0.0,
            calls=m.get("calls", 0),
            items=m.get("items", 0),
            input_tokens=m.get("in", 0),
            output_tokens=m.get("out", 0),
        )
        for name, m in found.items()
    ]
    rows.sort(key=lambda r: (-r.cost_usd, r.name))
    return rows


def top_share(costs: list[int], fraction: float = 0.2) -> float:
    """The share of the total held by the top `fraction` of entries (at least one)."""
    total = sum(costs)
    if not costs or total <= 0:
        return 0.0
    top = max(1, math.ceil(len(costs) * fraction))
    return sum(sorted(costs, reverse=True)[:top]) / total


def summarise(
    rollups: Rollups,
    *,
    since: date | None = None,
    until: date | None = None,
    revenue_usd: Decimal | None = None,
    top: int = 10,
) -> Report:
    """Build a report from loaded rollups (no I/O)."""
    totals: dict[str, int] = {}
    for fields in rollups.days.values():
        merge(totals, fields.items())
    cost = totals.get("cost", 0)
    report = Report(since=since, until=until, revenue_usd=revenue_usd)
    report.cost_usd = usd(cost)
    report.calls = totals.get("calls", 0)
    report.errors = totals.get("errors", 0)
    report.unpriced_calls = totals.get("unpriced", 0)
    report.simulated_calls = totals.get("simulated", 0)
    report.items = totals.get("items", 0)
    report.input_tokens = totals.get("in", 0)
    report.output_tokens = totals.get("out", 0)
    report.cached_input_tokens = totals.get("cached_in", 0)
    ok_calls = report.calls - report.errors
    report.mean_latency_ms = totals.get("latency_ms", 0) / ok_calls if ok_calls > 0 else 0.0
    report.daily = [_day(day_name, fields) for day_name, fields in sorted(rollups.days.items())]
    report.by_model = _breakdown(totals, "m", cost)
    report.by_provider = _breakdown(totals, "p", cost)
    report.by_tenant = _breakdown(totals, "t", cost)
    report.by_endpoint = _breakdown(totals, "e", cost)
    report.by_user = _breakdown(totals, "u", cost)
    report.top20_users_share = top_share([int(r.cost_usd * NANO) for r in report.by_user])
    report.top_drivers = _drivers(totals, cost)[:top]
    _peaks(report, rollups.hours)
    report.savings = [
        LeverSaving(
            lever, usd(totals.get(f"saved\x1f{lever}", 0)), totals.get(f"tasks\x1f{lever}", 0)
        )
        for lever in LEVERS
    ]
    report.cache_hits = totals.get("tasks\x1fcache", 0) + totals.get("tasks\x1fsemantic_cache", 0)
    answered = totals.get("tasks\x1fpacking", 0)
    report.tasks = answered + report.cache_hits if answered or report.cache_hits else report.items
    return report


def _day(day_name: str, fields: dict[str, int]) -> Day:
    """One day's line of the report, from its rollup hash."""
    by_model = {
        parts[2]: usd(v)
        for name, v in fields.items()
        if len(parts := parse_field(name)) == 3 and parts[:2] == ("cost", "m")
    }
    return Day(
        day=datetime.strptime(day_name, "%Y%m%d").date(),
        cost_usd=usd(fields.get("cost", 0)),
        calls=fields.get("calls", 0),
        items=fields.get("items", 0),
        by_model=dict(sorted(by_model.items(), key=lambda kv: (-kv[1], kv[0]))),
        cache_hits=fields.get("tasks\x1fcache", 0) + fields.get("tasks\x1fsemantic_cache", 0),
        answered=fields.get("tasks\x1fpacking", 0),
        saved_usd=usd(sum(fields.get(f"saved\x1f{lever}", 0) for lever in LEVERS)),
    )


def _drivers(totals: dict[str, int], cost: int) -> list[Row]:
    """Spend per model and endpoint pair, the largest first."""
    drivers: list[Row] = []
    for name, value in totals.items():
        parts = parse_field(name)
        if len(parts) == 5 and parts[0] == "cost" and parts[1] == "m" and parts[3] == "e":
            label = f"{parts[2]} @ {parts[4] or '(no endpoint)'}"
            drivers.append(Row(label, usd(value), value / cost if cost else 0.0))
    drivers.sort(key=lambda r: (-r.cost_usd, r.name))
    return drivers


def _peaks(report: Report, hours: dict[str, dict[str, int]]) -> None:
    """The hour-of-day profile, its peak, and the costliest single hour of the period."""
    per_hour = [0] * 24
    best: tuple[int, str] | None = None
    for hour, fields in hours.items():
        spent = fields.get("cost", 0)
        per_hour[int(hour[8:10])] += spent
        if best is None or spent > best[0]:
            best = (spent, hour)
    report.hourly_profile = [usd(v) for v in per_hour]
    if any(per_hour):
        report.peak_hour_of_day = max(range(24), key=lambda h: per_hour[h])
        report.peak_hour_of_day_cost_usd = usd(per_hour[report.peak_hour_of_day])
    if best is not None and best[0] > 0:
        h = best[1]
        report.peak_hour = f"{h[:4]}-{h[4:6]}-{h[6:8]} {h[8:10]}:00 UTC"
        report.peak_hour_cost_usd = usd(best[0])


async def build_report(
    redis: Redis,
    keys: Keys,
    *,
    since: date | None = None,
    until: date | None = None,
    revenue_usd: Decimal | None = None,
    top: int = 10,
    anomalies: bool = True,
    sigma_warning: float = 3.0,
    sigma_critical: float = 5.0,
    baseline_model: str = "",
) -> Report:
    """The report of a period (default: everything in the ledger), with its anomalies.
    `baseline_model` names the baseline the savings were recorded against."""
    rollups = await load_rollups(redis, keys, since=since, until=until)
    report = summarise(rollups, since=since, until=until, revenue_usd=revenue_usd, top=top)
    report.baseline_model = baseline_model
    if anomalies:
        report.anomalies = await detect(
            redis, keys, rollups, sigma_warning=sigma_warning, sigma_critical=sigma_critical
        )
    return report
