"""Concurrent calls against one cost cap: a check-then-record budget versus the reserving breaker.

The baseline does what many gateways do: before a call it checks the recorded spend against the
cap, and records the cost after the call. Calls that start together all pass the check, so the
spend walks past the cap. The breaker (pipeline/budgets/breaker.py) reserves each call's worst case
atomically first and settles it afterwards. Both run here, in one process, on a real Redis, with
the same calls (cost and latency drawn from one seeded generator):

    python bench/budget_race.py [--calls 400] [--concurrency 50] [--cap-usd 0.45]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from pipeline.budgets.breaker import Budgets
from pipeline.config.loading import load_settings
from pipeline.core.wiring import connect_redis
from pipeline.costs.money import NANO, to_nano
from pipeline.costs.prices import PriceTable
from pipeline.errors import BreakerOpen, BudgetBusy
from pipeline.keys import Keys
from pipeline.state.embedded import EmbeddedRedis

WORST_USD = Decimal("0.02")  # the most one call can cost (full max_tokens)


def make_calls(n: int, seed: int) -> list[tuple[int, float]]:
    """(actual cost in nano-dollars, latency s) per call: costs 20-100% of the worst case."""
    rng = random.Random(seed)
    worst = to_nano(WORST_USD)
    return [(int(worst * rng.uniform(0.2, 1.0)), rng.uniform(0.02, 0.08)) for _ in range(n)]


async def check_then_record(url: str, calls: list[tuple[int, float]], cap: int, conc: int) -> int:
    redis = connect_redis(url)
    key = f"bench:naive:{time.time_ns()}"
    queue = list(calls)
    sem = asyncio.Semaphore(conc)

    async def one(cost: int, latency: float) -> None:
        async with sem:
            if int(await redis.get(key) or 0) >= cap:
                return  # over budget: refused
            await asyncio.sleep(latency)  # the provider call
            await redis.incrby(key, cost)

    await asyncio.gather(*(one(c, lat) for c, lat in queue))
    spent = int(await redis.get(key) or 0)
    await redis.aclose()
    return spent


async def reserving(url: str, calls: list[tuple[int, float]], cap_usd: Decimal, conc: int) -> int:
    redis = connect_redis(url)
    settings = load_settings(
        env={},
        redis_url=url,
        key_prefix=f"bench{time.time_ns()}",
        breaker_limits={"global": {"hourly_usd": cap_usd}},
    )
    keys = Keys(settings.key_prefix)
    budgets = Budgets(redis, settings, keys, PriceTable())
    sem = asyncio.Semaphore(conc)

    async def one(i: int, cost: int, latency: float) -> None:
        async with sem:
            while True:
                try:
                    await budgets.reserve(f"c{i}", "bench", to_nano(WORST_USD))
                    break
                except BudgetBusy:
                    await asyncio.sleep(0.01)  # calls in flight hold the room: wait for them
                except BreakerOpen:
                    return  # the cap is reached: refused
            await asyncio.sleep(latency)
            await budgets.settle(f"c{i}", "bench", cost)

    await asyncio.gather(*(one(i, c, lat) for i, (c, lat) in enumerate(calls)))
    spent = int(await redis.get(keys.month_spend(_month())) or 0)
    await redis.aclose()
    return spent


async def overhead_ms(url: str, n: int) -> float:
    """Milliseconds one reserve + settle pair adds to a call, run one after another."""
    redis = connect_redis(url)
    settings = load_settings(
        env={},
        redis_url=url,
        key_prefix=f"bench{time.time_ns()}",
        breaker_limits={"global": {"hourly_usd": Decimal(10**6)}, "tenant": {"daily_usd": 10**6}},
    )
    keys = Keys(settings.key_prefix)
    budgets = Budgets(redis, settings, keys, PriceTable())
    start = time.perf_counter()
    for i in range(n):
        await budgets.reserve(f"o{i}", "bench", 1000)
        await budgets.settle(f"o{i}", "bench", 500)
    elapsed = time.perf_counter() - start
    await redis.aclose()
    return elapsed / n * 1000


def _month() -> str:
    return time.strftime("%Y-%m", time.gmtime())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--cap-usd", type=Decimal, default=Decimal("0.45"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    calls = make_calls(args.calls, args.seed)
    cap = to_nano(args.cap_usd)
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bw-bench-")))
    url = server.start()
    try:
        naive = await check_then_record(url, calls, cap, args.concurrency)
        guarded = await reserving(url, calls, args.cap_usd, args.concurrency)
        per_call_ms = await overhead_ms(url, 2000)
    finally:
        server.stop()
    print(f"{args.calls} calls, {args.concurrency} at a time, cap ${args.cap_usd}")
    print(f"  check-then-record: spent ${Decimal(naive) / NANO:.4f} ({naive / cap:.0%} of the cap)")
    share = guarded / cap
    print(f"  reserving breaker: spent ${Decimal(guarded) / NANO:.4f} ({share:.0%} of the cap)")
    print(f"  overshoot ratio (baseline / breaker): {naive / max(guarded, 1):.2f}x")
    print(
        f"  breaker cost per call (reserve + settle, limits on both scopes): {per_call_ms:.3f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
