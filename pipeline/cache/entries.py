"""Cache entries: what a worker writes when it answers a cached task, and how they are cleared.

At submit time a miss leaves an *intent* (store.py); when the executor answers the item, the
intent is taken and turned into an entry (its answer, TTL bounds, owner) and, for L2, its vector
is published to the semantic index, all in one transaction per batch. `clear_entries` deletes
entries, vectors and pending intents of one tenant or of all.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.cache.semantic import SemanticIndex, clear_vectors
from pipeline.cache.stats import SEP
from pipeline.cache.vectors import ENTRY_FIELDS
from pipeline.keys import Keys


def entry_fields(row: Sequence[bytes | None]) -> dict[bytes, bytes]:
    """A cached answer's hash as read by HMGET of ENTRY_FIELDS (missing fields empty)."""
    return {f.encode(): v or b"" for f, v in zip(ENTRY_FIELDS, row, strict=True)}


def intent_fields(blob: bytes) -> dict[str, bytes]:
    """An intent's fields as `remember` wrote them (the vector's bytes under `vec`)."""
    head, _, vector = blob.partition(b"\0")
    fields = {k: str(v).encode() for k, v in orjson.loads(head).items()}
    fields["vec"] = vector
    return fields


async def store_answers(
    redis: Redis,
    keys: Keys,
    semantic: SemanticIndex | None,
    answered: Sequence[tuple[str, dict[str, Any]]],
) -> int:
    """Cache a batch's answered items in two round trips (take the intents, write the
    entries); returns how many were stored."""
    answered = [(key, outcome) for key, outcome in answered if outcome.get("status") == "ok"]
    if not answered:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for key, _ in answered:
            pipe.getdel(keys.cache_intent(key))
        blobs: list[bytes | None] = await pipe.execute()
    todo = [(k, o, intent_fields(b)) for (k, o), b in zip(answered, blobs, strict=True) if b]
    if not todo:
        return 0
    now = time.time()
    scopes = [raw["sem"].decode() for _, _, raw in todo if raw.get("sem") and raw.get("vec")]
    if semantic is not None and scopes:
        await semantic.index()  # chosen before the transaction that publishes
    live: dict[str, float] = {}
    stores: Counter[str] = Counter()
    async with redis.pipeline(transaction=True) as pipe:
        for item, outcome, raw in todo:
            member, owner = write_entry(keys, semantic, pipe, item, outcome, raw, now)
            live[member] = now + int(raw["base"])
            stores[SEP.join((owner, "stores"))] += 1
        pipe.zadd(keys.cache_entries(), live)
        for field, n in stores.items():
            pipe.hincrby(keys.cache_stats(), field, n)
        if semantic is not None and scopes:
            semantic.trim(pipe, scopes)
        pipe.zremrangebyscore(keys.cache_entries(), "-inf", now)  # the expired ones
        await pipe.execute()
    return len(todo)


def write_entry(
    keys: Keys,
    semantic: SemanticIndex | None,
    pipe: Any,
    item: str,
    outcome: dict[str, Any],
    intent: dict[str, bytes],
    now: float,
) -> tuple[str, str]:
    """Queue the entry's writes; return its member of the live-entries set and its owner
    (`tenant\x1fmodel`), which the caller writes for the whole batch at once."""
    key = intent["key"].decode()
    tenant, model = intent["tenant"].decode(), intent["model"].decode()
    base_s = int(intent["base"])
    value = {
        "output": outcome["output"],
        "model": outcome.get("model"),  # not the lookup's: a cascade may have escalated
        "provider": outcome.get("provider"),
        "nusd": outcome.get("cost_nusd"),
        "in": outcome.get("input_tokens", 0),
        "out": outcome.get("output_tokens", 0),
        "naive_in": outcome.get("naive_input_tokens", 0),
        "naive_out": outcome.get("naive_output_tokens", 0),
    }
    entry = keys.cache_entry(key)
    pipe.hset(
        entry,
        mapping={
            "v": orjson.dumps(value),
            "created": now,
            "hits": 0,
            "base": base_s,
            "max": int(intent["max"]),
            "owner": SEP.join((tenant, model)),
        },
    )
    pipe.expire(entry, base_s)
    scope_id, vector = intent["sem"].decode(), intent["vec"]
    if scope_id and semantic is not None and vector:
        semantic.publish(pipe, scope_id, key, vector, intent["text"].decode(), tenant)
    return SEP.join((tenant, model, key)), SEP.join((tenant, model))


async def clear_entries(redis: Redis, keys: Keys, *, tenant: str | None = None) -> int:
    """Delete the cached answers (entries, vectors with their prompts, pending intents) of
    one tenant, or of all tenants; returns the number of entries deleted. Counters stay.

    On a Redis without vector sets other processes keep the deleted prompts' rows in memory
    until they restart, but can no longer serve them: a row whose entry is gone is never a
    hit."""
    mine = (lambda owner: True) if tenant is None else (lambda owner: owner == tenant)
    members = [
        m.decode()
        async for m, _score in redis.zscan_iter(keys.cache_entries(), count=1000)
        if mine(m.decode().split(SEP, 1)[0])
    ]
    for start in range(0, len(members), 1000):
        part = members[start : start + 1000]
        async with redis.pipeline(transaction=False) as pipe:
            pipe.delete(*[keys.cache_entry(m.rsplit(SEP, 1)[1]) for m in part])
            pipe.zrem(keys.cache_entries(), *part)
            await pipe.execute()
    await clear_vectors(redis, keys, tenant)
    async for intent in redis.scan_iter(keys.cache_intent("*"), count=1000):
        blob = await redis.get(intent)
        if tenant is None or (blob and intent_fields(blob)["tenant"].decode() == tenant):
            await redis.delete(intent)
    return len(members)
