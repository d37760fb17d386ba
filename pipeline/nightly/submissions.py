"""Submitting: pending batch-API batches become provider batches, one per (provider, model) and
limits, each first claimed as a durable submission record so no batch is sent twice."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from redis.commands.core import AsyncScript

from pipeline.errors import BreakerOpen, CallOverLimit, PermanentError, TransientError
from pipeline.nightly.route import BatchRoute, now_ms
from pipeline.providers.batches import BatchProvider
from pipeline.state.leases import Lease

logger = logging.getLogger("batchwise.batchapi")

# a provider batch lasts up to 24 h and its results are kept 29 days: own it for longer than that
OWNER_TTL_S = 31 * 86400

_CLAIM = """
-- KEYS: pending, subs, sub;  ARGV: sub id, now ms, provider, model, batch ids...
for i = 5, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then return 0 end
end
local ids = {}
for i = 5, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  ids[#ids + 1] = ARGV[i]
end
redis.call('HSET', KEYS[3], 'provider', ARGV[3], 'model', ARGV[4], 'ids', table.concat(ids, ','),
  'state', 'submitting', 'created_ms', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Entry:
    batch_id: str
    line: bytes


def chunk_entries(entries: Sequence[Entry], max_requests: int, max_bytes: int) -> list[list[Entry]]:
    """Consecutive chunks of at most `max_requests` entries and `max_bytes` bytes (with newlines).

    An entry too big for any chunk gets one of its own; the caller sends it synchronously.
    """
    chunks: list[list[Entry]] = []
    current: list[Entry] = []
    size = 0
    for entry in entries:
        cost = len(entry.line) + 1
        if current and (len(current) >= max_requests or size + cost > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(entry)
        size += cost
    if current:
        chunks.append(current)
    return chunks


class Submitter(BatchRoute):
    """Creates the provider batches of the batch-API route, durably."""

    @cached_property
    def _claim(self) -> AsyncScript:
        return self.redis.register_script(_CLAIM)

    async def submit_pending(self, *, force: bool = False) -> tuple[int, list[str]]:
        """Turn pending batches into provider batches once the queue has been quiet for
        `batch_api_linger_s` (or is full, or `force`). Returns (provider batches created,
        batch ids sent back to the synchronous route)."""
        k = self.keys
        rows = await self.redis.zrange(k.bapi_pending(), 0, -1, withscores=True)
        if not rows:
            return 0, []
        newest_ms = max(score for _, score in rows)
        quiet = now_ms() - newest_ms >= self.settings.batch_api_linger_s * 1000
        if not (force or quiet or len(rows) >= self.settings.batch_api_max_requests):
            return 0, []
        targets: dict[tuple[str, str], list[Entry]] = {}
        to_sync: list[str] = []
        for raw_id, _score in rows:
            batch_id = raw_id.decode()
            loaded = await self.executor.load(batch_id)
            if loaded is None or not loaded[1]:  # finished, or nothing left to ask: close it
                await self.executor.run(batch_id, last_try=True)
                await self.redis.zrem(k.bapi_pending(), batch_id)
                continue
            batch, items = loaded
            provider = self.provider_for(batch.model)
            if provider is None:
                to_sync += await self.to_sync(batch_id, "no batch API serves the model")
                continue
            request, _ = self.executor.request_for(batch, items)
            try:  # the budget holds the batch price of the worst case until the batch settles
                budgets = self.executor.budgets
                worst_nusd = budgets.worst_case_nusd(batch.model, request)
                await budgets.reserve(batch_id, batch.tenant, (worst_nusd + 1) // 2)
            except CallOverLimit as exc:  # the synchronous route splits or rejects it
                to_sync += await self.to_sync(batch_id, str(exc))
                continue
            except BreakerOpen as exc:
                logger.info("batch %s waits for the budget: %s", batch_id, exc)
                continue
            line = provider.entry(batch_id, request)
            targets.setdefault((provider.name, batch.model), []).append(Entry(batch_id, line))
        created = 0
        for (name, model), entries in targets.items():
            provider = self.providers[name]
            max_requests = min(provider.max_requests, self.settings.batch_api_max_requests)
            max_bytes = min(provider.max_bytes, self.settings.batch_api_max_bytes)
            for chunk in chunk_entries(entries, max_requests, max_bytes):
                if len(chunk) == 1 and len(chunk[0].line) + 1 > max_bytes:
                    to_sync += await self.to_sync(chunk[0].batch_id, "too big for a batch file")
                    continue
                sub_id = uuid.uuid4().hex[:20]
                lease = Lease(self.redis, k.bapi_lease(sub_id), self.settings.batch_api_lease_s)
                await lease.acquire()  # a new id: nobody else can hold it
                try:
                    claimed = await self._claim(
                        keys=[k.bapi_pending(), k.bapi_subs(), k.bapi_sub(sub_id)],
                        args=[sub_id, now_ms(), name, model, *[e.batch_id for e in chunk]],
                    )
                    if not claimed:  # another worker took some of these; the next tick sees them
                        continue
                    to_sync += await self._send(sub_id, provider, [e.line for e in chunk])
                    created += 1
                finally:
                    await lease.release()
        return created, to_sync

    async def _send(self, sub_id: str, provider: BatchProvider, lines: list[bytes]) -> list[str]:
        """Create the provider batch of a claimed submission; on refusal go synchronous."""
        k = self.keys
        try:
            provider_batch = await provider.submit(lines, tag=sub_id)
        except TransientError as exc:
            logger.warning("submission %s: %s; retried at the next poll", sub_id, exc)
            return []
        except PermanentError as exc:
            logger.warning("submission %s refused: %s; its batches go synchronous", sub_id, exc)
            return await self._abandon(sub_id, f"batch API refused: {exc}")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.bapi_owner(provider_batch), sub_id, ex=OWNER_TTL_S)
            pipe.hset(
                k.bapi_sub(sub_id), mapping={"state": "submitted", "provider_batch": provider_batch}
            )
            await pipe.execute()
        logger.info("submission %s: %d request(s) as %s", sub_id, len(lines), provider_batch)
        return []

    async def _resubmit(
        self, sub_id: str, sub: dict[str, str], provider: BatchProvider
    ) -> list[str]:
        """A submission whose creation was interrupted: adopt the batch it made, or make it."""
        ids = sub["ids"].split(",")
        created_ms = int(sub.get("created_ms") or 0)
        for candidate in await provider.find(sub_id, created_ms=created_ms, requests=len(ids)):
            owner = self.keys.bapi_owner(candidate)
            if await self.redis.set(owner, sub_id, nx=True, ex=OWNER_TTL_S):
                await self.redis.hset(
                    self.keys.bapi_sub(sub_id),
                    mapping={"state": "submitted", "provider_batch": candidate},
                )
                logger.info("submission %s: adopted %s after an interruption", sub_id, candidate)
                return []
        lines: list[bytes] = []
        live: list[str] = []
        for batch_id in ids:
            loaded = await self.executor.load(batch_id)
            if loaded is None or not loaded[1]:
                continue
            request, _ = self.executor.request_for(*loaded)
            lines.append(provider.entry(batch_id, request))
            live.append(batch_id)
        if not lines:
            await self._settled(sub_id, "nothing left to send")
            return []
        await self.redis.hset(self.keys.bapi_sub(sub_id), "ids", ",".join(live))
        return await self._send(sub_id, provider, lines)
