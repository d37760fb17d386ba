"""What becomes of a batch while its cost breaker is open, on a real Redis: continuation batches
numbered on from the one that waited, the re-raise while tries are left, and the one-way import
rule that keeps this executor work out of budgets/."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline.core.batches import BatchStore
from pipeline.core.rebatch import Rebatcher
from pipeline.core.runs import RunStore
from pipeline.core.wiring import connect_redis
from pipeline.errors import BreakerOpen
from pipeline.keys import Keys
from pipeline.models import Batch, Item, TTLClass
from pipeline.packing.queue import GroupMetas
from pipeline.testing import make_settings

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"


@pytest.fixture
async def rebatch(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Rebatcher]:
    redis = connect_redis(redis_url)
    keys = Keys(f"rebatch-{request.node.name}")
    store = BatchStore(redis, keys, GroupMetas(redis, keys))
    yield Rebatcher(store, RunStore(redis, keys), make_settings(redis_url))
    await redis.aclose()


def batch_of(batch_id: str, keys: tuple[str, ...]) -> Batch:
    return Batch(
        id=batch_id,
        group="g",
        tenant="acme",
        model="m",
        system="",
        temperature=0.0,
        ttl_class=TTLClass.semi_static,
        item_keys=keys,
        alone_attempts=1,
    )


def item(key: str) -> Item:
    return Item(key=key, group="g", prompt=key, messages=(), max_tokens=10, input_tokens=1)


def opened() -> BreakerOpen:
    return BreakerOpen("open", scope="global", until=0.0, retry_after_s=1.0)


async def test_a_waiting_batch_out_of_tries_continues_as_the_next_numbered_batch(
    rebatch: Rebatcher,
) -> None:
    redis, keys = rebatch.store.redis, rebatch.store.keys
    batch = batch_of("b7.w1", ("i1", "i2"))
    await redis.hset(keys.batch(batch.id), mapping={"group": "g", "status": "open"})
    await redis.zadd(keys.open_batches(), {batch.id: 1})

    children = await rebatch.held(batch, [item("i1"), item("i2")], opened(), last_try=True)

    assert children == ["b7.w2"]
    child = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.batch("b7.w2"))).items()}
    assert child["items"] == "i1,i2" and child["status"] == "open"
    assert child["reason"] == "waiting for the cost breaker" and child["alone_attempts"] == "1"
    assert await redis.hget(keys.batch(batch.id), "status") == b"done"
    assert [m.decode() for m in await redis.zrange(keys.open_batches(), 0, -1)] == ["b7.w2"]


async def test_a_waiting_batch_with_tries_left_raises_and_writes_nothing(
    rebatch: Rebatcher,
) -> None:
    redis, keys = rebatch.store.redis, rebatch.store.keys
    exc = opened()
    with pytest.raises(BreakerOpen) as raised:
        await rebatch.held(batch_of("b8", ("i1",)), [item("i1")], exc, last_try=False)
    assert raised.value is exc
    assert await redis.exists(keys.batch("b8.w1")) == 0


def test_budgets_import_nothing_from_core() -> None:
    """Budgets reserve, settle and trip; splitting batches and writing results is core's."""
    for path in sorted((PIPELINE / "budgets").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("pipeline.core"), f"{path.name}: {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("pipeline.core"), path.name
