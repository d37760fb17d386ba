"""Reports over a 1,000,000-record ledger: rollups against a full scan of the records.

    python bench/reports.py                    # 1,000,000 records over 30 days
    python bench/reports.py --records 100000   # quicker

Builds a synthetic ledger in a private redis-server (no AOF: this measures reading, not
durability): a sample through the per-record write script (`Ledger.record_many`: record, id
guard and rollups in one atomic step) and the rest through `Ledger.import_records` (the same
records and rollups, summed in memory first), then times `build_report` (rollups, breakdowns,
anomalies), the HTML dashboard, and, as the baseline in the same run, the same figures
computed by scanning every record of the
stream with orjson. Prints both times, the ratio, and checks the two agree on the spend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import orjson
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.costs.dashboard import render_html
from pipeline.costs.ledger import Ledger
from pipeline.costs.reports import build_report
from pipeline.keys import Keys
from pipeline.models import CallRecord, CostShare, Usage
from pipeline.state.embedded import redis_server_binary

MODELS = {  # model -> (input, output) USD per million tokens
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4o": (2.50, 10.0),
    "claude-3-5-haiku-latest": (0.80, 4.0),
    "claude-sonnet-4-0": (3.0, 15.0),
    "gemini-2.5-flash": (0.30, 2.50),
}
ENDPOINTS = [f"/api/{name}" for name in ("chat", "search", "faq", "tag", "sum", "mail")]
TENANTS = [f"tenant{i}" for i in range(8)]


def synthetic(
    n: int, days: int, users: int, seed: int = 7, prefix: str = "c"
) -> Iterator[CallRecord]:
    """`n` call records over `days` days: skewed users and tenants, a daily rhythm, and one
    spike: on the last day but two, half of tenant3's calls go to /api/search on gpt-4o."""
    rng = random.Random(seed)
    start = int(time.time() // 86400 - days) * 86400
    models = list(MODELS)
    user_weights = [1 / (i + 1) ** 1.1 for i in range(users)]
    user_ids = [f"user{i:05d}" for i in range(users)]
    spike_day = days - 3
    cumulative = list(itertools.accumulate(user_weights))  # choices() would sum them every call
    for i in range(n):
        day = rng.randrange(days)
        hour = min(23, max(0, int(rng.gauss(14, 4))))
        at = start + day * 86400 + hour * 3600 + rng.random() * 3600
        tenant = TENANTS[min(int(rng.expovariate(0.6)), len(TENANTS) - 1)]
        endpoint = rng.choice(ENDPOINTS)
        model = models[min(int(rng.expovariate(0.7)), len(models) - 1)]
        if day == spike_day and tenant == "tenant3" and rng.random() < 0.5:
            endpoint, model = "/api/search", "gpt-4o"
        size = rng.randint(1, 10)
        tokens_in = size * rng.randint(80, 400) + 300
        tokens_out = size * rng.randint(10, 120)
        price_in, price_out = MODELS[model]
        cost_nusd = round((tokens_in * price_in + tokens_out * price_out) * 1000)
        owners = rng.choices(user_ids, cum_weights=cumulative, k=1 if rng.random() < 0.8 else 2)
        parts = [cost_nusd // len(owners)] * len(owners)
        parts[0] += cost_nusd - sum(parts)
        shares = tuple(
            CostShare(
                user_id=user,
                endpoint=endpoint,
                items=max(1, size // len(owners)),
                cost_nusd=part,
                input_tokens=tokens_in // len(owners),
                output_tokens=tokens_out // len(owners),
            )
            for user, part in zip(owners, parts, strict=True)
        )
        yield (
            CallRecord(
                id=f"{prefix}{i:08d}",
                at=at,
                batch_id=f"{prefix}{i:08d}",
                provider=model.split("-")[0],
                model=model,
                status="ok",
                usage=Usage(input_tokens=tokens_in, output_tokens=tokens_out),
                cost_usd=Decimal(cost_nusd) / 1_000_000_000,
                latency_ms=rng.randint(300, 4000),
                batch_size=size,
                tenant=tenant,
                shares=shares,
            )
        )


@contextlib.asynccontextmanager
async def private_redis(folder: Path) -> AsyncIterator[Redis]:
    """A throwaway redis-server (no AOF, no snapshots: these benches measure reading) on a unix
    socket in `folder`, and a client of it."""
    sock = folder / "redis.sock"
    server = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--dir", str(folder),
         "--appendonly", "no", "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        redis = Redis(unix_socket_path=str(sock))
        try:
            yield redis
        finally:
            await redis.aclose()
    finally:
        server.terminate()
        server.wait()


async def scan_baseline(redis: Redis, keys: Keys) -> dict[str, object]:
    """The same headline figures from a full read of the stream (orjson, no validation)."""
    daily: dict[str, int] = defaultdict(int)
    per: dict[str, dict[str, int]] = {d: defaultdict(int) for d in ("m", "t", "e", "u")}
    hours: dict[int, int] = defaultdict(int)
    total = 0
    last = "-"
    while True:
        rows = await redis.xrange(keys.ledger(), min=last, count=20_000)
        if last != "-":
            rows = rows[1:]
        if not rows:
            break
        for _id, fields in rows:
            blob = fields.get(b"r")
            if blob is None:
                continue
            r = orjson.loads(blob)
            cost = round(Decimal(r["cost_usd"]) * 1_000_000_000) if r["cost_usd"] else 0
            total += cost
            tm = time.gmtime(r["at"])
            daily[time.strftime("%Y%m%d", tm)] += cost
            hours[tm.tm_hour] += cost
            per["m"][r["model"]] += cost
            per["t"][r["tenant"]] += cost
            for s in r["shares"]:
                per["e"][s["endpoint"]] += s["cost_nusd"] or 0
                per["u"][s["user_id"]] += s["cost_nusd"] or 0
        last = rows[-1][0].decode()
    users = sorted(per["u"].values(), reverse=True)
    top = max(1, math.ceil(len(users) * 0.2))
    return {
        "cost_nusd": total,
        "days": len(daily),
        "peak_hour": max(hours, key=lambda h: hours[h]) if hours else None,
        "top20": sum(users[:top]) / max(sum(users), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--no-scan", action="store_true", help="skip the full-scan baseline")
    parser.add_argument(
        "--sample", type=int, default=20_000, help="records written one script call each"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bw-reports-bench-") as tmp:
        async with private_redis(Path(tmp)) as redis:
            keys = Keys("bench")
            ledger = Ledger(redis, keys)

            t0 = time.perf_counter()
            stream = synthetic(args.records, args.days, args.users)
            sample = list(itertools.islice(stream, args.sample))
            t1 = time.perf_counter()
            scripted = await ledger.record_many(sample)
            t2 = time.perf_counter()
            imported = 0
            while chunk := list(itertools.islice(stream, 20_000)):
                imported += await ledger.import_records(chunk)
            t3 = time.perf_counter()
            again = await ledger.record_many(sample[:1000]) + await ledger.import_records(
                sample[-1000:]
            )
            memory = (await redis.info("memory"))["used_memory_human"]
            print(
                f"ledger: {scripted + imported:,} records over {args.days} days, "
                f"{args.users:,} users, built in {t3 - t0:.0f}s (Redis {memory}): "
                f"{scripted:,} through the per-record script at {scripted / (t2 - t1):,.0f}/s, "
                f"{imported:,} generated and bulk-imported at {imported / (t3 - t2):,.0f}/s; "
                f"writing 2,000 of them again added {again}"
            )

            timings = []
            for _ in range(3):
                t4 = time.perf_counter()
                report = await build_report(redis, keys)
                timings.append(time.perf_counter() - t4)
            report_s = min(timings)
            t5 = time.perf_counter()
            page = render_html(report)
            html_s = time.perf_counter() - t5
            print(
                f"report (daily, 5 breakdowns, drivers, top-20% share, peak hour, savings, "
                f"{len(report.anomalies)} anomalies): best of 3 {report_s * 1000:.0f} ms "
                f"(runs: {', '.join(f'{t * 1000:.0f}' for t in timings)} ms); "
                f"HTML {len(page) / 1024:.0f} KiB in {html_s * 1000:.0f} ms"
            )
            print(
                f"  spend ${report.cost_usd:,.2f}; top 20% of users {report.top20_users_share:.1%}"
                f"; peak hour {report.peak_hour_of_day}:00 UTC; days {len(report.daily)}"
            )
            daily = [a for a in report.anomalies if a.granularity == "day"]
            hourly = [a for a in report.anomalies if a.granularity == "hour"]
            print(f"  anomalies: {len(daily)} daily, {len(hourly)} hourly; e.g.")
            for anomaly in daily[:2] + hourly[:1]:
                print(f"  {anomaly.describe()}")
            if not args.no_scan:
                t6 = time.perf_counter()
                scanned = await scan_baseline(redis, keys)
                scan_s = time.perf_counter() - t6
                agree = scanned["cost_nusd"] == round(report.cost_usd * 1_000_000_000)
                print(
                    f"baseline full scan of the stream: {scan_s:.2f} s; rollup report "
                    f"{report_s * 1000:.0f} ms: {scan_s / report_s:.0f}x faster; "
                    f"same spend: {agree}; same peak hour: "
                    f"{scanned['peak_hour'] == report.peak_hour_of_day}; top-20% "
                    f"{scanned['top20']:.4f} vs {report.top20_users_share:.4f}"
                )


if __name__ == "__main__":
    asyncio.run(main())
