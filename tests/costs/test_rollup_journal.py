"""The rollup journal: records written by several workers at once, folded by whoever crosses the
fold mark and by every reader, add up to exactly what a bulk import of the same records adds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from pipeline.costs.ledger import Ledger
from pipeline.costs.reports import build_report
from pipeline.costs.rollup import FOLD_EVERY, Journal
from pipeline.keys import Keys
from pipeline.models import CallRecord
from pipeline.testing import make_settings
from tests.costs.test_reports import DAY0, call


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _hashes(redis: Redis, k: Keys) -> dict[str, dict[bytes, bytes]]:
    names = await redis.keys(f"{k.prefix}:ledger:[hd]:*") + await redis.keys(
        f"{k.prefix}:ledger:[hd]u:*"
    )
    return {n.decode()[len(k.prefix) :]: await redis.hgetall(n) for n in names}


async def test_concurrent_writers_and_folds_count_every_record_once(redis: Redis) -> None:
    records = [
        call(
            i,
            DAY0 + i * 97,
            1000 + i,
            tenant=f"t{i % 3}",
            shares=[(f"u{i % 7}", f"/e{i % 2}", 600 + i), ("bob", "/x", 400)],
        )
        for i in range(5 * FOLD_EVERY + 3)
    ]
    live, bulk = (
        Keys(make_settings("redis://x").key_prefix),
        Keys(make_settings("redis://x").key_prefix),
    )
    writers = [Ledger(redis, live) for _ in range(4)]  # four workers, one Redis

    async def write(ledger: Ledger, part: list[CallRecord]) -> list[bool]:
        return [await ledger.record_error(r) for r in part]  # the append step, with no answer

    written = await asyncio.gather(
        *(write(w, records[i::4]) for i, w in enumerate(writers)),
        *(writers[0].journal.fold(drain=True) for _ in range(3)),  # readers folding meanwhile
    )
    again = await write(writers[1], records[:10])  # a re-run adds nothing, not even counters
    assert sum(sum(w) for w in written[:4]) == len(records) and not any(again)
    assert await redis.llen(live.ledger_journal()) < FOLD_EVERY  # writers folded as they went
    assert await Ledger(redis, bulk).import_records(records) == len(records)
    report_live = await build_report(redis, live, anomalies=False)
    assert await redis.llen(live.ledger_journal()) == 0  # a report folds everything first
    assert await _hashes(redis, live) == await _hashes(redis, bulk)
    report_bulk = await build_report(redis, bulk, anomalies=False)
    assert report_live.to_dict() == report_bulk.to_dict()
    assert await Journal(redis, live).fold(drain=True) == 0
