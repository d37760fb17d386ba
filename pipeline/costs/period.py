"""A period's rollups: the ledger's day and hour hashes from one day to another, read at once.

Reports and anomaly detection read these, never the records themselves, so they take the same
time over ten records or ten million (see `rollup.py` for the fields). Days and hours are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from redis.asyncio import Redis

from pipeline.costs.detail import read_hashes
from pipeline.costs.rollup import Journal, merge
from pipeline.keys import Keys


@dataclass
class Rollups:
    """The rollup hashes of a period: day → fields and hour (YYYYMMDDHH) → fields."""

    days: dict[str, dict[str, int]] = field(default_factory=dict)
    hours: dict[str, dict[str, int]] = field(default_factory=dict)


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


async def load_rollups(
    redis: Redis,
    keys: Keys,
    *,
    since: date | None = None,
    until: date | None = None,
    hours: bool = True,
) -> Rollups:
    """The day (and hour) hashes of every day from `since` to `until`, both included."""
    await Journal(redis, keys).fold(drain=True)  # every record written so far counts
    low: int | str = _epoch(since) if since else "-inf"
    high: int | str = _epoch(until + timedelta(days=1)) - 1 if until else "+inf"
    members = await redis.zrangebyscore(keys.ledger_hours(), low, high)
    hour_names = sorted(m.decode() for m in members)
    day_names = sorted({h[:8] for h in hour_names})
    rollups = Rollups()
    # a day's per-user fields of archived entries are in the archive (`detail.py`)
    day_rows = await read_hashes(redis, keys, [keys.ledger_day(d) for d in day_names])
    rollups.days = dict(zip(day_names, day_rows, strict=True))
    if not hours:
        return rollups
    names = [keys.ledger_hour(h) for h in hour_names]
    for start in range(0, len(names), 200):
        async with redis.pipeline(transaction=False) as pipe:
            for name in names[start : start + 200]:
                pipe.hgetall(name)
            rows = await pipe.execute()
        for hour, raw in zip(hour_names[start : start + 200], rows, strict=True):
            fields: dict[str, int] = {}
            merge(fields, raw.items())
            rollups.hours[hour] = fields
    return rollups
