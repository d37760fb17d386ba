"""Anomaly alerts on a seeded noisy ledger: quiet on noise, every injected spike found."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from pipeline.costs.anomalies import detect, scan
from pipeline.costs.period import Rollups
from pipeline.costs.rollup import SEP
from pipeline.costs.spikes import spikes
from pipeline.keys import Keys

NANO = 1_000_000_000
DAYS = 44  # 14 days of baseline, then 30 days watched
TENANTS = {"acme": 4.0, "globex": 1.0, "initech": 0.2, "tiny": 0.01}  # dollars per day


def _diurnal(hour: int) -> float:
    """Office-hours traffic: a peak at 14:00 UTC, a tenth of it at night."""
    return 0.1 + 0.9 * math.exp(-(((hour - 14) / 4) ** 2))


def noisy_hours(seed: int) -> dict[str, dict[str, int]]:
    """Hourly rollups (period -> field -> nano-dollars) of calls arriving at random: each tenant's
    calls per hour are Poisson around its diurnal rate, each call's cost varies by +-50%."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    weight = sum(_diurnal(h) for h in range(24))
    table: dict[str, dict[str, int]] = {}
    for hour in range(DAYS * 24):
        at = start + timedelta(hours=hour)
        fields: dict[str, int] = {}
        for tenant, per_day in TENANTS.items():
            call_usd = 0.002
            rate = per_day / call_usd * _diurnal(at.hour) / weight
            calls = _poisson(rng, rate)
            cost = sum(int(call_usd * NANO * rng.uniform(0.5, 1.5)) for _ in range(calls))
            if cost:
                fields[f"cost{SEP}t{SEP}{tenant}"] = cost
                fields["cost"] = fields.get("cost", 0) + cost
        table[at.strftime("%Y%m%d%H")] = fields
    return table


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def days_of(hours: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    days: dict[str, dict[str, int]] = {}
    for period, fields in hours.items():
        day = days.setdefault(period[:8], {})
        for name, value in fields.items():
            day[name] = day.get(name, 0) + value
    return days


def alerts(hours: dict[str, dict[str, int]]) -> list[tuple[str, str, str]]:
    found = scan(hours, "hour", window=14, stride=24, sigma_warning=3, sigma_critical=5)
    found += scan(days_of(hours), "day", window=14, sigma_warning=3, sigma_critical=5)
    # only the 30 watched days count: the first 14 build the baseline
    first_watched = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=14)).strftime("%Y%m%d")
    return [(a.granularity, a.name, p) for a, _, p in found if p[:8] >= first_watched]


def inject(hours: dict[str, dict[str, int]], period: str, tenant: str, usd: float) -> None:
    fields = hours[period]
    extra = int(usd * NANO)
    name = f"cost{SEP}t{SEP}{tenant}"
    fields[name] = fields.get(name, 0) + extra
    fields["cost"] = fields.get("cost", 0) + extra


def test_thirty_days_of_noise_raise_at_most_a_handful_of_alerts() -> None:
    for seed in range(5):
        found = alerts(noisy_hours(seed))
        assert len(found) <= 3, (seed, found)


def test_every_injected_spike_is_found_in_the_noise() -> None:
    hours = noisy_hours(7)
    # an hour at 5x a big tenant's peak hour, a day at 3x a mid tenant's day, a small tenant's
    # night hour that jumps by a whole day of its spend, and a runaway job across one afternoon
    inject(hours, "2026012014", "acme", 4.0 * 0.16 * 4)
    for hour in range(24):
        inject(hours, f"20260125{hour:02d}", "globex", 2.0 / 24)
    inject(hours, "2026020303", "initech", 0.2)
    for hour in range(13, 18):
        inject(hours, f"20260207{hour:02d}", "globex", 0.3)
    found = set(alerts(hours))
    assert ("hour", "acme", "2026012014") in found
    assert ("day", "globex", "20260125") in found
    assert ("hour", "initech", "2026020303") in found
    assert ("day", "globex", "20260207") in found
    # little else: an alert outside the injected days is noise (the noise test allows 3)
    injected = {"20260120", "20260125", "20260203", "20260207"}
    assert len({f for f in found if f[2][:8] not in injected}) <= 3, found


def test_a_robust_baseline_ignores_an_earlier_spike() -> None:
    """One past spike in the baseline must not hide the next one (a mean and a standard deviation
    would be dragged up by it)."""
    quiet = [n * NANO // 100 for n in (100, 104, 97, 101, 99, 103, 98)] * 2  # ~$1 a day
    values = [*quiet[:7], 20 * NANO, *quiet[7:], 2 * NANO]
    found = spikes(values, window=14, sigma_warning=3, sigma_critical=5)
    assert [s.index for s in found] == [7, len(values) - 1]


async def test_same_rollups_give_the_same_anomalies_whatever_the_field_order(
    redis_url: str,
) -> None:
    """Redis returns a hash's fields in no set order (an archived ledger's hashes differ from
    an unarchived one's): the alerts, their order and the cap must not follow it."""
    hours = noisy_hours(seed=3)
    for tenant in ("acme", "globex", "initech"):
        inject(hours, "2026021323", tenant, 5.0)  # the latest hour
    orders = []
    redis = Redis.from_url(redis_url)
    try:
        for flip in (False, True):
            flipped = {p: dict(sorted(f.items(), reverse=flip)) for p, f in hours.items()}
            days = days_of(flipped)
            found = await detect(redis, Keys("order"), Rollups(days=days, hours=flipped), limit=2)
            orders.append([(a.granularity, a.period, a.scope, a.name) for a in found])
    finally:
        await redis.aclose()
    assert orders[0] == orders[1]
    hourly = [name for granularity, period, _scope, name in orders[0] if granularity == "hour"]
    assert hourly == ["", "acme"]  # the cap keeps the first series of a tied hour, by name
