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
from pipeline.keys import Keys
from pipeline.models import Task, TTLClass
from pipeline.packing.gain import Expected, GainSettings, expected, packing_pays
from pipeline.packing.request import build_item, group_meta
from pipeline.packing.selection import TAKE_LOOP, batch_limit, budgets_for, sizes_of

Sink = Callable[[list[str]], Awaitable[None]]

_ENQUEUE = """
-- KEYS: groups, then per group its items list and meta, then per task its item
-- ARGV: group count, then per group: id, meta json, due ms; then per task: its group's
--       number (from 1), item json, waiter ref, list entry
-- An item is its JSON, \\30, then `length:ref` of each task waiting on it (item_json).
-- A task whose item is pending already joins it (single-flight); new items join their group's
-- list, one RPUSH per group. Returns each group's length where it grew, else 0.
local ng = tonumber(ARGV[1])
local added = {}
local a = 2 + ng * 3
for t = 2 + ng * 2, #KEYS do
  local g, ref = tonumber(ARGV[a]), ARGV[a + 2]
  local waiter = #ref .. ':' .. ref
  if redis.call('SET', KEYS[t], ARGV[a + 1] .. '\\30' .. waiter, 'NX') then
    added[g] = added[g] or {}
    added[g][#added[g] + 1] = ARGV[a + 3]
  else
    redis.call('APPEND', KEYS[t], waiter)
  end
  a = a + 4
end
local sizes = {}
for g = 1, ng do
  sizes[g] = 0
  if added[g] then
    local id, meta = ARGV[2 + (g - 1) * 3], KEYS[3 + (g - 1) * 2]
    sizes[g] = redis.call('RPUSH', KEYS[2 + (g - 1) * 2], unpack(added[g]))
    redis.call('SETNX', meta, ARGV[3 + (g - 1) * 3])
    redis.call('EXPIRE', meta, 2592000)
    redis.call('ZADD', KEYS[1], 'NX', ARGV[4 + (g - 1) * 3], id)
  end
end
return sizes
"""

_TAKE_HEAD = """
-- KEYS: group items, groups, batch, open batches
-- ARGV: group id, max items, input budget, output budget, full only, batch id, now ms, alone
-- Returns nothing, or how many items are still pending in the group then the items taken.
local entries = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #entries == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {}
end
"""
_TAKE_TAIL = """
if ARGV[5] == '1' and not full then return {} end
redis.call('LTRIM', KEYS[1], #taken, -1)
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
redis.call('HSET', KEYS[3], 'group', ARGV[1], 'items', table.concat(taken, ','),
  'created_ms', ARGV[7], 'alone_attempts', 0, 'status', 'open', 'alone', ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6])
table.insert(taken, 1, left)
return taken
"""
_TAKE = _TAKE_HEAD + TAKE_LOOP + _TAKE_TAIL


def item_json(blob: bytes) -> bytes:
    """A pending item's JSON, without the tasks waiting on it that follow it."""
    return blob.split(b"\x1e", 1)[0]


def now_ms() -> int:
    return int(time.time() * 1000)


class GroupMetas:
    """Group meta (tenant, model, system prompt, ...) by group id, read from Redis once per
    process: a group's id is the hash of its meta, so the meta of an id never changes."""

    LIMIT = 4096  # groups remembered; past that the memory starts again

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.known: dict[str, dict[str, Any]] = {}

    async def get(self, group: str) -> dict[str, Any] | None:
        meta = self.known.get(group)
        if meta is None:
            raw = await self.redis.get(self.keys.group(group))
            if raw is None:
                return None
            if len(self.known) >= self.LIMIT:
                self.known.clear()
            meta = self.known[group] = orjson.loads(raw)
        return meta


class Packer:
    """Writes pending items and turns due groups into batches."""

    def __init__(self, redis: Redis, settings: Settings, keys: Keys) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keys
        self._enqueue = redis.register_script(_ENQUEUE)
        self._take = redis.register_script(_TAKE)
        self.metas = GroupMetas(redis, keys)
        self._lowered: dict[str, int] = {}
        self.prices = PriceTable(settings.prices)
        self.gain = GainSettings(settings.prompt_cache_min_tokens, settings.audit_share)

    def max_items(self, task_type: str) -> int:
        configured = max(1, self.settings.max_items.get(task_type, 8))
        return min(configured, self._lowered.get(task_type, configured))

    async def live_max_items(self, group: str, meta: dict[str, Any]) -> tuple[int, bool]:
        """max_items, lowered by the packing audit when packed answers drift (audit.py), and
        whether the batch's items go alone, one call each, because packing them would cost more
        (gain.py). Such a batch still runs as one job; a provider batch-API group takes
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

    async def enqueue_many(self, tasks: Sequence[Task], pipe: Any) -> list[tuple[str, str]]:
        """Queue, on `pipe`, one script adding the tasks to their groups' pending items (or to
        an identical pending item). Returns the (group, task type) of each group in the order of
        the script's reply: each group's new length, 0 where it did not grow."""
        if not tasks:
            return []
        k = self.keys
        groups: dict[str, int] = {}
        head: list[str | bytes | int] = []
        task_types: list[tuple[str, str]] = []
        group_keys = [k.groups()]
        item_keys: list[str] = []
        tail: list[str | bytes | int] = []
        for task in tasks:
            item = build_item(task)
            if item.group not in groups:
                groups[item.group] = len(groups) + 1
                due = now_ms() + self.linger_ms(task.ttl_class)
                head += [item.group, orjson.dumps(group_meta(task)), due]
                group_keys += [k.group_items(item.group), k.group(item.group)]
                task_types.append((item.group, task.task_type))
            tin, tout = sizes_of(item)
            entry = f"{item.key}|{tin}|{tout}"
            item_keys.append(k.item(item.key))
            tail += [
                groups[item.group],
                item.model_dump_json(),
                f"{task.run_id}\x1f{task.id}",
                entry,
            ]
        await self._enqueue(
            keys=[*group_keys, *item_keys], args=[len(groups), *head, *tail], client=pipe
        )
        return task_types

    async def mark_full(self, groups: Sequence[str]) -> None:
        """These groups hold a full batch: flush their full batches at the next tick."""
        if groups:
            await self.redis.sadd(self.keys.groups_full(), *groups)

    async def flush(self, sink: Sink | None = None) -> list[str]:
        """Turn full and due groups into batches; return the new batch ids (to enqueue). With
        `sink`, each group's batches go to it as soon as they are made, so their calls can
        start while other groups are still being drained. With nothing pending anywhere (a
        full group is pending too) it costs one command: an idle worker flushes every tick."""
        batch_ids: list[str] = []
        if not await self.redis.zrange(self.keys.groups(), 0, 0):
            return batch_ids
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
            taken, left = await self.take(group, batch_id, full_only=full_only)
            if taken:
                made.append(batch_id)
            if not taken or not left:
                return made

    async def mark_due(self, groups: Sequence[str]) -> None:
        """Flush these groups at the next flusher tick (a submission is complete)."""
        if not groups:
            return
        await self.redis.zadd(self.keys.groups(), dict.fromkeys(groups, 0), xx=True)

    async def due_groups(self, now: int | None = None) -> list[str]:
        now = now_ms() if now is None else now
        raw = await self.redis.zrangebyscore(self.keys.groups(), "-inf", now)
        return [g.decode() if isinstance(g, bytes) else g for g in raw]

    async def take(self, group: str, batch_id: str, *, full_only: bool) -> tuple[list[str], int]:
        """Atomically move up to one batch's worth of items out of a group; (the items taken,
        how many are still pending there)."""
        meta = await self.load_group(group)
        budgets = budgets_for(self.settings, meta["model"], meta["system"])
        k = self.keys
        limit, alone = await self.live_max_items(group, meta)
        taken = await self._take(
            keys=[k.group_items(group), k.groups(), k.batch(batch_id), k.open_batches()],
            args=[
                group,
                limit,
                budgets.input_tokens,
                budgets.output_tokens,
                "1" if full_only else "0",
                batch_id,
                now_ms(),
                "1" if alone else "0",
            ],
        )
        if not taken:
            return [], 0
        return [t.decode() if isinstance(t, bytes) else t for t in taken[1:]], int(taken[0])

    async def load_group(self, group: str) -> dict[str, Any]:
        meta = await self.metas.get(group)
        if meta is None:
            raise KeyError(f"unknown group {group}")
        return meta
