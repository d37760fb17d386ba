"""Spend spikes: daily and hourly, overall and per tenant and per endpoint.

A period is compared with its baseline, never with itself: the 14 days before a day; the same
hour of the 14 days before an hour (spend follows the clock, so 14:00 is compared with 14:00);
missing periods count as 0. Normal is the baseline's median and σ comes from its median absolute
deviation (`spikes.robust_level`). It is anomalous when it lies k·σ above normal (`warning` from
`sigma_warning`, `critical` from `sigma_critical`), at least 20% above it, and by at least 5% of
an average period's total spend (a cent-sized wobble of a tiny tenant is not an alert). Each
anomaly says how far above normal it is and what grew: the models, endpoints, tenants and users
whose spend rose most against their own baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from redis.asyncio import Redis

from pipeline.costs.detail import read_hashes
from pipeline.costs.money import usd
from pipeline.costs.period import Rollups
from pipeline.costs.rollup import SEP, parse_field
from pipeline.costs.spikes import Level, baseline_indexes, spikes
from pipeline.keys import Keys

Granularity = Literal["day", "hour"]

EXPLAINED_HOURS = 10  # hourly anomalies whose user growth is looked up (the latest)
MIN_EXCESS_SHARE = 0.05  # ... and its excess at least 5% of an average period's total spend


@dataclass(frozen=True)
class Growth:
    """One contributor to a spike: its spend in the period against its baseline mean."""

    dimension: str
    name: str
    cost_usd: Decimal
    baseline_usd: Decimal

    @property
    def delta_usd(self) -> Decimal:
        return self.cost_usd - self.baseline_usd


@dataclass(frozen=True)
class Anomaly:
    """A period whose spend lies k·σ above the normal level of the periods before it."""

    granularity: Granularity
    period: str
    scope: str  # "all", "tenant", "endpoint"
    name: str
    level: Level
    cost_usd: Decimal
    baseline_usd: Decimal
    sigma_usd: Decimal
    z: float
    grew: tuple[Growth, ...] = field(default=())

    @property
    def ratio(self) -> float | None:
        return float(self.cost_usd / self.baseline_usd) if self.baseline_usd else None

    def describe(self) -> str:
        """One line a person can act on."""
        who = "all spend" if self.scope == "all" else f"{self.scope} {self.name or '(none)'}"
        times = f"{self.ratio:.1f}x normal, " if self.ratio else ""
        text = (
            f"{self.level.upper()} {self.granularity} {self.period}: {who} "
            f"${self.cost_usd:.4f} vs ${self.baseline_usd:.4f} normal ({times}"
            f"{self.z:.1f} sigma above)"
        )
        if self.grew:
            grew = ", ".join(
                f"{g.dimension} {g.name or '(none)'} +${g.delta_usd:.4f}" for g in self.grew
            )
            text += f"; grew: {grew}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "granularity": self.granularity,
            "period": self.period,
            "scope": self.scope,
            "name": self.name,
            "level": self.level,
            "cost_usd": str(self.cost_usd),
            "baseline_usd": str(self.baseline_usd),
            "sigma_usd": str(self.sigma_usd),
            "z": round(self.z, 2),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "grew": [
                {
                    "dimension": g.dimension,
                    "name": g.name,
                    "cost_usd": str(g.cost_usd),
                    "baseline_usd": str(g.baseline_usd),
                    "delta_usd": str(g.delta_usd),
                }
                for g in self.grew
            ],
            "message": self.describe(),
        }


def _periods(names: Sequence[str], granularity: Granularity) -> list[str]:
    """Every day or hour from the first to the last name, gaps included."""
    if not names:
        return []
    fmt, step = (
        ("%Y%m%d", timedelta(days=1)) if granularity == "day" else ("%Y%m%d%H", timedelta(hours=1))
    )
    first = datetime.strptime(min(names), fmt).replace(tzinfo=UTC)
    last = datetime.strptime(max(names), fmt).replace(tzinfo=UTC)
    out = []
    while first <= last:
        out.append(first.strftime(fmt))
        first += step
    return out


def _label(period: str) -> str:
    if len(period) == 8:
        return f"{period[:4]}-{period[4:6]}-{period[6:]}"
    return f"{period[:4]}-{period[4:6]}-{period[6:8]} {period[8:]}:00 UTC"


def _series(table: dict[str, dict[str, int]]) -> dict[tuple[str, str], str]:
    """The series to watch: all spend, and spend per tenant and per endpoint."""
    found: dict[tuple[str, str], str] = {("all", ""): "cost"}
    for fields in table.values():
        for name in fields:
            if not name.startswith(SERIES_PREFIXES):
                continue
            parts = parse_field(name)
            if len(parts) == 3 and parts[0] == "cost" and parts[1] in ("t", "e"):
                scope = "tenant" if parts[1] == "t" else "endpoint"
                found[(scope, parts[2])] = name
    return found


Index = dict[tuple[str, str, str], dict[str, int]]  # (dim, scope dim, scope) -> name -> nusd


def index_fields(fields: dict[str, int]) -> Index:
    """A rollup hash's cost breakdowns, by dimension and scope, parsed once."""
    out: Index = {}
    for key, value in fields.items():
        if not key.startswith(COST) or key.startswith(USER_COST):
            continue  # users are looked up apart, only for the scope an anomaly is in
        parts = parse_field(key)
        if len(parts) == 3:
            out.setdefault((parts[1], "", ""), {})[parts[2]] = value
        elif len(parts) == 5:
            out.setdefault((parts[1], parts[3], parts[4]), {})[parts[2]] = value
    return out


COST = f"cost{SEP}"
USER_COST = f"cost{SEP}u{SEP}"
SERIES_PREFIXES = (f"cost{SEP}t{SEP}", f"cost{SEP}e{SEP}")
DIMENSION_NAMES = {"m": "model", "e": "endpoint", "t": "tenant", "u": "user"}


def _explainers(scope: str, name: str) -> list[tuple[str, str, str]]:
    """What to break a spike down by: (dimension, scope dimension, scope value)."""
    if scope == "all":
        return [("m", "", ""), ("e", "", ""), ("t", "", ""), ("u", "", "")]
    if scope == "tenant":
        return [("m", "t", name), ("e", "t", name), ("u", "t", name)]
    return [("m", "e", name), ("t", "e", name), ("u", "e", name)]


def _growth(
    current: Index, baseline: Sequence[Index], scope: str, name: str, *, limit: int = 3
) -> tuple[Growth, ...]:
    grew: list[Growth] = []
    n = max(len(baseline), 1)
    for explainer in _explainers(scope, name):
        sums: dict[str, int] = {}
        for index in baseline:
            for label, value in index.get(explainer, {}).items():
                sums[label] = sums.get(label, 0) + value
        rows = []
        for label, value in current.get(explainer, {}).items():
            base = sums.get(label, 0) / n
            if value > base:
                rows.append((value - base, label, value, base))
        rows.sort(reverse=True)
        for _delta, label, value, base in rows[:limit]:
            grew.append(
                Growth(
                    DIMENSION_NAMES[explainer[0]],
                    label,
                    usd(value),
                    usd(round(base)),
                )
            )
    grew.sort(key=lambda g: -g.delta_usd)
    return tuple(grew[: limit * 2])


def scan(
    table: dict[str, dict[str, int]],
    granularity: Granularity,
    *,
    series: dict[tuple[str, str], str] | None = None,
    stride: int = 1,
    window: int,
    sigma_warning: float,
    sigma_critical: float,
) -> list[tuple[Anomaly, list[str], str]]:
    """Anomalies in one table of rollups; each with its baseline periods (to explain it)."""
    periods = _periods(list(table), granularity)
    empty: dict[str, int] = {}
    # an alert must matter: its excess is at least 5% of an average period's total spend
    overall = sum(table.get(p, empty).get("cost", 0) for p in periods) / max(len(periods), 1)
    found: list[tuple[Anomaly, list[str], str]] = []
    for (scope, name), key in (series or _series(table)).items():
        values = [table.get(p, empty).get(key, 0) for p in periods]
        for s in spikes(
            values,
            window=window,
            stride=stride,
            sigma_warning=sigma_warning,
            sigma_critical=sigma_critical,
            min_excess=MIN_EXCESS_SHARE * overall,
        ):
            anomaly = Anomaly(
                granularity=granularity,
                period=_label(periods[s.index]),
                scope=scope,
                name=name,
                level=s.level,
                cost_usd=usd(s.value),
                baseline_usd=usd(round(s.normal)),
                sigma_usd=usd(round(s.sigma)),
                z=s.z,
            )
            base = [periods[j] for j in baseline_indexes(s.index, window, stride)]
            found.append((anomaly, base, periods[s.index]))
    return found


async def detect(
    redis: Redis,
    keys: Keys,
    rollups: Rollups,
    *,
    sigma_warning: float = 3.0,
    sigma_critical: float = 5.0,
    baseline_days: int = 14,
    baseline_hour_days: int = 14,
    limit: int = 50,
) -> list[Anomaly]:
    """Daily and hourly spikes in loaded rollups (`period.Rollups`), most recent first, each
    explained by what grew. Hourly user growth is read from the hour-user hashes."""
    series = _series(rollups.days)  # every tenant and endpoint appears in some day
    daily = scan(
        rollups.days,
        "day",
        series=series,
        window=baseline_days,
        sigma_warning=sigma_warning,
        sigma_critical=sigma_critical,
    )
    hourly = scan(
        rollups.hours,
        "hour",
        series=series,
        window=baseline_hour_days,
        stride=24,
        sigma_warning=sigma_warning,
        sigma_critical=sigma_critical,
    )
    # latest first, ties by series name: neither the cap nor the order may depend on the order
    # of a Redis hash's fields
    for table in (daily, hourly):
        table.sort(key=lambda f: (f[0].scope, f[0].name))
        table.sort(key=lambda f: f[2], reverse=True)
    daily, hourly = daily[:limit], hourly[:limit]
    indexes: dict[str, Index] = {}

    def index_of(period: str) -> Index:
        if period not in indexes:
            table = rollups.days if len(period) == 8 else rollups.hours
            indexes[period] = index_fields(table.get(period, {}))
        return indexes[period]

    found = [*daily, *hourly]
    explained = [True] * len(daily) + [rank < EXPLAINED_HOURS for rank in range(len(hourly))]
    wanted = [
        _user_hashes(keys, anomaly, [*base, period]) if explain else None
        for (anomaly, base, period), explain in zip(found, explained, strict=True)
    ]
    # every user hash the explanations need in one read (the archive's part in one query)
    names = sorted({name for hashes in wanted if hashes for name in hashes})
    users = dict(zip(names, await read_hashes(redis, keys, names), strict=True))
    out: list[Anomaly] = []
    for (anomaly, base, period), explain, hashes in zip(found, explained, wanted, strict=True):
        current = dict(index_of(period))
        baseline = [dict(index_of(p)) for p in base]
        if explain:
            scope_dim = {"all": "", "tenant": "t", "endpoint": "e"}[anomaly.scope]
            user_key = ("u", scope_dim, anomaly.name if scope_dim else "")
            per_period = (
                [users[name] for name in hashes]
                if hashes is not None  # overall cost per user per day: loaded with the day
                else [_day_users(rollups.days.get(p, {})) for p in [*base, period]]
            )
            for index, costs in zip([*baseline, current], per_period, strict=True):
                index[user_key] = costs
        grew = _growth(current, baseline, anomaly.scope, anomaly.name)
        out.append(_with(anomaly, grew))
    out.sort(key=lambda a: (a.scope, a.name))
    out.sort(key=lambda a: (a.level == "critical", a.granularity == "day", a.period), reverse=True)
    return out


def _user_hashes(keys: Keys, anomaly: Anomaly, periods: list[str]) -> list[str] | None:
    """The user hashes of an anomaly's periods, or None when its day hashes hold them."""
    scope_dim = {"all": "", "tenant": "t", "endpoint": "e"}[anomaly.scope]
    if anomaly.granularity == "day" and not scope_dim:
        return None
    scope = f"{scope_dim}:{anomaly.name}" if scope_dim else ""
    if anomaly.granularity == "hour":
        return [keys.ledger_hour_users(p, scope) for p in periods]
    return [keys.ledger_day_users(p, scope) for p in periods]


def _day_users(fields: dict[str, int]) -> dict[str, int]:
    return {k[len(USER_COST) :]: v for k, v in fields.items() if k.startswith(USER_COST)}


def _with(anomaly: Anomaly, grew: tuple[Growth, ...]) -> Anomaly:
    return Anomaly(**{**anomaly.__dict__, "grew": grew})
