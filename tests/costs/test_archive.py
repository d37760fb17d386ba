"""The ledger archive: old entries move from Redis to Parquet exactly once, crash or not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from redis.asyncio import Redis

from pipeline.cli.ledger import duration_s
from pipeline.cli.main import main
from pipeline.costs.archive import LedgerArchive
from pipeline.costs.export import export
from pipeline.costs.ledger import Ledger
from pipeline.costs.reports import build_report
from pipeline.errors import ConfigError
from pipeline.keys import Keys
from pipeline.models import Saving
from pipeline.testing import make_settings
from tests.costs.test_reports import DAY0, NANO, call, spiky_records


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def shares(n: int, cost_nusd: int) -> list[tuple[str, str, int]]:
    """Five users on two endpoints; every fourth call one user's on both endpoints."""
    user, endpoint = f"u{n % 5}", ("/chat", "/search")[n % 2]
    if n % 4 == 0:
        return [(user, "/chat", cost_nusd // 2), (user, "/search", cost_nusd - cost_nusd // 2)]
    return [(user, endpoint, cost_nusd)]


async def write_ledger(ledger: Ledger, first: int, count: int) -> None:
    """`count` calls over three days and two tenants, and a saving every tenth call."""
    await ledger.record_many(
        [
            call(
                n,
                DAY0 + (n % 3) * 86400 + n,
                NANO // 7 + n,
                tenant=("acme", "beta")[n % 2],
                shares=shares(n, NANO // 7 + n),
            )
            for n in range(first, first + count)
        ]
    )
    for n in range(first, first + count, 10):
        await ledger.record_saving(
            Saving(id=f"save-{n}", at=DAY0 + n, lever="cache", saved_nusd=n * 1000, tasks=1)
        )


async def exported(ledger: Ledger, archive: LedgerArchive, path: Path) -> list[dict[str, Any]]:
    await export(ledger, path, archive=archive)
    return [orjson.loads(line) for line in path.read_text().splitlines()]


async def test_archive_moves_everything_once_and_exports_and_reports_stay_the_same(
    redis: Redis, tmp_path: Path
) -> None:
    k = Keys(make_settings("redis://x").key_prefix)
    ledger = Ledger(redis, k)
    archive = LedgerArchive(redis, k, tmp_path / "archive", chunk=40)
    await write_ledger(ledger, 0, 150)
    before = await exported(ledger, archive, tmp_path / "before.jsonl")
    report_before = (await build_report(redis, k)).to_dict()

    done = await archive.run(0)
    assert done is not None and done.entries == 165 and done.files == 5  # 40 a file
    assert await redis.xlen(k.ledger()) == 0
    assert await redis.scard(k.ledger_ids()) == 0  # the id guard forgets archived ids
    assert await exported(ledger, archive, tmp_path / "after.jsonl") == before
    assert (await build_report(redis, k)).to_dict() == report_before

    again = await archive.run(0)
    assert again is not None and (again.entries, again.files) == (0, 0)
    assert len(archive.files()) == 5

    # new entries land after the archived ones, and DuckDB reads the archive's columns
    await write_ledger(ledger, 1000, 5)
    after = await exported(ledger, archive, tmp_path / "more.jsonl")
    assert after[: len(before)] == before and len(after) == len(before) + 6
    files = [str(p) for p in archive.files()]
    with duckdb.connect() as db:
        ((total,),) = db.execute(
            f"select sum(cost_usd) from read_parquet({files}) where type = 'call'"
        ).fetchall()
    assert Decimal(str(total)) == sum(
        Decimal(str(e["cost_usd"])) for e in before if e["type"] == "call"
    )


async def user_detail_in_redis(redis: Redis, k: Keys) -> int:
    """Per-user rollup fields left in Redis: the hour-user and day-user hashes' fields and the
    day hashes' per-user fields."""
    found = 0
    async for key in redis.scan_iter(match=f"{k.ledger()}:*"):
        name = key.decode()
        if name.startswith((f"{k.ledger()}:hu:", f"{k.ledger()}:du:")):
            found += await redis.hlen(name)
        elif name.startswith(f"{k.ledger()}:d:"):
            found += sum(b"\x1fu\x1f" in f for f in await redis.hkeys(name))
    return found


async def reports(redis: Redis, k: Keys) -> list[dict[str, Any]]:
    """The whole range with anomalies explained down to users, and one day of it."""
    whole = await build_report(redis, k, sigma_warning=3, sigma_critical=5)
    day = await build_report(redis, k, since=date(2026, 3, 15), until=date(2026, 3, 15))
    return [whole.to_dict(), day.to_dict()]


async def test_per_user_detail_moves_to_the_archive_and_reports_stay_exact(
    redis: Redis, tmp_path: Path
) -> None:
    k = Keys(make_settings("redis://x").key_prefix)
    ledger = Ledger(redis, k)
    await ledger.record_many(spiky_records())
    await asyncio.sleep(0.05)
    between = time.time()
    await asyncio.sleep(0.05)
    await write_ledger(ledger, 100, 60)
    before = await reports(redis, k)
    explained = before[0]["anomalies"]
    assert any(g["dimension"] == "user" for a in explained for g in a["grew"])
    detail = await user_detail_in_redis(redis, k)

    archive = LedgerArchive(redis, k, tmp_path / "archive", chunk=7)
    done = await archive.run(3600, now=between + 3600)  # the spiky calls only
    assert done is not None and done.entries == len(spiky_records())
    assert 0 < await user_detail_in_redis(redis, k) < detail
    assert await reports(redis, k) == before

    done = await archive.run(0)
    assert done is not None and done.entries == 66
    assert await user_detail_in_redis(redis, k) == 0  # Redis keeps tenant/model/day totals
    assert await reports(redis, k) == before

    # later calls add to what the archive holds, and a report adds the two
    await write_ledger(ledger, 500, 9)
    grown = await reports(redis, k)
    await archive.run(0)
    assert await user_detail_in_redis(redis, k) == 0
    assert await reports(redis, k) == grown
    assert grown[0]["by_user"] != before[0]["by_user"]


async def test_a_report_says_where_the_archive_is_missing(redis: Redis, tmp_path: Path) -> None:
    k = Keys(make_settings("redis://x").key_prefix)
    await write_ledger(Ledger(redis, k), 0, 10)
    await LedgerArchive(redis, k, tmp_path / "archive").run(0)
    (tmp_path / "archive").rename(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"ledger archive at .*archive is not readable"):
        await build_report(redis, k)


async def test_only_entries_older_than_the_window_move(redis: Redis, tmp_path: Path) -> None:
    k = Keys(make_settings("redis://x").key_prefix)
    ledger = Ledger(redis, k)
    archive = LedgerArchive(redis, k, tmp_path / "archive")
    await write_ledger(ledger, 0, 20)
    await asyncio.sleep(0.05)
    between = time.time()
    await asyncio.sleep(0.05)
    await write_ledger(ledger, 100, 20)
    done = await archive.run(3600, now=between + 3600)  # an hour after the first writes
    assert done is not None and done.entries == 22
    assert await redis.xlen(k.ledger()) == 22
    assert len([e async for e in ledger.raw_entries()]) == 22
    assert len([e async for e in archive.raw_entries()]) == 22


class Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["after the detail file", "after the file", "after the mark"])
async def test_a_crash_between_steps_loses_and_duplicates_nothing(
    redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    k = Keys(make_settings("redis://x").key_prefix)
    ledger = Ledger(redis, k)
    await write_ledger(ledger, 0, 100)
    archive = LedgerArchive(redis, k, tmp_path / "archive", chunk=30)
    before = await exported(ledger, archive, tmp_path / "before.jsonl")
    report_before = (await build_report(redis, k)).to_dict()

    def crash(*_args: object) -> None:
        raise Crash

    if where == "after the detail file":
        monkeypatch.setattr("pipeline.costs.archive._table", crash)
        with pytest.raises(Crash):
            await archive.run(0)
        monkeypatch.undo()
    elif where == "after the file":
        with pytest.raises(Crash):
            await archive.run(0, after_write=crash)
    else:
        forget = LedgerArchive._forget
        calls = 0

        async def forget_then_crash(self: LedgerArchive, mark: str, ids: list[str]) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:  # the first call is the start-up trim; the second is the first chunk
                raise Crash
            await forget(self, mark, ids)

        monkeypatch.setattr(LedgerArchive, "_forget", forget_then_crash)
        with pytest.raises(Crash):
            await archive.run(0)
        monkeypatch.setattr(LedgerArchive, "_forget", forget)
        # between the crash and the next pass, readers skip what the mark covers
        assert await exported(ledger, archive, tmp_path / "between.jsonl") == before
    assert (await build_report(redis, k)).to_dict() == report_before

    rerun = LedgerArchive(redis, k, tmp_path / "archive", chunk=30)
    done = await rerun.run(0)  # the crashed pass's lease was released by its `finally`
    assert done is not None
    assert await redis.xlen(k.ledger()) == 0
    assert await exported(ledger, rerun, tmp_path / "after.jsonl") == before
    assert len(rerun.files()) == 4  # 110 entries, 30 a file: none written twice
    assert (await build_report(redis, k)).to_dict() == report_before
    assert await user_detail_in_redis(redis, k) == 0


async def test_cli_archive_and_export(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(redis_url)
    redis = Redis.from_url(redis_url)
    try:
        await write_ledger(Ledger(redis, Keys(settings.key_prefix)), 0, 10)
    finally:
        await redis.aclose()
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BATCHWISE_KEY_PREFIX", settings.key_prefix)
    monkeypatch.setenv("BATCHWISE_LEDGER_ARCHIVE_DIR", str(tmp_path / "archive"))
    assert await asyncio.to_thread(main, ["ledger", "archive"]) == 0  # 7 days: nothing old
    assert not list((tmp_path / "archive").glob("*/*.parquet"))
    assert await asyncio.to_thread(main, ["ledger", "archive", "--older-than", "0s"]) == 0
    assert len(list((tmp_path / "archive").glob("*/*.parquet"))) == 1
    out = tmp_path / "all.jsonl"
    assert await asyncio.to_thread(main, ["ledger", "export", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 11


def test_durations() -> None:
    assert [duration_s(t) for t in ("0s", "90", "15m", "12h", "7d")] == [
        0,
        90,
        900,
        43200,
        604800,
    ]
    for bad in ("", "-1d", "7x", "d"):
        with pytest.raises(Exception, match="not a duration"):
            duration_s(bad)
