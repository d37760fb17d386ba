"""Redis memory of a growing ledger, with and without archiving old entries to Parquet.

    python bench/ledger_archive.py                     # 3 rounds of 100,000 records
    python bench/ledger_archive.py --records 1000000   # the 1M / 2M / 3M figures (slow)

Two ledgers in one private redis-server (no AOF), fed the same synthetic records (bench/reports.py)
round after round: the baseline keeps every entry in Redis; the other archives everything written
so far after each round (`--older-than 0s`, so the bench needs no clock of days). After each round
it prints both ledgers' Redis memory, the report time over the whole range and whether the
archived ledger's report and export match the baseline's exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reports import private_redis, synthetic

from pipeline.costs.archive import LedgerArchive
from pipeline.costs.ledger import Ledger
from pipeline.costs.reports import build_report
from pipeline.keys import Keys


async def key_memory(redis: Redis, prefix: str) -> int:
    """Bytes Redis holds for the keys under `prefix` (MEMORY USAGE of each)."""
    total = 0
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        total += await redis.memory_usage(key, samples=0) or 0
    return total


async def fill(ledger: Ledger, round_no: int, args: argparse.Namespace) -> None:
    stream = synthetic(args.records, args.days, args.users, seed=round_no, prefix=f"r{round_no}-")
    while chunk := list(itertools.islice(stream, 20_000)):
        await ledger.import_records(chunk)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000, help="records per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bw-archive-bench-") as tmp:
        async with private_redis(Path(tmp)) as redis:
            plain, kept = Keys("plain"), Keys("kept")
            archive = LedgerArchive(redis, kept, Path(tmp) / "archive")
            for round_no in range(1, args.rounds + 1):
                await fill(Ledger(redis, plain), round_no, args)
                await fill(Ledger(redis, kept), round_no, args)
                t0 = time.perf_counter()
                done = await archive.run(0)
                archive_s = time.perf_counter() - t0
                assert done is not None
                t1 = time.perf_counter()
                report = await build_report(redis, kept)
                report_s = time.perf_counter() - t1
                baseline = await build_report(redis, plain)
                same = report.to_dict() == baseline.to_dict()
                files = archive.files()
                on_disk = sum(p.stat().st_size for p in files)
                without_mib = await key_memory(redis, "plain") / 2**20
                with_mib = await key_memory(redis, "kept") / 2**20
                print(
                    f"{round_no * args.records:>9,} records: Redis {without_mib:7.1f} MiB "
                    f"without archiving, {with_mib:6.1f} MiB with it "
                    f"(archived {done.entries:,} entries in {archive_s:.1f} s; archive "
                    f"{len(files)} files, {on_disk / 2**20:.1f} MiB); report over the whole range "
                    f"{report_s:.2f} s; same figures as the unarchived ledger: {same}"
                )


if __name__ == "__main__":
    asyncio.run(main())
