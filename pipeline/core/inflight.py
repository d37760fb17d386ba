"""Calls in flight: a provider call that may have been billed always reaches the ledger.

Before a batch's call goes out, its *intent* (call id, which try, the reserved worst-case cost)
is written beside the batch; once the call's record (answer or error) is in the ledger the intent
is removed. A worker that dies mid-call, or a job cancelled mid-call, leaves its intent behind,
and whoever calls for the batch next finds it first: the lost call is recorded as an attempt of
unknown outcome (status `unknown`) at its reserved worst case, spread evenly over the batch's
items, and its budget hold is settled at that amount. When the batch's answer later arrives (the
re-run's own call, or the first worker's answer after all), an `adjustment` record brings the
lost call to the cost of that answer: the same request, answered. The budget keeps the worst
case: the breaker may over-count a lost call, never under-count it.

Every step is idempotent by record id, so a re-run that dies half-way repeats it harmlessly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from pipeline.budgets.breaker import Budgets
from pipeline.budgets.shared import Hold, settle_part
from pipeline.costs.ledger import Ledger, Share, split_int
from pipeline.costs.money import usd
from pipeline.costs.savings import cost_shares
from pipeline.keys import Keys
from pipeline.models import Batch, CallRecord, Item

logger = logging.getLogger("batchwise.inflight")

INTENT_TTL_S = 2 * 86400  # as long as a budget reservation is kept
OPEN, RECORDED = "open", "recorded"

_PREPARE = """
-- KEYS: the batch's intents;  ARGV: ttl s.
-- Numbers the batch's next call; returns its number and the intents of earlier calls that are
-- still there (the first call has none to look at).
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
if seq == 1 then return {seq, {}} end
return {seq, redis.call('HGETALL', KEYS[1])}
"""

_FINISH = """
-- KEYS: the batch's intents;  ARGV: call id.
-- Removes the call's intent; returns it (false: none) and the batch's other intents.
local all, mine, others = redis.call('HGETALL', KEYS[1]), false, {}
for i = 1, #all, 2 do
  if all[i] == ARGV[1] then
    mine = all[i + 1]
  elseif all[i] ~= 'seq' then
    others[#others + 1] = all[i]
    others[#others + 1] = all[i + 1]
  end
end
if mine then redis.call('HDEL', KEYS[1], ARGV[1]) end
return {mine, others}
"""


@dataclass(frozen=True)
class Intent:
    """A call that went out: its id, the try that made it, the provider and model it was sent
    to first (a fallback may have taken it), its reserved worst case, and the hold it shares
    with other calls ("": its own reservation, `call_id`)."""

    call_id: str
    attempt: int
    provider: str
    model: str
    worst_nusd: int
    at: float
    state: str = OPEN
    hold: str = ""

    def dumps(self) -> str:
        return orjson.dumps(self.__dict__).decode()

    @classmethod
    def loads(cls, blob: bytes) -> Intent:
        return cls(**orjson.loads(blob))


class InFlight:
    """Writes, resolves and recovers the intents of a batch's provider calls."""

    def __init__(self, redis: Redis, keys: Keys, ledger: Ledger, budgets: Budgets) -> None:
        self.redis = redis
        self.keys = keys
        self.ledger = ledger
        self.budgets = budgets
        self._prepare = redis.register_script(_PREPARE)
        self._finish = redis.register_script(_FINISH)

    async def prepare(self, batch: Batch, items: Sequence[Item]) -> str:
        """Record the batch's lost calls; return the id of the call about to be made (the batch
        id for its first call, `batch~n` for the n-th)."""
        key = self.keys.call_intents(batch.id)
        seq, raw = await self._prepare(keys=[key], args=[INTENT_TTL_S])
        for field, blob in zip(raw[::2], raw[1::2], strict=True):
            if field != b"seq":
                await self._record_lost(batch, items, Intent.loads(blob))
        return batch.id if int(seq) == 1 else f"{batch.id}~{seq}"

    async def begin(
        self,
        batch: Batch,
        call_id: str,
        attempt: int,
        provider: str,
        worst_nusd: int,
        hold: str = "",
    ) -> None:
        """Say that `call_id` is about to reach `provider` (under `hold`, a shared hold)."""
        now = time.time()
        intent = Intent(call_id, attempt, provider, batch.model, worst_nusd, now, OPEN, hold)
        await self.redis.hset(self.keys.call_intents(batch.id), call_id, intent.dumps())

    async def finish(
        self, batch: Batch, items: Sequence[Item], call_id: str, cost_nusd: int | None
    ) -> None:
        """The call's record is in the ledger: drop its intent, and reconcile every lost call of
        the batch to `cost_nusd` (an answer's cost; None after an error: nothing to go by, except
        for this very call, which then cost nothing)."""
        mine, others = await self._finish(keys=[self.keys.call_intents(batch.id)], args=[call_id])
        if mine and Intent.loads(mine).state == RECORDED:  # taken for lost meanwhile
            await self._adjust(batch, items, Intent.loads(mine), cost_nusd or 0)
        if cost_nusd is None:
            return
        for field, blob in zip(others[::2], others[1::2], strict=True):
            if field == b"seq":
                continue
            intent = Intent.loads(blob)
            if intent.state == RECORDED:
                await self._adjust(batch, items, intent, cost_nusd)
                await self.redis.hdel(self.keys.call_intents(batch.id), intent.call_id)

    async def _record_lost(self, batch: Batch, items: Sequence[Item], intent: Intent) -> None:
        """A call whose worker never said how it ended: in the ledger at its worst case."""
        if intent.state == OPEN and await self.redis.sismember(
            self.keys.ledger_ids(), f"{batch.id}#{intent.attempt}"
        ):  # its error was recorded; the worker died before dropping the intent
            await self.redis.hdel(self.keys.call_intents(batch.id), intent.call_id)
            return
        record, shares = self._lost_record(batch, items, intent, "unknown", intent.worst_nusd)
        if await self.ledger.record(record, None, shares):
            logger.warning(
                "batch %s: call %s was in flight when its worker died; recorded at its worst "
                "case of $%s until the batch's answer reconciles it",
                batch.id,
                intent.call_id,
                record.cost_usd,
            )
        try:
            if intent.hold:
                hold = Hold(intent.hold, batch.tenant)
                worst = intent.worst_nusd
                await settle_part(self.budgets, hold, intent.call_id, worst, worst)
            else:
                await self.budgets.settle(intent.call_id, batch.tenant, intent.worst_nusd)
        except Exception:  # the hold stays counted at the same amount
            logger.exception("batch %s: settling lost call %s failed", batch.id, intent.call_id)
        recorded = Intent(**{**intent.__dict__, "state": RECORDED})
        await self.redis.hset(self.keys.call_intents(batch.id), intent.call_id, recorded.dumps())

    async def _adjust(
        self, batch: Batch, items: Sequence[Item], intent: Intent, cost_nusd: int
    ) -> None:
        delta = cost_nusd - intent.worst_nusd
        record, shares = self._lost_record(batch, items, intent, "adjustment", delta)
        await self.ledger.record(record, None, shares)

    def _lost_record(
        self, batch: Batch, items: Sequence[Item], intent: Intent, status: str, nusd: int
    ) -> tuple[CallRecord, dict[str, Share]]:
        """The record of a lost call (`unknown`) or of its reconciliation (`adjustment`), its
        cost split evenly over the batch's items."""
        parts = split_int(nusd, [1] * len(items)) if items else []
        shares = {item.key: Share(part, 0, 0) for item, part in zip(items, parts, strict=True)}
        suffix = ":lost" if status == "unknown" else ":reconciled"
        record = CallRecord.model_validate(
            {
                "id": intent.call_id + suffix,
                "at": time.time(),
                "batch_id": batch.id,
                "provider": intent.provider,
                "model": intent.model,
                "status": status,
                "error": "outcome unknown: its worker stopped while the call was in flight"
                if status == "unknown"
                else None,
                "cost_usd": usd(nusd),
                "batch_size": len(items),
                "tenant": batch.tenant,
                "attribution": {k: str(s.nusd) for k, s in shares.items()},
                "attempt": intent.attempt,
                "shares": cost_shares(items, shares),
            }
        )
        return record, shares
