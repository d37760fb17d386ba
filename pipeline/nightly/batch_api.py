"""The batch-API route: packed batches that can wait go through a provider batch API at half price.

    divert ──▶ pending (Redis) ──▶ submit: one provider batch per (provider, model) and limits
                                      │        (a *submission*, durable in Redis)
                                      ▼
    poll (arq cron, any worker) ──▶ ended? download, join on custom_id (= our batch id)
                                      ├─ answered ─▶ BatchExecutor.run(answer=..., batch_api=True)
                                      └─ expired, cancelled, errored, missing ─▶ `<id>.s`, a
                                         synchronous batch with the same items

Every step is a state change in Redis, so a worker that dies anywhere loses nothing: an open
submission is polled by whichever worker holds its lease next. Settling is idempotent: the
executor stores the answer with its ledger record (id = our batch id, `batch_api=True`, batch
prices) once, so results read twice are never charged twice. Only top-level batches take this
route; the retries the executor makes (`<id>.0`, `<id>.r`, ...) and `<id>.s` run synchronously.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson
from redis.asyncio import Redis

from pipeline.config.settings import Settings
from pipeline.core.executor import BatchExecutor
from pipeline.costs.ledger import to_nano
from pipeline.errors import BreakerOpen, CallOverLimit, PermanentError, TransientError
from pipeline.keys import Keys
from pipeline.providers.base import ChatResponse
from pipeline.providers.batches import (
    BatchOutcome,
    BatchProvider,
    BatchStatus,
    build_batch_provider,
)
from pipeline.state.leases import Lease

logger = logging.getLogger("batchwise.batchapi")

# a provider batch lasts up to 24 h and its results are kept 29 days: own it for longer than that
OWNER_TTL_S = 31 * 86400

SYNC_SUFFIX = ".s"

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


class BatchApi:
    """Hands batches to provider batch APIs and brings their answers back, durably."""

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
        self._claim = redis.register_script(_CLAIM)
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
            pipe.zadd(k.bapi_pending(), {batch_id: _now_ms()}, nx=True)
            pipe.zrem(k.open_batches(), batch_id)
            await pipe.execute()
        return True

    async def to_sync(self, batch_id: str, reason: str) -> list[str]:
        """Send a batch back as an ordinary synchronous batch `<id>.s`; its id, to enqueue."""
        k = self.keys
        child = batch_id + SYNC_SUFFIX
        made = await self._to_sync_script(
            keys=[k.batch(batch_id), k.batch(child), k.open_batches(), k.bapi_pending()],
            args=[child, _now_ms(), reason, batch_id],
        )
        await self.executor.budgets.release(batch_id)  # `.s` reserves for itself
        if made:
            logger.info("batch %s goes synchronous as %s (%s)", batch_id, child, reason)
            return [child]
        return []

    # ---- submitting ----------------------------------------------------------------------------

    async def submit_pending(self, *, force: bool = False) -> tuple[int, list[str]]:
        """Turn pending batches into provider batches once the queue has been quiet for
        `batch_api_linger_s` (or is full, or `force`). Returns (provider batches created,
        batch ids sent back to the synchronous route)."""
        k = self.keys
        rows = await self.redis.zrange(k.bapi_pending(), 0, -1, withscores=True)
        if not rows:
            return 0, []
        newest_ms = max(score for _, score in rows)
        quiet = _now_ms() - newest_ms >= self.settings.batch_api_linger_s * 1000
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
                        args=[sub_id, _now_ms(), name, model, *[e.batch_id for e in chunk]],
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

    async def _abandon(self, sub_id: str, reason: str) -> list[str]:
        ids = await self._ids(sub_id)
        children: list[str] = []
        for batch_id in ids:
            children += await self.to_sync(batch_id, reason)
        await self._settled(sub_id, reason)
        return children

    # ---- polling -------------------------------------------------------------------------------

    async def poll(self) -> list[str]:
        """One look at every open submission; settle the ended ones. Returns batch ids to enqueue
        (synchronous re-runs and the executor's retry children)."""
        k = self.keys
        children: list[str] = []
        for raw in await self.redis.zrange(k.bapi_subs(), 0, -1):
            sub_id = raw.decode()
            lease = Lease(self.redis, k.bapi_lease(sub_id), self.settings.batch_api_lease_s)
            if not await lease.acquire():
                continue  # another worker is on it
            try:
                children += await self._poll_one(sub_id)
            except TransientError as exc:
                logger.warning("submission %s: %s; polled again later", sub_id, exc)
            finally:
                await lease.release()
        return children

    async def tick(self) -> list[str]:
        """Submit what is pending and poll what is open: the cron job's one pass."""
        _, to_sync = await self.submit_pending()
        return to_sync + await self.poll()

    async def _poll_one(self, sub_id: str) -> list[str]:
        k = self.keys
        sub = {
            a.decode(): b.decode()
            for a, b in (await self.redis.hgetall(k.bapi_sub(sub_id))).items()
        }
        if not sub or sub.get("state") == "settled":
            await self.redis.zrem(k.bapi_subs(), sub_id)
            return []
        provider = self.providers.get(sub["provider"])
        if provider is None:
            return await self._abandon(sub_id, f"provider {sub['provider']!r} is not configured")
        if sub["state"] == "submitting":
            return await self._resubmit(sub_id, sub, provider)
        status = await provider.status(sub["provider_batch"])
        await self.redis.hset(k.bapi_sub(sub_id), "detail", status.detail)
        if status.state == "in_progress":
            return []
        if status.state == "failed":
            return await self._abandon(sub_id, f"provider batch failed: {status.detail}")
        outcomes = await provider.results(sub["provider_batch"])
        return await self._settle(sub_id, outcomes, status)

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

    async def _settle(
        self, sub_id: str, outcomes: Sequence[BatchOutcome], status: BatchStatus
    ) -> list[str]:
        """Answer every batch of an ended submission from its results, joined on custom_id."""
        ids = await self._ids(sub_id)
        wanted = set(ids)
        by_id: dict[str, BatchOutcome] = {}
        for outcome in outcomes:
            if outcome.custom_id not in wanted:
                logger.warning(
                    "submission %s: ignored unknown custom_id %r", sub_id, outcome.custom_id
                )
                continue
            if outcome.custom_id in by_id:
                logger.warning(
                    "submission %s: custom_id %r answered twice", sub_id, outcome.custom_id
                )
                continue
            by_id[outcome.custom_id] = outcome
        latency_ms = 0
        if status.ended_at and status.created_at:
            latency_ms = max(0, int((status.ended_at - status.created_at) * 1000))
        children: list[str] = []
        for batch_id in ids:
            found = by_id.get(batch_id)
            if found is not None and found.response is not None:
                answer = replace(found.response, latency_ms=latency_ms)
                children += await self.executor.run(batch_id, answer=answer, batch_api=True)
                await self._settle_budget(batch_id, answer)
            else:
                reason = "missing from the results"
                if found is not None:
                    reason = f"{found.error_code}: {found.error_message}"[:300]
                children += await self.to_sync(batch_id, f"batch API: {reason}")
        await self._settled(sub_id, status.detail)
        return children

    async def _settle_budget(self, batch_id: str, answer: ChatResponse) -> None:
        """Turn the batch's budget reservation into its cost at batch prices (once)."""
        k = self.keys
        group = await self.redis.hget(k.batch(batch_id), "group")
        blob = await self.redis.get(k.group(group.decode())) if group else None
        if blob is None:
            return
        meta = orjson.loads(blob)
        cost = self.executor.prices.price(meta["model"], answer.usage, batch_api=True)
        try:
            await self.executor.budgets.settle(
                batch_id, meta["tenant"], 0 if cost is None else to_nano(cost)
            )
        except Exception:  # never lose a paid answer over bookkeeping; the hold stays counted
            logger.exception("batch %s: settling its budget reservation failed", batch_id)

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


def _now_ms() -> int:
    return int(time.time() * 1000)
