"""The semantic vector index on Redis 8 vector sets: one HNSW set per scope, searched on the server.

Each semantic scope is a vector set (VADD with int8 quantisation) whose elements are the cache
keys of its entries, with the prompt and its tenant as JSON attributes; a sorted set beside it
records when each element was added, so a scope over `max_entries` drops its oldest elements
first. A lookup is one script per query (VSIM, then the cached answers of the elements found),
all of a submit chunk's queries in one pipelined round trip; no process holds vectors in memory.
VSIM runs on Redis's main thread (NOTHREAD): a pipeline of searches handed to its worker
threads was 2-2.5x slower per query on a 2-core host.
VSIM scores are (1 + cosine) / 2; int8 quantisation moves a cosine by less than 0.005.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from pipeline.cache.vectors import CANDIDATES, ENTRY_FIELDS, Match, Search
from pipeline.keys import Keys

# One query: the elements at or above a VSIM score, each with its cached answer's fields (read
# here rather than in a second round trip). Keys are built from ARGV, as the cache's keys are.
# Sent with EVAL: a script in a pipeline through redis-py costs a SCRIPT EXISTS round trip.
_SEARCH = """
-- ARGV: vector set, FP32 vector, lowest VSIM score, count, entry key prefix, entry fields...
local reply = redis.call('VSIM', ARGV[1], 'FP32', ARGV[2], 'WITHSCORES', 'WITHATTRIBS',
  'COUNT', ARGV[4], 'NOTHREAD')
local out = {}
for i = 1, #reply, 3 do
  if tonumber(reply[i + 1]) >= tonumber(ARGV[3]) then
    out[#out + 1] = reply[i]
    out[#out + 1] = reply[i + 1]
    out[#out + 1] = reply[i + 2]
    out[#out + 1] = redis.call('HMGET', ARGV[5] .. reply[i], unpack(ARGV, 6))
  end
end
return out
"""

# Drop a scope's oldest elements beyond ARGV[1], in the same transaction as the write.
_TRIM = """
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do redis.call('VREM', KEYS[1], old[i]) end
end
return over
"""


async def has_vector_sets(redis: Redis) -> bool:
    """True when the server runs the vector-set commands (Redis >= 8; an unknown command, or
    one this user may not run, is a no)."""
    try:
        await redis.execute_command("VCARD", "batchwise:probe:vector-sets")  # type: ignore[no-untyped-call]
    except ResponseError:
        return False
    return True


class VectorSetIndex:
    """Semantic scopes as Redis 8 vector sets, shared by every process without a local copy."""

    def __init__(self, redis: Redis, keys: Keys, *, max_entries: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_entries = max_entries

    async def search(self, searches: Sequence[Search]) -> list[list[list[Match]]]:
        """One script per query (VSIM and the entries found), all in one round trip."""
        entries = self.keys.cache_entry("")
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in searches:
                key = self.keys.cache_vset(s.scope_id)
                for vector, threshold in zip(s.vectors, s.thresholds, strict=True):
                    lowest = (1.0 + threshold) / 2.0 - 1e-6  # VSIM's scale; exact check below
                    blob = vector.astype("<f4").tobytes()
                    args = [key, blob, repr(lowest), str(CANDIDATES), entries, *ENTRY_FIELDS]
                    pipe.eval(_SEARCH, 0, *args)
            replies = iter(await pipe.execute())
        out = []
        for s in searches:
            per_query = []
            for threshold in s.thresholds:
                reply = next(replies) or []
                matches = []
                for i in range(0, len(reply), 4):
                    cosine = 2.0 * float(reply[i + 1]) - 1.0
                    if cosine >= threshold:
                        text = orjson.loads(reply[i + 2] or b"{}").get("t", "")
                        entry = tuple(reply[i + 3])
                        matches.append(Match(cosine, reply[i].decode(), text, entry))
                per_query.append(matches)
            out.append(per_query)
        return out

    def publish(
        self, pipe: Any, scope_id: str, key: str, vector: bytes, text: str, owner: str
    ) -> None:
        """Queue the VADD of a new entry and its age (then `trim` once per scope)."""
        vset, ages = self.keys.cache_vset(scope_id), self.keys.cache_vset_ages(scope_id)
        attributes = orjson.dumps({"t": text, "o": owner})
        pipe.execute_command("VADD", vset, "FP32", vector, key, "Q8", "SETATTR", attributes)
        pipe.zadd(ages, {key: time.time()})

    def trim(self, pipe: Any, scope_ids: Sequence[str]) -> None:
        """Queue the trim of these scopes to `max_entries`, oldest elements out first."""
        for scope_id in scope_ids:
            vset, ages = self.keys.cache_vset(scope_id), self.keys.cache_vset_ages(scope_id)
            pipe.eval(_TRIM, 2, vset, ages, self.max_entries)

    async def forget(self, scope_id: str, keys: Sequence[str]) -> None:
        """Remove expired entries from the scope's set."""
        if not keys:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.execute_command("VREM", self.keys.cache_vset(scope_id), key)
            pipe.zrem(self.keys.cache_vset_ages(scope_id), *keys)
            await pipe.execute()

    async def clear(self, tenant: str | None) -> None:
        """Delete the vectors of one tenant's entries (found by their attributes), or all."""
        prefix = self.keys.cache_vset_ages("")
        async for raw in self.redis.scan_iter(self.keys.cache_vset_ages("*"), count=1000):
            ages = raw.decode()
            vset = self.keys.cache_vset(ages[len(prefix) :])
            if tenant is None:
                await self.redis.delete(vset, ages)
                continue
            members = [m async for m, _ in self.redis.zscan_iter(ages, count=1000)]
            for start in range(0, len(members), 1000):
                part = members[start : start + 1000]
                async with self.redis.pipeline(transaction=False) as pipe:
                    for member in part:
                        pipe.execute_command("VGETATTR", vset, member)
                    attributes = await pipe.execute()
                drop = [
                    m
                    for m, a in zip(part, attributes, strict=True)
                    if a and orjson.loads(a).get("o") == tenant
                ]
                if drop:
                    await self.forget(ages[len(prefix) :], [m.decode() for m in drop])
