"""Cache analytics: entries, exact and semantic hit rates, tokens and dollars saved, per tenant
and model; read by `ResponseCache.stats()` and `batchwise cache stats`.

Counters are plain Redis hash fields `tenant\\x1fmodel\\x1fmetric`, incremented once per submit
chunk (lookups and hits) and once per stored answer; money is kept in nano-dollars. Live entries
are counted from a sorted set scored by expiry time, pruned as it is read.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from pipeline.costs.money import usd
from pipeline.keys import Keys

SEP = "\x1f"


@dataclass
class CacheStatsRow:
    """The cache's record for one tenant and model."""

    tenant: str
    model: str
    entries: int = 0
    lookups: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    semantic_blocked: int = 0
    stores: int = 0
    saved_nusd: int = 0
    saved_input_tokens: int = 0
    saved_output_tokens: int = 0
    unpriced_hits: int = 0
    semantic_verified: int = 0  # grey-zone candidates the verification model confirmed
    semantic_refused: int = 0  # grey-zone candidates it did not (or could not) confirm

    @property
    def saved_usd(self) -> Decimal:
        return usd(self.saved_nusd)

    @property
    def exact_hit_rate(self) -> float:
        return self.exact_hits / self.lookups if self.lookups else 0.0

    @property
    def semantic_hit_rate(self) -> float:
        return self.semantic_hits / self.lookups if self.lookups else 0.0

    @property
    def hit_rate(self) -> float:
        return (self.exact_hits + self.semantic_hits) / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            saved_usd=float(self.saved_usd),
            exact_hit_rate=self.exact_hit_rate,
            semantic_hit_rate=self.semantic_hit_rate,
            hit_rate=self.hit_rate,
        )
        return data


_COUNTERS = frozenset(CacheStatsRow.__dataclass_fields__) - {"tenant", "model", "entries"}


async def read_stats(redis: Redis, keys: Keys, *, tenant: str | None = None) -> list[CacheStatsRow]:
    """One row per (tenant, model) the cache has seen, sorted; `tenant` keeps only its rows."""
    rows: dict[tuple[str, str], CacheStatsRow] = {}

    def row(t: str, m: str) -> CacheStatsRow:
        return rows.setdefault((t, m), CacheStatsRow(t, m))

    now = time.time()
    await redis.zremrangebyscore(keys.cache_entries(), "-inf", now)
    live: dict[tuple[str, str], int] = defaultdict(int)
    async for member, _score in redis.zscan_iter(keys.cache_entries(), count=1000):
        t, m, _key = member.decode().split(SEP, 2)
        live[(t, m)] += 1
    for (t, m), n in live.items():
        row(t, m).entries = n
    for raw_field, raw_value in (await redis.hgetall(keys.cache_stats())).items():
        t, m, metric = raw_field.decode().split(SEP, 2)
        if metric in _COUNTERS:
            setattr(row(t, m), metric, getattr(row(t, m), metric) + int(raw_value))
    return [r for (t, _m), r in sorted(rows.items()) if tenant is None or t == tenant]


def total(rows: list[CacheStatsRow]) -> CacheStatsRow:
    """All rows added up (tenant and model '*')."""
    summed = CacheStatsRow("*", "*")
    for r in rows:
        for name in _COUNTERS | {"entries"}:
            setattr(summed, name, getattr(summed, name) + getattr(r, name))
    return summed
