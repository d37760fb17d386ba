"""Withdrawal: take a run's tasks back out of the pending queue before any call is made for them.

Only what still waits in a group is withdrawn; an item already taken into a batch runs (its
call may have started, and other tasks may share it). A pending item that other runs' tasks
also wait on (single-flight) stays queued for them and only loses this run's waiters. Each
withdrawn task gets a `failed` result with the reason given, so the run still ends with
exactly one result per task. The script reads the queue's own layout (queue.py: a group's list
of `item|input|output` entries; an item's JSON followed by the `length:run_id task_id` of each
task waiting on it, pipeline/keys.py) and each call is one atomic step, so a flusher never takes
an item half withdrawn.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from pipeline.keys import Keys

_WITHDRAW = """
-- KEYS: group items, groups, run results, run
-- ARGV: waiter ref prefix (run id and the separator), key prefix, result json, ttl s,
--       group id, first index, entries to look at
local first = tonumber(ARGV[6])
local entries = redis.call('LRANGE', KEYS[1], first, first + tonumber(ARGV[7]) - 1)
local withdrawn, removed = 0, 0
for i, entry in ipairs(entries) do
  local item = ARGV[2] .. ':item:' .. string.match(entry, '^([^|]+)|')
  local blob = redis.call('GET', item)
  if blob then
    local head = string.find(blob, '\\30', 1, true)
    local mine, others, pos = 0, {}, head + 1
    while pos <= #blob do
      local colon = string.find(blob, ':', pos, true)
      local last = colon + tonumber(string.sub(blob, pos, colon - 1))
      local ref = string.sub(blob, colon + 1, last)
      if string.sub(ref, 1, #ARGV[1]) == ARGV[1] then
        mine = mine + 1
        if redis.call('HSETNX', KEYS[3], string.sub(ref, #ARGV[1] + 1), ARGV[3]) == 1 then
          redis.call('HINCRBY', KEYS[4], 'done', 1)
        end
      else
        others[#others + 1] = string.sub(blob, pos, last)
      end
      pos = last + 1
    end
    withdrawn = withdrawn + mine
    if mine > 0 and #others == 0 then
      redis.call('DEL', item, item .. ':cost')
      redis.call('LSET', KEYS[1], first + i - 1, '-')
      removed = removed + 1
    elseif mine > 0 then
      redis.call('SET', item, string.sub(blob, 1, head) .. table.concat(others), 'KEEPTTL')
    end
  end
end
if removed > 0 then
  redis.call('LREM', KEYS[1], 0, '-')
  if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[5]) end
end
if withdrawn > 0 and redis.call('TTL', KEYS[3]) == -1 then
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
return {withdrawn, removed, #entries}
"""


async def withdraw_pending(
    redis: Redis,
    keys: Keys,
    run_id: str,
    tenant: str,
    error: dict[str, str],
    *,
    ttl_s: int,
    chunk: int = 1000,
) -> int:
    """Withdraw the run's tasks still pending in `tenant`'s groups; each gets a `failed`
    result with `error` (`{"code", "message"}`). Returns how many were withdrawn.

    Each script call looks at `chunk` entries of a group, so Redis never blocks for long on a
    large group; one call per group goes in each round trip. A flusher taking entries from the
    head between two calls shifts the rest past the cursor, so a pass over a group that
    withdrew anything is followed by another, until one withdraws nothing."""
    groups = [g.decode() for g in await redis.zrange(keys.groups(), 0, -1)]
    if not groups:
        return 0
    metas = await redis.mget([keys.group(g) for g in groups])
    cursors = {g: 0 for g, meta in zip(groups, metas, strict=True) if _tenant(meta) == tenant}
    in_pass = dict.fromkeys(cursors, 0)
    result = orjson.dumps({"status": "failed", "error": error, "cost_nusd": 0})
    script = redis.register_script(_WITHDRAW)
    total = 0
    while cursors:
        order = list(cursors)
        async with redis.pipeline(transaction=False) as pipe:
            for group in order:
                await script(
                    keys=[
                        keys.group_items(group),
                        keys.groups(),
                        keys.run_results(run_id),
                        keys.run(run_id),
                    ],
                    args=[
                        f"{run_id}\x1f",
                        keys.prefix,
                        result,
                        ttl_s,
                        group,
                        cursors[group],
                        chunk,
                    ],
                    client=pipe,
                )
            replies: list[list[int]] = await pipe.execute()
        for group, (withdrawn, removed, seen) in zip(order, replies, strict=True):
            total += withdrawn
            in_pass[group] += withdrawn
            if seen == chunk:
                cursors[group] += seen - removed
            elif in_pass[group]:
                cursors[group], in_pass[group] = 0, 0
            else:
                del cursors[group]
    return total


def _tenant(meta: bytes | None) -> str | None:
    if meta is None:
        return None
    found = orjson.loads(meta).get("tenant")
    return found if isinstance(found, str) else None
