"""The monthly budget and its pace: are we spending faster than the month allows?

Pace compares the month's spend with the share of the budget that the elapsed part of the month
allows (`expected`). The ratio sets the status: `critical` above 1.5× (or the budget is spent
before the month ends), `warning` above 1.2×, `under_utilized` below 0.5×, else `on_track`. The
projection is a straight line from the spend so far to the month's end. Alerts go to the log and
an optional webhook when the spend first reaches each threshold (50/80/100 % by default); a Redis
SETNX per month and threshold makes each alert fire once across every worker.

The spend comes from a per-month Redis counter that the breaker's settle step increases, so a
status costs a few reads, never a scan of the ledger.
"""

from __future__ import annotations

import logging
import time
from calendar import monthrange
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from redis.asyncio import Redis

from pipeline.costs.money import to_nano, usd
from pipeline.keys import Keys

logger = logging.getLogger("batchwise.budget")

WARNING_PACE = 1.2
CRITICAL_PACE = 1.5
UNDER_PACE = 0.5
MIN_ELAPSED_S = 3600.0  # the first hour of a month says nothing about its pace


def month_bounds(now: float) -> tuple[str, float, float]:
    """(`YYYY-MM`, start, end) of the UTC calendar month holding `now` (epoch seconds)."""
    moment = datetime.fromtimestamp(now, UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    days = monthrange(moment.year, moment.month)[1]
    begin = start.timestamp()
    return f"{moment.year:04d}-{moment.month:02d}", begin, begin + days * 86400


@dataclass(frozen=True)
class Pace:
    """Where the month's spend stands against its budget."""

    month: str
    budget_usd: Decimal | None
    spent_usd: Decimal
    expected_usd: Decimal
    projected_usd: Decimal
    ratio: float | None
    used_pct: float | None
    elapsed_days: float
    month_days: int
    status: str
    actions: list[str] = field(default_factory=list)
    tenants_usd: dict[str, Decimal] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for name in ("budget_usd", "spent_usd", "expected_usd", "projected_usd"):
            out[name] = None if out[name] is None else str(out[name])
        out["tenants_usd"] = {k: str(v) for k, v in self.tenants_usd.items()}
        return out


def status_of(ratio: float | None, spent_nusd: int, budget_nusd: int | None, end: bool) -> str:
    """The pace status for a spend/expected ratio (see the module docstring)."""
    if budget_nusd is None or ratio is None:
        return "no_budget"
    if ratio > CRITICAL_PACE or (spent_nusd >= budget_nusd and not end):
        return "critical"
    if ratio > WARNING_PACE:
        return "warning"
    if ratio < UNDER_PACE:
        return "under_utilized"
    return "on_track"


def assess(
    budget_nusd: int | None,
    spent_nusd: int,
    now: float,
    tenants_nusd: dict[str, int] | None = None,
) -> Pace:
    """The pace of a month's spend at `now`, with recommended actions."""
    month, start, end = month_bounds(now)
    length = end - start
    elapsed = min(max(now - start, MIN_ELAPSED_S), length)
    fraction = elapsed / length
    spent = usd(spent_nusd)
    projected = (spent / Decimal(fraction)).quantize(Decimal("0.000001"))
    tenants = {k: usd(v) for k, v in sorted((tenants_nusd or {}).items())}
    if budget_nusd is None:
        return Pace(
            month,
            None,
            spent,
            Decimal(0),
            projected,
            None,
            None,
            elapsed / 86400,
            round(length / 86400),
            "no_budget",
            ["set a monthly budget: batchwise budget set monthly USD"],
            tenants,
        )
    budget = usd(budget_nusd)
    expected = (budget * Decimal(fraction)).quantize(Decimal("0.000001"))
    ratio = float(spent / expected) if expected > 0 else (0.0 if spent == 0 else float("inf"))
    status = status_of(ratio, spent_nusd, budget_nusd, now >= end)
    used = float(spent / budget * 100) if budget > 0 else (0.0 if spent == 0 else float("inf"))
    pace = Pace(
        month,
        budget,
        spent,
        expected,
        projected,
        ratio,
        used,
        elapsed / 86400,
        round(length / 86400),
        status,
        [],
        tenants,
    )
    return Pace(**{**pace.__dict__, "actions": actions(pace, end - now)})


def actions(pace: Pace, left_s: float) -> list[str]:
    """What an operator should consider doing, for the pace's status."""
    assert pace.budget_usd is not None and pace.ratio is not None
    left_usd = max(pace.budget_usd - pace.spent_usd, Decimal(0))
    days_left = max(left_s / 86400, 1 / 24)
    per_day = (left_usd / Decimal(days_left)).quantize(Decimal("0.01"))
    top = max(pace.tenants_usd.items(), key=lambda kv: kv[1], default=None)
    if pace.status == "critical":
        out = [
            f"spend is {pace.ratio:.2f}x pace, projected ${pace.projected_usd} against a budget "
            f"of ${pace.budget_usd}: routed tasks now move to a cheaper tier (budget_degrade)",
            f"cap the rest of the month: batchwise budget set limit global daily {per_day}",
            "raise the budget if this spend is planned: batchwise budget set monthly USD",
        ]
        if top is not None:
            out.append(f"largest spender this month: tenant {top[0]!r} (${top[1]})")
        return out
    if pace.status == "warning":
        return [
            f"spend is {pace.ratio:.2f}x pace, projected ${pace.projected_usd} against a budget "
            f"of ${pace.budget_usd}",
            "mark flexible work budget_sensitive, or move it to cheaper task types",
            f"a daily breaker limit of ${per_day} keeps the month inside the budget",
        ]
    if pace.status == "under_utilized":
        return [
            f"spend is {pace.ratio:.2f}x pace: room for higher-quality tiers or more work",
        ]
    return ["no action needed"]


UNREAD = -1  # a monthly budget not read yet


class MonthlyBudget:
    """Reads the month's spend, reports its pace, and sends the threshold alerts once each."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        budget_usd: Decimal | None,
        *,
        alert_pcts: tuple[int, ...] = (50, 80, 100),
        webhook_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.budget_usd = budget_usd
        self.alert_pcts = tuple(sorted(alert_pcts))
        self.webhook_url = webhook_url
        self.transport = transport

    def resolve(self, override: bytes | None) -> int | None:
        """The monthly budget given the operator's override as stored (None: no override)."""
        if override is not None:
            return None if override == b"none" else int(override)
        return None if self.budget_usd is None else to_nano(self.budget_usd)

    async def budget_nusd(self) -> int | None:
        """The monthly budget: the operator's override in Redis, else the setting."""
        return self.resolve(await self.redis.hget(self.keys.budget_config(), "monthly_usd"))

    async def set_budget(self, usd: Decimal | None) -> None:
        value = "none" if usd is None else str(to_nano(usd))
        await self.redis.hset(self.keys.budget_config(), "monthly_usd", value)

    async def pace(self, now: float | None = None) -> Pace:
        now = time.time() if now is None else now
        month, _, _ = month_bounds(now)
        budget = await self.budget_nusd()
        spent = int(await self.redis.get(self.keys.month_spend(month)) or 0)
        raw = await self.redis.hgetall(self.keys.month_tenant_spend(month))
        return assess(budget, spent, now, {k.decode(): int(v) for k, v in raw.items()})

    async def alert(
        self, spent_nusd: int, now: float, budget_nusd: int | None = UNREAD
    ) -> list[int]:
        """Send the alerts for thresholds the month's spend has newly reached; returns them.
        `budget_nusd` is the monthly budget when the caller has just read it."""
        budget = await self.budget_nusd() if budget_nusd == UNREAD else budget_nusd
        if not budget:
            return []
        month, _, _ = month_bounds(now)
        sent = []
        for pct in self.alert_pcts:
            if spent_nusd * 100 < budget * pct:
                break
            key = self.keys.budget_alert(month, pct)
            if await self.redis.set(key, int(now), nx=True, ex=40 * 86400):
                sent.append(pct)
                await self._notify(pct, assess(budget, spent_nusd, now))
        return sent

    async def _notify(self, pct: int, pace: Pace) -> None:
        logger.warning(
            "budget alert: %d%% of the %s budget used ($%s of $%s, %s, projected $%s)",
            pct,
            pace.month,
            pace.spent_usd,
            pace.budget_usd,
            pace.status,
            pace.projected_usd,
        )
        if not self.webhook_url:
            return
        body = {"event": "budget_threshold", "threshold_pct": pct, **pace.as_dict()}
        try:
            async with httpx.AsyncClient(transport=self.transport, timeout=5.0) as client:
                response = await client.post(self.webhook_url, json=body)
                response.raise_for_status()
        except httpx.HTTPError as exc:  # an alert must never stop the work
            logger.error("budget alert webhook failed: %s", type(exc).__name__)
