"""A batch whose items go alone: one provider call per item, concurrently, inside the batch's job.

The packer marks a batch `alone` when packing its items would cost more than sending them one by
one (packing_gain.py). The batch still leaves as one arq job, so job slots and pickup stay per
batch, not per task; each item becomes a batch of one (`<batch>.s<i>`, `i` its place in the
batch), which the executor runs like any other batch (budgets, ledger, audit, cascade, retries),
all at once. These one-item batches live in memory only: an answered item is gone from Redis,
and a stored answer is reused, so a job that runs again re-runs only the items still pending,
without calling twice for any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis

from pipeline.keys import Keys
from pipeline.models import Batch, Item
from pipeline.providers.base import ChatResponse


class Runner(Protocol):
    redis: Redis
    keys: Keys

    async def execute(
        self,
        batch: Batch,
        items: Sequence[Item],
        stored: bytes | None,
        *,
        last_try: bool = False,
        answer: ChatResponse | None = None,
        batch_api: bool = False,
        attempt: int = 1,
    ) -> list[str]:
        """Run a loaded batch; return the ids of child batches to enqueue."""
        ...


def alone_batch(batch: Batch, item: Item) -> Batch:
    """The one-item batch that sends `item` of the alone `batch` on its own."""
    return batch.model_copy(
        update={
            "id": f"{batch.id}.s{batch.item_keys.index(item.key)}",
            "item_keys": (item.key,),
            "alone_attempts": 0,
            "alone": False,
            "recorded": False,
        }
    )


async def run_alone(
    runner: Runner, batch: Batch, items: Sequence[Item], *, last_try: bool, attempt: int
) -> list[str]:
    """Send every item of `batch` as its own call, concurrently; return the retry batches to
    enqueue. A transient failure of any call is raised once every call has ended."""
    singles = [alone_batch(batch, item) for item in items]
    # Not open batches of their own either: the sweeper would give a slow call a second job.
    # The parent stays open until they all end, and its job reruns them.
    stored = await runner.redis.mget([runner.keys.batch_response(b.id) for b in singles])
    runs = [
        runner.execute(single, [item], answer, last_try=last_try, attempt=attempt)
        for single, item, answer in zip(singles, items, stored, strict=True)
    ]
    children: list[str] = []
    failure: BaseException | None = None
    for outcome in await asyncio.gather(*runs, return_exceptions=True):
        if isinstance(outcome, BaseException):
            failure = failure or outcome
        else:
            children += outcome
    if failure is not None:
        raise failure
    return children
