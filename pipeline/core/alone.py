"""A batch whose items go alone: one provider call per item, concurrently, inside the batch's job.

The packer marks a batch `alone` when packing its items would cost more than sending them one by
one (packing_gain.py). The batch still leaves as one arq job, so job slots and pickup stay per
batch, not per task; its items become child batches of one (`<batch>.s<i>`), which the executor
runs like any other batch (budgets, ledger, audit, cascade, retries), all at once. Each child is
idempotent on its own, so a job that runs again re-runs only the children that did not finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis

from pipeline.keys import Keys
from pipeline.models import Batch, Item


class Runner(Protocol):
    redis: Redis
    keys: Keys

    async def run(self, batch_id: str, *, last_try: bool = False, attempt: int = 1) -> list[str]:
        """Run a batch; return the ids of child batches to enqueue."""
        ...


async def run_alone(
    runner: Runner, batch: Batch, items: Sequence[Item], *, last_try: bool, attempt: int
) -> list[str]:
    """Send every item of `batch` as its own call, concurrently; return the retry batches to
    enqueue. A transient failure of any call is raised once every call has ended."""
    ids = [f"{batch.id}.s{i}" for i in range(len(items))]
    k = runner.keys
    async with runner.redis.pipeline(transaction=False) as pipe:
        for child in ids:
            pipe.exists(k.batch(child))
        made = await pipe.execute()
    now = int(time.time() * 1000)
    # The children are not open batches of their own: the sweeper would give a slow call a
    # second job. The parent stays open until they all end, and its job reruns them.
    async with runner.redis.pipeline(transaction=False) as pipe:
        for child, item, exists in zip(ids, items, made, strict=True):
            if not exists:  # only this batch's job creates its children
                fields = {"group": batch.group, "items": item.key, "created_ms": now}
                pipe.hset(k.batch(child), mapping={**fields, "alone_attempts": 0, "status": "open"})
        await pipe.execute()
    return await run_children(runner, ids, last_try=last_try, attempt=attempt)


async def run_children(
    runner: Runner, ids: Sequence[str], *, last_try: bool, attempt: int
) -> list[str]:
    """Run these child batches at once; return their retry batches. A failure of any is
    raised once every child has ended (the parent's job then reruns them all)."""
    runs = [runner.run(child, last_try=last_try, attempt=attempt) for child in ids]
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
