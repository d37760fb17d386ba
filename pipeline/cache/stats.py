"""Cache analytics: entries, exact and semantic hit rates, tokens and dollars saved, per tenant
and model; read by `ResponseCache.stats()` and `batchwise cache stats`.

Counters are plain Redis hash fields `tenant\\x1fmodel\\x1fmetric`, incremented once per submit
chunk (lookups and hits) and once per stored answer; money is kept in nano-dollars. Live entries
are counted from a sorted set scored by expiry time, pruned as it is read.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from ..keys import Keys

SEP = "\x1f"
NANO = Decimal(1_000_000_000)


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

    @property
    def saved_usd(self) -> Decimal:
        return Decimal(self.saved_nusd) / NANO

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


# command line: `batchwise cache stats`


def add_cli(subparsers: Any) -> None:
    """Register `batchwise cache ...` on the main parser's subcommands."""
    cache = subparsers.add_parser("cache", help="response cache: analytics")
    sub = cache.add_subparsers(dest="cache_command", required=True)
    stats = sub.add_parser("stats", help="entries, hit rates and savings per tenant and model")
    stats.add_argument("--tenant", help="only this tenant")
    stats.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    stats.set_defaults(handler=cmd_cache_stats)


async def cmd_cache_stats(args: argparse.Namespace, settings: Any) -> int:
    """Print the cache's analytics (the embedded Redis of `batchwise run` unless REDIS_URL)."""
    import orjson
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from ..app import connect_redis
    from ..embedded import EmbeddedRedis

    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(settings.state_dir)
        url = embedded.start()
    redis = connect_redis(url)
    try:
        rows = await read_stats(redis, Keys(settings.key_prefix), tenant=args.tenant)
    finally:
        await redis.aclose()
        if embedded:
            embedded.stop()
    out = Console() if sys.stdout.isatty() else Console(width=120)  # piped: never cut numbers
    if args.json:
        for r in [*rows, total(rows)]:
            out.file.write(orjson.dumps(r.as_dict()).decode() + "\n")
        return 0
    table = Table(title="response cache", box=box.SIMPLE, pad_edge=False)
    table.add_column("tenant", no_wrap=True, max_width=24)
    table.add_column("model", no_wrap=True, max_width=24)
    for name in ("entries", "lookups", "exact", "semantic", "blocked", "tokens", "saved"):
        table.add_column(name, justify="right", no_wrap=True, min_width=max(len(name), 7))
    for r in [*rows, total(rows)] if rows else []:
        table.add_row(
            r.tenant,
            r.model,
            f"{r.entries:,}",
            f"{r.lookups:,}",
            f"{r.exact_hit_rate:.0%}",
            f"{r.semantic_hit_rate:.0%}",
            f"{r.semantic_blocked:,}",
            f"{r.saved_input_tokens + r.saved_output_tokens:,}",
            f"${r.saved_usd:.4f}" + ("+" if r.unpriced_hits else ""),
        )
    out.print(table if rows else "the cache has no entries or lookups yet")
    if rows:
        out.print("exact, semantic: hit rates; tokens, saved: not spent thanks to hits; --json")
    return 0
