"""A batch's state in Redis: load an open batch with its items, open a child batch, close one.

A batch is a hash (`group`, `items`, `created_ms`, `alone_attempts`, `reason`, `status`) plus
its place in the open-batches set; its items are their own keys. The executor and the
rebatching of unanswered items share these three steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio import Redis

from pipeline.keys import Keys
from pipeline.models import Batch, Item, TTLClass
from pipeline.packing.queue import GroupMetas, item_json


class BatchStore:
    """Open batches in Redis, and the group metadata they are built from."""

    def __init__(self, redis: Redis, keys: Keys, metas: GroupMetas) -> None:
        self.redis = redis
        self.keys = keys
        self.metas = metas

    async def load(self, batch_id: str) -> tuple[Batch, list[Item], bytes | None] | None:
        """The open batch, its items and its stored answer, in two round trips (three when
        this process first meets the group); None when it is done or gone."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.batch(batch_id))
            pipe.get(k.batch_response(batch_id))
            fields, stored = await pipe.execute()
        raw = {key.decode(): v.decode() for key, v in fields.items()}
        if not raw or raw.get("status") == "done":
            return None
        item_keys = tuple(raw["items"].split(","))
        meta = await self.metas.get(raw["group"])
        if meta is None:
            raise KeyError(f"batch {batch_id}: unknown group {raw['group']}")
        blobs = await self.redis.mget([k.item(key) for key in item_keys])
        batch = Batch(
            id=batch_id,
            group=raw["group"],
            tenant=meta["tenant"],
            model=meta["model"],
            system=meta["system"],
            temperature=meta["temperature"],
            response_schema=meta["response_schema"],
            ttl_class=TTLClass(meta["ttl_class"]),
            item_keys=item_keys,
            alone_attempts=int(raw.get("alone_attempts", 0)),
            created_at=int(raw.get("created_ms", 0)) / 1000,
            alone=raw.get("alone") == "1",
        )
        items = [Item.model_validate_json(item_json(b)) for b in blobs if b is not None]
        return batch, items, stored

    async def open_child(
        self,
        batch: Batch,
        child_id: str,
        item_keys: Sequence[str],
        reason: str,
        *,
        alone_attempts: int,
    ) -> None:
        """A new open batch of `batch`'s group holding `item_keys`, for the caller to enqueue."""
        now_ms = int(time.time() * 1000)
        await self.redis.hset(
            self.keys.batch(child_id),
            mapping={
                "group": batch.group,
                "items": ",".join(item_keys),
                "created_ms": now_ms,
                "alone_attempts": alone_attempts,
                "reason": reason,
                "status": "open",
            },
        )
        await self.redis.zadd(self.keys.open_batches(), {child_id: now_ms})

    async def close(self, batch: Batch) -> None:
        """Mark a recorded batch done (kept a day) and take it out of the open set."""
        if not batch.recorded:
            return
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(k.batch(batch.id), "status", "done")
            pipe.expire(k.batch(batch.id), 86400)
            pipe.zrem(k.open_batches(), batch.id)
            await pipe.execute()
