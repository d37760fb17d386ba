"""What becomes of a batch's items that its call did not answer.

Items without a valid output are retried in child batches: in halves (`<batch>.0`, `.1`), then
alone (`<batch>.r`), and after `max_alone_attempts` they end `failed` with the reason. While the
cost breaker is open a batch waits (its job re-raises `BreakerOpen`) or, by `breaker_policy`,
has its tasks rejected; a waiting batch whose job runs out of tries hands its items to a
continuation batch (`<batch>.w1`, `.w2`, ...). A batch too costly for a whole window is split in
halves (`<batch>.b0`, `.b1`); a single task that is, is rejected. Child ids are deterministic, so
a re-run batch creates the same children.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from pipeline.config.settings import Settings
from pipeline.core.batches import BatchStore
from pipeline.core.runs import RunStore
from pipeline.costs import metrics
from pipeline.errors import BreakerOpen, BudgetBusy, CallOverLimit
from pipeline.models import Batch, Item
from pipeline.packing.queue import item_json

logger = logging.getLogger("batchwise.executor")

_CONTINUATION = re.compile(r"\.w(\d+)$")


class Rebatcher:
    """Child batches and final outcomes for the items a batch's call left without an answer."""

    def __init__(self, store: BatchStore, runs: RunStore, settings: Settings) -> None:
        self.store = store
        self.runs = runs
        self.settings = settings

    async def retry(self, batch: Batch, item_keys: list[str], reason: str) -> list[str]:
        """Child batches for items without a valid output: halves, then alone, then failure."""
        if len(item_keys) == 1:
            attempts = batch.alone_attempts + 1 if len(batch.item_keys) == 1 else 0
            if attempts >= self.settings.max_alone_attempts:
                blob = await self.store.redis.get(self.store.keys.item(item_keys[0]))
                items = [Item.model_validate_json(item_json(blob))] if blob else []
                return await self.fail(batch, items, "no_valid_output", reason)
            plan = [(f"{batch.id}.r", item_keys, attempts)]
        else:
            half = (len(item_keys) + 1) // 2
            plan = [(f"{batch.id}.0", item_keys[:half], 0), (f"{batch.id}.1", item_keys[half:], 0)]
        children = []
        for child_id, keys, attempts in plan:
            # only this batch's job creates its children: a re-run finds them there
            if not await self.store.redis.exists(self.store.keys.batch(child_id)):
                await self.store.open_child(batch, child_id, keys, reason, alone_attempts=attempts)
            children.append(child_id)
        logger.info(
            "batch %s: %d item(s) retried as %s (%s)",
            batch.id,
            len(item_keys),
            ", ".join(children),
            reason,
        )
        return children

    async def fail(self, batch: Batch, items: Sequence[Item], code: str, message: str) -> list[str]:
        """End the items `failed` with `code` and close the batch."""
        for tasks in await self._end(batch, items, "failed", code, message):
            metrics.observe_failed(tasks)
        await self.store.close(batch)
        return []

    async def held(
        self, batch: Batch, items: Sequence[Item], exc: BreakerOpen, *, last_try: bool
    ) -> list[str]:
        """What a batch does while its breaker is open: wait (re-raise, or hand its items to a
        continuation batch when its job is out of tries) or have its tasks rejected. A batch too
        costly for a whole window is split in halves; a single task that is, is rejected."""
        over = isinstance(exc, CallOverLimit)
        if over and len(items) > 1:
            half = (len(items) + 1) // 2
            parts = [items[:half], items[half:]]
            children = [f"{batch.id}.b{i}" for i in range(2)]
            for child, part in zip(children, parts, strict=True):
                await self._child(batch, child, part, "split to fit the cost limit")
            await self.store.close(batch)
            logger.info("batch %s split to fit %s: %s", batch.id, exc.scope, ", ".join(children))
            return children
        if over or (self.settings.breaker_policy == "reject" and not isinstance(exc, BudgetBusy)):
            await self._end(batch, items, "rejected", "budget_exceeded", str(exc))
            await self.store.close(batch)
            return []
        if not last_try:
            raise exc
        match = _CONTINUATION.search(batch.id)
        base = batch.id[: match.start()] if match else batch.id
        child = f"{base}.w{int(match.group(1)) + 1 if match else 1}"
        await self._child(batch, child, items, "waiting for the cost breaker")
        await self.store.close(batch)
        logger.info("batch %s waits for breaker %s as %s", batch.id, exc.scope, child)
        return [child]

    async def _child(self, batch: Batch, child: str, items: Sequence[Item], reason: str) -> None:
        keys = [item.key for item in items]
        await self.store.open_child(batch, child, keys, reason, alone_attempts=batch.alone_attempts)

    async def _end(
        self, batch: Batch, items: Sequence[Item], status: str, code: str, message: str
    ) -> list[int]:
        """Write each item's final outcome (with what it has cost so far); returns how many
        tasks each item answered."""
        spent = await self.runs.spent([item.key for item in items])
        return await self.runs.finish_items(
            [
                (
                    item.key,
                    {
                        "status": status,
                        "model": batch.model,
                        "batch_id": batch.id,
                        "batch_size": len(items),
                        **cost,
                        "error": {"code": code, "message": message},
                    },
                )
                for item, cost in zip(items, spent, strict=True)
            ]
        )
