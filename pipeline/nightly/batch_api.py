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

route.py holds the route's state (divert, `<id>.s`, the submission records), submissions.py the
submitting, this module the polling and settling.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import orjson

from pipeline.costs.money import to_nano
from pipeline.errors import TransientError
from pipeline.nightly.submissions import Submitter
from pipeline.providers.base import ChatResponse
from pipeline.providers.batches import BatchOutcome, BatchStatus
from pipeline.state.leases import Lease

logger = logging.getLogger("batchwise.batchapi")


class BatchApi(Submitter):
    """Hands batches to provider batch APIs and brings their answers back, durably: the route
    (`BatchRoute`), its submissions (`Submitter`), and here the polling and settling."""

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
