"""Packing: pending items wait in Redis under their group and leave as batches.

A group flushes when it is full (item count, or the token budget of the model's context and output
limit) or when its linger deadline passes; a submission that is complete marks its groups due at
once. Identical pending tasks share one item (single-flight) and each gets the answer.

Producers only write to Redis; the flusher that turns due groups into batches runs in the workers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.config.settings import Settings
from pipeline.costs.prices import PriceTable
from pipeline.fingerprint import group_key, item_key
from pipeline.keys import Keys
from pipeline.models import Batch, Item, Message, Task, TTLClass
from pipeline.packing.audit import batch_limit
from pipeline.packing.gain import Expected, GainSettings, expected, packing_pays
from pipeline.packing.wire import (
    ITEM_OVERHEAD_TOKENS,
    PACK_INSTRUCTIONS,
    SCHEMA_INSTRUCTIONS,
    WRAPPER_OUTPUT_TOKENS,
    encode_items,
)
from pipeline.providers.base import ChatRequest
from pipeline.tokens import count_messages, count_tokens

Sink = Callable[[list[str]], Awaitable[None]]

_ENQUEUE = """
-- KEYS: item, waiters, group items, groups, group meta
-- ARGV: item json, waiter ref, list entry, due ms, group meta json, group id
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  return {0, redis.call('LLEN', KEYS[3])}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
local n = redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('SETNX', KEYS[5], ARGV[5])
redis.call('EXPIRE', KEYS[5], 2592000)
redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[6])
return {1, n}
"""

_TAKE = """
-- KEYS: group items, groups, batch, open batches
-- ARGV: group id, max items, input budget, output budget, full only, batch id, now ms, alone
local entries = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #entries == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {}
end
local taken, in_sum, out_sum, full = {}, 0, 0, #entries >= tonumber(ARGV[2])
for _, e in ipairs(entries) do
  local key, tin, tout = string.match(e, '^([^|]+)|(%d+)|(%d+)$')
  tin, tout = tonumber(tin), tonumber(tout)
  if #taken > 0 and (in_sum + tin > tonumber(ARGV[3]) or out_sum + tout > tonumber(ARGV[4])) then
    full = true
    break
  end
  in_sum, out_sum = in_sum + tin, out_sum + tout
  taken[#taken + 1] = key
end
if ARGV[5] == '1' and not full then return {} end
redis.call('LTRIM', KEYS[1], #taken, -1)
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
redis.call('HSET', KEYS[3], 'group', ARGV[1], 'items', table.concat(taken, ','),
  'created_ms', ARGV[7], 'alone_attempts', 0, 'status', 'open', 'alone', ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6])
return taken
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def group_meta(task: Task) -> dict[str, Any]:
    return {
        "tenant": task.tenant,
        "model": task.model,
        "system": task.system,
        "temperature": task.temperature,
        "response_schema": task.response_schema,
        "ttl_class": task.ttl_class.value,
        "task_type": task.task_type,
        "batch_api": task.batch_api,
    }


def build_item(task: Task) -> Item:
    prompt = task.prompt
    return Item(
        key=item_key(task),
        group=group_key(task),
        prompt=prompt,
        messages=task.messages,
        max_tokens=task.max_tokens,
        input_tokens=sum(count_tokens(m.content) for m in task.messages) + ITEM_OVERHEAD_TOKENS,
        task_type=task.task_type,
        user_id=task.user_id,
        endpoint=task.endpoint,
        requested_model=task.requested_model,
    )


class Packer:
    """Writes pending items and turns due groups into batches."""

    def __init__(self, redis: Redis, settings: Settings, keys: Keys) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keys
        self._enqueue = redis.register_script(_ENQUEUE)
        self._take = redis.register_script(_TAKE)
        self._lowered: dict[str, int] = {}
        self.prices = PriceTable(settings.prices)
        self.gain = GainSettings(settings.prompt_cache_min_tokens, settings.audit_share)

    def max_items(self, task_type: str) -> int:
        configured = max(1, self.settings.max_items.get(task_type, 8))
        return min(configured, self._lowered.get(task_type, configured))

    async def live_max_items(self, group: str, meta: dict[str, Any]) -> tuple[int, bool]:
        """max_items, lowered by the packing audit when packed answers drift (audit.py), and
        whether the batch's items go alone, one call each, because packing them would cost more
        (packing_gain.py). Such a batch still runs as one job; a provider batch-API group takes
        one item per batch instead (its batch is one request)."""
        task_type = meta["task_type"]
        lowered = await batch_limit(self.redis, self.keys, task_type)
        if lowered is not None:
            self._lowered[task_type] = lowered
        limit = self.max_items(task_type)
        if limit > 1 and self.settings.pack_only_when_cheaper:
            items = self.keys.group_items(group)
            if self.gain.audit_share > 0:  # the audit's re-runs cost what the items cost alone
                entries = await self.redis.lrange(items, 0, limit - 1)
                n, sizes = len(entries), await expected(self.redis, self.keys, meta, entries)
            else:
                n, sizes = min(limit, await self.redis.llen(items)), Expected()
            if not packing_pays(meta, n, self.prices, sizes, self.gain):
                return (1, False) if meta.get("batch_api") else (limit, n > 1)
        return limit, False

    def linger_ms(self, ttl_class: TTLClass) -> int:
        return 0 if ttl_class is TTLClass.real_time else self.settings.linger_ms

    async def enqueue(self, task: Task, pipe: Any = None) -> Item:
        """Add a task to its group's pending items, or join an identical pending item."""
        item = build_item(task)
        k = self.keys
        ref = f"{task.run_id}\x1f{task.id}"
        entry = f"{item.key}|{item.input_tokens}|{item.max_tokens + ITEM_OVERHEAD_TOKENS}"
        due = now_ms() + self.linger_ms(task.ttl_class)
        args: list[str | bytes | int] = [
            item.model_dump_json(),
            ref,
            entry,
            due,
            orjson.dumps(group_meta(task)),
            item.group,
        ]
        keys = [
            k.item(item.key),
            k.item_waiters(item.key),
            k.group_items(item.group),
            k.groups(),
            k.group(item.group),
        ]
        await self._enqueue(keys=keys, args=args, client=pipe)
        return item

    async def mark_full(self, groups: Sequence[str]) -> None:
        """These groups hold a full batch: flush their full batches at the next tick."""
        if groups:
            await self.redis.sadd(self.keys.groups_full(), *groups)

    async def flush(self, sink: Sink | None = None) -> list[str]:
        """Turn full and due groups into batches; return the new batch ids (to enqueue). With
        `sink`, each group's batches go to it as soon as they are made, so their calls can
        start while other groups are still being drained."""
        batch_ids: list[str] = []
        full = await self.redis.spop(self.keys.groups_full(), 1000) or []
        groups = [(raw.decode(), True) for raw in full]
        groups += [(group, False) for group in await self.due_groups()]
        for group, full_only in groups:
            made = await self._drain(group, full_only=full_only)
            if sink is not None and made:
                await sink(made)
            batch_ids += made
        return batch_ids

    async def _drain(self, group: str, *, full_only: bool) -> list[str]:
        made: list[str] = []
        while True:
            batch_id = uuid.uuid4().hex[:20]
            if not await self.take(group, batch_id, full_only=full_only):
                return made
            made.append(batch_id)

    async def mark_due(self, groups: Sequence[str]) -> None:
        """Flush these groups at the next flusher tick (a submission is complete)."""
        if not groups:
            return
        await self.redis.zadd(self.keys.groups(), dict.fromkeys(groups, 0), xx=True)

    async def due_groups(self, now: int | None = None) -> list[str]:
        now = now_ms() if now is None else now
        raw = await self.redis.zrangebyscore(self.keys.groups(), "-inf", now)
        return [g.decode() if isinstance(g, bytes) else g for g in raw]

    async def take(self, group: str, batch_id: str, *, full_only: bool) -> list[str]:
        """Atomically move up to one batch's worth of items out of a group."""
        meta = await self.load_group(group)
        limits = self.settings.limits_for(meta["model"])
        system_tokens = count_tokens(meta["system"]) + count_tokens(PACK_INSTRUCTIONS) + 16
        input_budget = max(1, int(limits.context_tokens * 0.8) - system_tokens)
        output_budget = max(1, limits.output_tokens - WRAPPER_OUTPUT_TOKENS)
        k = self.keys
        limit, alone = await self.live_max_items(group, meta)
        taken = await self._take(
            keys=[k.group_items(group), k.groups(), k.batch(batch_id), k.open_batches()],
            args=[
                group,
                limit,
                input_budget,
                output_budget,
                "1" if full_only else "0",
                batch_id,
                now_ms(),
                "1" if alone else "0",
            ],
        )
        return [t.decode() if isinstance(t, bytes) else t for t in taken]

    async def load_group(self, group: str) -> dict[str, Any]:
        raw = await self.redis.get(self.keys.group(group))
        if raw is None:
            raise KeyError(f"unknown group {group}")
        meta: dict[str, Any] = orjson.loads(raw)
        return meta


def build_messages(batch: Batch, items: Sequence[Item]) -> tuple[str, list[Message], bool]:
    """The request for a batch: (system prompt, messages, packed?).

    A batch of one is sent as its task's own messages. A packed batch carries the group's system
    prompt first (byte-identical for every batch of the group, so provider prompt caches reuse it),
    then the packing instructions, and one user message holding the items as JSON.
    """
    if len(items) == 1:
        return batch.system, list(items[0].messages), False
    instructions = PACK_INSTRUCTIONS
    if batch.response_schema is not None:
        schema = orjson.dumps(batch.response_schema, option=orjson.OPT_SORT_KEYS).decode()
        instructions = f"{instructions} {SCHEMA_INSTRUCTIONS}{schema}"
    system = f"{batch.system}\n\n{instructions}" if batch.system else instructions
    content = encode_items([item.prompt for item in items])
    return system, [Message(role="user", content=content)], True


def build_request(
    batch: Batch, items: Sequence[Item], *, cache_min_tokens: int
) -> tuple[ChatRequest, bool]:
    """The provider request for a batch of these items, and whether it is packed. A shared
    system block of at least `cache_min_tokens` is marked for the provider's prompt cache."""
    system, messages, packed = build_messages(batch, items)
    request = ChatRequest(
        model=batch.model,
        system=system,
        messages=tuple(messages),
        max_tokens=output_cap(items),
        temperature=batch.temperature,
        json_mode=packed or batch.response_schema is not None,
        response_schema=batch.response_schema,
        cache_prefix=count_tokens(system) >= cache_min_tokens,
    )
    return request, packed


def output_cap(items: Sequence[Item]) -> int:
    """The call's max_tokens: every item's cap plus the JSON around each answer."""
    if len(items) == 1:
        return items[0].max_tokens
    return sum(i.max_tokens + ITEM_OVERHEAD_TOKENS for i in items) + WRAPPER_OUTPUT_TOKENS


def naive_input_tokens(system: str, item: Item) -> int:
    """Prompt tokens the item's task would use sent alone: the baseline for savings."""
    return count_messages(system, [m.content for m in item.messages])
