"""Alone batches: every call of one try hands its answers out together, exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from pipeline.core.alone import HandOut, Settled, run_alone
from pipeline.costs.savings import Answered
from pipeline.keys import Keys
from pipeline.models import Batch, Item, Message, TTLClass


class Book:
    async def record_savings(self, batch: Batch, answered: list[Answered]) -> None:
        self.recorded = answered


class Runner:
    """The executor's part run_alone uses: the first item's answer was stored by an earlier try
    (it answers at once, with no await), the others call a provider that takes a while."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys, self.book = redis, keys, Book()
        self.handed: list[list[str]] = []

    async def share_hold(self, batch: Batch, calling: Any, attempt: int) -> None:
        return None

    async def hand_out(self, settled: Settled) -> list[Answered]:
        self.handed.append([item.key for item, _ in settled])
        return [Answered(item, 1, 0, 0, 0) for item, _ in settled]

    async def execute(
        self,
        batch: Batch,
        items: list[Item],
        stored: bytes | None,
        *,
        hand_out: HandOut,
        **_: Any,
    ) -> list[str]:
        if stored is None:
            await asyncio.sleep(0.05)
        answered = await hand_out([(items[0], {"output": items[0].prompt})])
        assert [a.item.key for a in answered] == [items[0].key]
        return []


async def test_a_call_answered_by_an_earlier_try_waits_for_the_others(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    keys = Keys("test-alone")
    items = [
        Item(
            key=f"k{i}",
            group="g",
            prompt=f"q{i}",
            messages=(Message(role="user", content=f"q{i}"),),
            max_tokens=10,
            input_tokens=3,
        )
        for i in range(3)
    ]
    batch = Batch(
        id="b1",
        group="g",
        tenant="t",
        model="gpt-4o-mini",
        system="",
        temperature=0.0,
        response_schema=None,
        ttl_class=TTLClass.static_knowledge,
        item_keys=tuple(i.key for i in items),
        alone=True,
    )
    await redis.set(keys.batch_response("b1.s0"), b"{}")  # the first call answered last time
    runner = Runner(redis, keys)
    try:
        assert await run_alone(runner, batch, items, last_try=False, attempt=2) == []
        assert runner.handed == [["k0", "k1", "k2"]]  # once, with every call's answer
        assert [a.item.key for a in runner.book.recorded] == ["k0", "k1", "k2"]
    finally:
        await redis.delete(keys.batch_response("b1.s0"))
        await redis.aclose()
