"""Packing audit: a share of packed items is also run alone, and the answers compared.

Packing saves tokens, but answers drift with batch size and position in the batch. The audit
re-runs a stable sample (`Settings.audit_share`) of packed items alone, gives the task the alone
answer (the reference), and records how well the packed answer agreed, per task type and batch
size. When the agreement of the largest batches in use falls below `audit_threshold` over at least
`audit_min_samples` audits, the task type's maximum batch size is halved: the new limit lives in
Redis, where the packer reads it, and the change is logged as an event that reports show.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.config.settings import Settings
from pipeline.core.splitter import parse_single
from pipeline.costs.ledger import Share
from pipeline.costs.money import to_nano, usd_or_none
from pipeline.costs.paid import PaidCaller
from pipeline.errors import PipelineError
from pipeline.keys import Keys
from pipeline.models import Batch, CallRecord, Item
from pipeline.packing.request import build_request
from pipeline.providers.base import ChatResponse

logger = logging.getLogger("batchwise.audit")


def audited(item_key: str, share: float) -> bool:
    """True when the item falls in the audited `share` (0–1) of packed items.

    The choice depends only on the item key, so every worker picks the same items and
    `batchwise plan` can predict what the audit costs.
    """
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.sha256(f"audit:{item_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _norm(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    if isinstance(text, bytes):
        text = text.decode()
    return " ".join(text.casefold().split()).strip(" .。!\"'`")


def agreement(packed: Any, alone: Any) -> float:
    """How far a packed answer agrees with the alone answer, 0–1.

    Equal answers (case, spacing and end punctuation aside) agree fully. Short answers (labels,
    yes/no, numbers) must be equal; longer ones score the overlap of their word sets.
    """
    a, b = _norm(packed), _norm(alone)
    if a == b:
        return 1.0
    words_a, words_b = set(a.split()), set(b.split())
    if min(len(words_a), len(words_b)) <= 3:
        return 0.0
    return len(words_a & words_b) / len(words_a | words_b)


_RECORD = """
-- KEYS: audit stats, audit types, packing limits, packing events
-- ARGV: batch size, score, threshold, min samples, configured max, now s, task type
redis.call('HINCRBY', KEYS[1], ARGV[1] .. ':n', 1)
redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1] .. ':sum', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[7])
local configured = tonumber(ARGV[5])
local current = tonumber(redis.call('HGET', KEYS[3], ARGV[7]) or configured)
if current > configured then current = configured end
if current <= 1 then return current end
local low = math.floor(current / 2)
local n, sum = 0, 0
for size = low + 1, current do
  n = n + tonumber(redis.call('HGET', KEYS[1], size .. ':n') or '0')
  sum = sum + tonumber(redis.call('HGET', KEYS[1], size .. ':sum') or '0')
end
if n >= tonumber(ARGV[4]) and sum / n < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[3], ARGV[7], low)
  redis.call('RPUSH', KEYS[4], cjson.encode({
    at = tonumber(ARGV[6]), task_type = ARGV[7], from_items = current, to_items = low,
    agreement = sum / n, samples = n, threshold = tonumber(ARGV[3])}))
  return low
end
return current
"""


class PackingAudit(PaidCaller):
    """Re-runs a sample of packed items alone; lowers batch sizes whose answers drift."""

    def setup(self) -> None:
        self._record = self.redis.register_script(_RECORD)

    async def check(self, batch: Batch, item: Item, output: Any, size: int) -> Any:
        """The output the task gets: the alone answer when the item is audited, else `output`."""
        if size <= 1 or not audited(item.key, self.settings.audit_share):
            return output
        alone, fresh = await self._alone(batch, item)
        if alone is None:
            return output
        if not fresh:  # a re-run batch: this audit was recorded the first time
            return alone
        score = agreement(output, alone)
        limit = await self._record(
            keys=[
                self.keys.audit_stats(item.task_type),
                self.keys.audit_types(),
                self.keys.packing_limits(),
                self.keys.packing_events(),
            ],
            args=[
                size,
                repr(score),
                repr(self.settings.audit_threshold),
                self.settings.audit_min_samples,
                max(1, self.settings.max_items.get(item.task_type, 8)),
                int(time.time()),
                item.task_type,
            ],
        )
        if score < 1:
            logger.info(
                "audit %s: packed answer agrees %.2f with the alone one (batch of %d); "
                "max batch size of %s now %s",
                item.key[:12],
                score,
                size,
                item.task_type,
                limit,
            )
        return alone

    async def _alone(self, batch: Batch, item: Item) -> tuple[Any, bool]:
        """The item's answer sent alone (None if none), and whether it was called just now.

        The call is recorded in the ledger and charged to the item; a re-run reuses it."""
        call_id = f"{batch.id}.audit.{item.key[:16]}"
        want_json = batch.response_schema is not None
        stored = await self.redis.get(self.keys.batch_response(call_id))
        if stored is not None:
            response = ChatResponse.from_json(stored)
        else:
            request, _ = build_request(  # the item alone, exactly as a batch of one is sent
                batch, [item], cache_min_tokens=self.settings.prompt_cache_min_tokens
            )
            try:
                response = await self.chain.complete(request)
            except PipelineError as exc:  # the audit never costs a task its answer
                logger.warning("audit of %s skipped: %s", item.key[:12], exc)
                return None, False
            await self._charge(call_id, batch, item, response)
        ok, value, _ = parse_single(response.text, want_json=want_json)
        return (value if ok else None), stored is None

    async def _charge(self, call_id: str, batch: Batch, item: Item, response: ChatResponse) -> None:
        usage = response.usage
        cost = self.prices.price(batch.model, usage)
        nusd = None if cost is None else to_nano(cost)
        record = CallRecord(
            id=call_id,
            at=time.time(),
            batch_id=call_id,
            provider=response.provider,
            model=batch.model,
            simulated=response.simulated,
            status="ok",
            usage=usage,
            cost_usd=usd_or_none(nusd),
            latency_ms=response.latency_ms,
            batch_size=1,
            tenant=batch.tenant,
            attribution={item.key: str(nusd)},
        )
        blob = response.to_json()
        share = Share(nusd, usage.input_tokens, usage.output_tokens)
        await self.ledger.record(record, blob, {item.key: share})


@dataclass
class TaskTypeAudit:
    """The audit's findings for one task type."""

    task_type: str
    configured_max: int
    current_max: int
    by_size: dict[int, tuple[int, float]] = field(default_factory=dict)  # size -> (n, mean)


async def audit_report(
    redis: Redis, keys: Keys, settings: Settings
) -> tuple[list[TaskTypeAudit], list[dict[str, Any]]]:
    """Agreement per task type and batch size, current limits, and the limit changes so far."""
    types = sorted(t.decode() for t in await redis.smembers(keys.audit_types()))
    limits = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.packing_limits())).items()}
    found: list[TaskTypeAudit] = []
    for task_type in sorted(set(types) | set(limits)):
        configured = max(1, settings.max_items.get(task_type, 8))
        row = TaskTypeAudit(
            task_type, configured, min(configured, limits.get(task_type, configured))
        )
        raw = {
            k.decode(): v.decode()
            for k, v in (await redis.hgetall(keys.audit_stats(task_type))).items()
        }
        for field_name, value in raw.items():
            size, _, kind = field_name.partition(":")
            if kind == "n":
                n = int(value)
                row.by_size[int(size)] = (n, float(raw.get(f"{size}:sum", 0)) / n if n else 0.0)
        found.append(row)
    events = [orjson.loads(e) for e in await redis.lrange(keys.packing_events(), 0, -1)]
    return found, events
