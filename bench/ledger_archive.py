"""Redis memory of a growing ledger, with and without archiving old entries to Parquet.

    python bench/ledger_archive.py                     # 3 rounds of 100,000 records
    python bench/ledger_archive.py --records 1000000   # the 1M / 2M / 3M figures

Two ledgers in one private redis-server (no AOF), fed the same synthetic records (bench/reports.py)
round after round, through `Ledger.import_records` (the records, id guard and every rollup): the
baseline keeps every entry in Redis; the other archives everything written so far after each round
(the real `LedgerArchive.run`, with `--older-than 0s` so the bench needs no clock of days). After
each round it prints both ledgers' Redis memory (and what the archived one's is made of), the
report time over the whole range (rollups, breakdowns, anomalies with their explanations) and
whether the archived ledger's report matches the baseline's exactly, and at the end the longest
single step that took a chunk's per-user detail out of Redis (SLOWLOG).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reports import private_redis, synthetic

from pipeline.costs.archive import LedgerArchive
from pipeline.costs.detail import SUBTRACT
from pipeline.costs.ledger import Ledger
from pipeline.costs.reports import build_report
from pipeline.keys import Keys

MIB = 2**20


async def key_memory(redis: Redis, prefix: str) -> dict[str, int]:
    """Bytes Redis holds for the keys under `prefix` (MEMORY USAGE of each), by key family
    (`ledger:h`, `ledger:d`, `ledger:hu`, the stream `ledger`, ...)."""
    total: dict[str, int] = defaultdict(int)
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        parts = key.decode().split(":")
        family = ":".join(parts[1:3]) if len(parts) > 3 else ":".join(parts[1:])
        total[family] += await redis.memory_usage(key, samples=0) or 0
    return total


async def fill(ledgers: list[Ledger], round_no: int, args: argparse.Namespace) -> float:
    """Import one round's records into every ledger; returns records per second."""
    stream = synthetic(args.records, args.days, args.users, seed=round_no, prefix=f"r{round_no}-")
    t0 = time.perf_counter()
    while chunk := list(itertools.islice(stream, 20_000)):
        for ledger in ledgers:
            await ledger.import_records(chunk)
    return args.records / (time.perf_counter() - t0)


async def longest_subtract_ms(redis: Redis) -> float:
    """The slowest archiving step (mark + per-user detail out of Redis) SLOWLOG saw."""
    sha = str(await redis.script_load(SUBTRACT)).encode()
    entries = await redis.slowlog_get(1024)
    took = [e["duration"] for e in entries if sha in bytes(e["command"])] or [0]
    return max(took) / 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000, help="records per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bw-archive-bench-") as tmp:
        async with private_redis(Path(tmp)) as redis:
            await redis.config_set("slowlog-log-slower-than", 20_000)  # µs
            await redis.config_set("slowlog-max-len", 1024)
            plain, kept = Keys("plain"), Keys("kept")
            archive = LedgerArchive(redis, kept, Path(tmp) / "archive")
            ledgers = [Ledger(redis, plain), Ledger(redis, kept)]
            for round_no in range(1, args.rounds + 1):
                rate = await fill(ledgers, round_no, args)
                t0 = time.perf_counter()
                done = await archive.run(0)
                archive_s = time.perf_counter() - t0
                assert done is not None
                t1 = time.perf_counter()
                report = await build_report(redis, kept)
                report_s = time.perf_counter() - t1
                t2 = time.perf_counter()
                baseline = await build_report(redis, plain)
                baseline_s = time.perf_counter() - t2
                same = report.to_dict() == baseline.to_dict()
                on_disk = sum(p.stat().st_size for p in Path(tmp, "archive").rglob("*.parquet"))
                without = await key_memory(redis, "plain")
                kept_by = await key_memory(redis, "kept")
                parts = ", ".join(
                    f"{family} {size / MIB:.1f}"
                    for family, size in sorted(kept_by.items(), key=lambda kv: -kv[1])[:4]
                )
                print(
                    f"{round_no * args.records:>9,} records (imported at {rate:,.0f}/s into both): "
                    f"Redis {sum(without.values()) / MIB:7.1f} MiB without archiving, "
                    f"{sum(kept_by.values()) / MIB:6.1f} MiB with it ({parts}); archived "
                    f"{done.entries:,} entries in {archive_s:.1f} s, archive on disk "
                    f"{on_disk / MIB:.1f} MiB; report over the whole range {report_s:.2f} s "
                    f"({baseline_s:.2f} s unarchived, {len(report.anomalies)} anomalies); "
                    f"same figures as the unarchived ledger: {same}",
                    flush=True,
                )
            print(f"longest archiving step in Redis: {await longest_subtract_ms(redis):.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
