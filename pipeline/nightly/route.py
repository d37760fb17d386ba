"""The batch-API route's state in Redis: which batches take it, which leave it for `<id>.s`, and
the records of the provider batches (*submissions*) they went out in. `pipeline.nightly.batch_api`
describes the whole route."""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis

from pipeline.config.settings import Settings
from pipeline.core.executor import BatchExecutor
from pipeline.keys import Keys
from pipeline.providers.batches import BatchProvider, build_batch_provider

logger = logging.getLogger("batchwise.batchapi")

SYNC_SUFFIX = ".s"

_TO_SYNC = """
-- KEYS: batch, child, open batches, pending;  ARGV: child id, now ms, reason, batch id
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local group, items = unpack(redis.call('HMGET', KEYS[1], 'group', 'items'))
  if not group then return 0 end
  redis.call('HSET', KEYS[2], 'group', group, 'items', items, 'created_ms', ARGV[2],
    'alone_attempts', 0, 'reason', ARGV[3], 'status', 'open', 'route', 'sync')
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
end
redis.call('HSET', KEYS[1], 'status', 'done')
redis.call('EXPIRE', KEYS[1], 86400)
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
return 1
"""


class BatchRoute:
    """Hands batches to the batch-API route and back, and keeps the submission records."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        keys: Keys,
        executor: BatchExecutor,
        providers: dict[str, BatchProvider] | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keys
        self.executor = executor
        if providers is None:
            providers = {}
            for config in settings.providers:
                built = build_batch_provider(config)
                if built is not None:
                    providers[config.name] = built
        self.providers = providers
        self._to_sync_script = redis.register_script(_TO_SYNC)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()

    def provider_for(self, model: str) -> BatchProvider | None:
        """The first configured provider serving `model` that has a batch API."""
        for config in self.settings.providers:
            if config.name in self.providers and config.serves(model):
                return self.providers[config.name]
        return None

    # ---- routing -------------------------------------------------------------------------------

    async def divert(self, batch_id: str) -> bool:
        """Hand a batch to the batch-API queue when its tasks can wait; True when handed over.

        The caller (the batch job) then stops: the poller settles the batch later.
        """
        if "." in batch_id:
            return False
        k = self.keys
        raw = await self.redis.hmget(k.batch(batch_id), ["group", "status", "route"])
        group, status, route = (v.decode() if v is not None else None for v in raw)
        if group is None or status == "done" or route == "sync":
            return False
        if route == "batchapi":
            return True
        meta = await self.executor.metas.get(group)
        if meta is None:
            return False
        if not (meta.get("batch_api") or self.settings.batch_api):
            return False
        if self.provider_for(meta["model"]) is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.batch(batch_id), "route", "batchapi")
            pipe.zadd(k.bapi_pending(), {batch_id: now_ms()}, nx=True)
            pipe.zrem(k.open_batches(), batch_id)
            await pipe.execute()
        return True

    async def to_sync(self, batch_id: str, reason: str) -> list[str]:
        """Send a batch back as an ordinary synchronous batch `<id>.s`; its id, to enqueue."""
        k = self.keys
        child = batch_id + SYNC_SUFFIX
        made = await self._to_sync_script(
            keys=[k.batch(batch_id), k.batch(child), k.open_batches(), k.bapi_pending()],
            args=[child, now_ms(), reason, batch_id],
        )
        await self.executor.budgets.release(batch_id)  # `.s` reserves for itself
        if made:
            logger.info("batch %s goes synchronous as %s (%s)", batch_id, child, reason)
            return [child]
        return []

    async def _abandon(self, sub_id: str, reason: str) -> list[str]:
        ids = await self._ids(sub_id)
        children: list[str] = []
        for batch_id in ids:
            children += await self.to_sync(batch_id, reason)
        await self._settled(sub_id, reason)
        return children

    async def _ids(self, sub_id: str) -> list[str]:
        raw = await self.redis.hget(self.keys.bapi_sub(sub_id), "ids")
        return [i for i in (raw.decode() if raw else "").split(",") if i]

    async def _settled(self, sub_id: str, detail: str) -> None:
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.bapi_sub(sub_id), mapping={"state": "settled", "detail": detail})
            pipe.expire(k.bapi_sub(sub_id), self.settings.results_ttl_s)
            pipe.zrem(k.bapi_subs(), sub_id)
            await pipe.execute()

    async def open_submissions(self) -> list[dict[str, str]]:
        """Every open submission's record (for status commands and tests)."""
        out = []
        for raw in await self.redis.zrange(self.keys.bapi_subs(), 0, -1):
            sub = await self.redis.hgetall(self.keys.bapi_sub(raw.decode()))
            out.append({"id": raw.decode(), **{a.decode(): b.decode() for a, b in sub.items()}})
        return out


def now_ms() -> int:
    return int(time.time() * 1000)
