"""The packer's selection rule is one rule: the take script in Redis and `select` in Python
(what `batchwise plan` uses) take the same items from the same pending sizes."""

from __future__ import annotations

import random

import pytest
from redis.asyncio import Redis

from pipeline.packing.selection import TAKE_LOOP, Budgets, budgets_for, select
from pipeline.testing import make_settings

# the queue's take script up to its selection, returning how many items it took
_COUNT = (
    "local entries = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)\n"
    + TAKE_LOOP
    + "return #taken"
)


def test_the_first_item_always_goes_and_budgets_stop_the_rest() -> None:
    budgets = Budgets(input_tokens=100, output_tokens=50)
    assert select([(500, 500), (1, 1)], 8, budgets) == 1
    assert select([(40, 10), (40, 10), (40, 10)], 8, budgets) == 2
    assert select([(1, 20), (1, 20), (1, 20)], 8, budgets) == 2
    assert select([(1, 1)] * 10, 4, budgets) == 4
    assert select([], 4, budgets) == 0


async def test_redis_and_python_take_the_same_items(redis_url: str) -> None:
    rng = random.Random(7)
    redis = Redis.from_url(redis_url)
    count = redis.register_script(_COUNT)
    key = "test:selection"
    try:
        for _ in range(300):
            sizes = [(rng.randint(1, 400), rng.randint(1, 300)) for _ in range(rng.randint(1, 30))]
            budgets = Budgets(rng.randint(1, 2000), rng.randint(1, 1500))
            max_items = rng.randint(1, 25)
            await redis.delete(key)
            await redis.rpush(key, *[f"k{i}|{tin}|{tout}" for i, (tin, tout) in enumerate(sizes)])
            args = ["group", max_items, budgets.input_tokens, budgets.output_tokens]
            in_redis = await count(keys=[key], args=args)
            assert in_redis == select(sizes, max_items, budgets), (sizes, budgets, max_items)
    finally:
        await redis.delete(key)
        await redis.aclose()


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-haiku-latest"])
def test_budgets_leave_room_for_the_system_prompt(redis_url: str, model: str) -> None:
    settings = make_settings(redis_url)
    short = budgets_for(settings, model, "Answer briefly.")
    long = budgets_for(settings, model, "Answer briefly. " * 200)
    assert 0 < long.input_tokens < short.input_tokens
    assert short.output_tokens == long.output_tokens > 0
    limits = settings.limits_for(model)
    assert short.input_tokens < limits.context_tokens
