"""Withdrawal: take a run's tasks back out of the pending queue before any call is made for them.

Only what still waits in a group is withdrawn; an item already taken into a batch runs (its
call may have started, and other tasks may share it). A pending item that other runs' tasks
also wait on (single-flight) stays queued for them and only loses this run's waiters. Each
withdrawn task gets a `failed` result with the reason given, so the run still ends with
exactly one result per task. The script reads the queue's own layout (queue.py: a group's list
of `item|input|output` entries, each item's list of waiting run and task ids) and runs as one
step per group, so a flusher never takes an item half withdrawn.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.keys import Keys

_WITHDRAW = """
-- KEYS: group items, groups, run results, run
-- ARGV: waiter ref prefix (run id and the separator), key prefix, result json, ttl s, group id
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local kept, withdrawn = {}, 0
for _, entry in ipairs(entries) do
  local key = string.match(entry, '^([^|]+)|')
  local item = ARGV[2] .. ':item:' .. key
  local waiters = item .. ':waiters'
  local mine, others = {}, 0
  for _, ref in ipairs(redis.call('LRANGE', waiters, 0, -1)) do
    if string.sub(ref, 1, #ARGV[1]) == ARGV[1] then
      mine[#mine + 1] = ref
    else
      others = others + 1
    end
  end
  for _, ref in ipairs(mine) do
    if redis.call('HSETNX', KEYS[3], string.sub(ref, #ARGV[1] + 1), ARGV[3]) == 1 then
      redis.call('HINCRBY', KEYS[4], 'done', 1)
    end
    if others > 0 then redis.call('LREM', waiters, 0, ref) end
  end
  withdrawn = withdrawn + #mine
  if others == 0 and #mine > 0 then
    redis.call('DEL', item, waiters, item .. ':cost')
  else
    kept[#kept + 1] = entry
  end
end
if withdrawn == 0 then return 0 end
if redis.call('TTL', KEYS[3]) == -1 then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
redis.call('DEL', KEYS[1])
for i = 1, #kept, 5000 do
  redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 4999, #kept)))
end
if #kept == 0 then redis.call('ZREM', KEYS[2], ARGV[5]) end
return withdrawn
"""


async def withdraw_pending(
    redis: Redis, keys: Keys, run_id: str, tenant: str, error: dict[str, str], *, ttl_s: int
) -> int:
    """Withdraw the run's tasks still pending in `tenant`'s groups; each gets a `failed`
    result with `error` (`{"code", "message"}`). Returns how many were withdrawn."""
    groups = [g.decode() for g in await redis.zrange(keys.groups(), 0, -1)]
    if not groups:
        return 0
    metas = await redis.mget([keys.group(g) for g in groups])
    mine = [g for g, meta in zip(groups, metas, strict=True) if _tenant(meta) == tenant]
    if not mine:
        return 0
    result = orjson.dumps({"status": "failed", "error": error, "cost_nusd": 0})
    script = redis.register_script(_WITHDRAW)
    async with redis.pipeline(transaction=False) as pipe:
        for group in mine:
            await script(
                keys=[
                    keys.group_items(group),
                    keys.groups(),
                    keys.run_results(run_id),
                    keys.run(run_id),
                ],
                args=[f"{run_id}\x1f", keys.prefix, result, ttl_s, group],
                client=pipe,
            )
        counts: list[Any] = await pipe.execute()
    return sum(int(n) for n in counts)


def _tenant(meta: bytes | None) -> str | None:
    if meta is None:
        return None
    found = orjson.loads(meta).get("tenant")
    return found if isinstance(found, str) else None
