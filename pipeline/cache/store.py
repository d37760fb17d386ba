"""The response cache: answers already paid for, served again at submit time.

Two levels, both in Redis and shared by every producer and worker:

- **L1 exact**: the request key of `pipeline.fingerprint.request_key` (canonical; covers the
  scope, model, every message incl. system, temperature, max_tokens and response schema).
- **L2 semantic**: the same question in other words (see `pipeline.cache.semantic`).

A submit chunk is looked up in two round trips (L1 reads; L2 searches with the entries they
find); a hit is answered at once (`cache: "exact"` or `"semantic"`, cost 0, the saving
recorded), and the counters and hits' longer TTLs ride on the submit's own pipeline
(`remember`). A miss leaves an *intent* beside its pending item: the cache key, TTL policy and
(for L2) the prompt's vector. When the executor answers the item it turns the intent into an
entry, so the embedder runs once per prompt, at submit time only, in one batched call per submit
chunk. A grey-zone candidate (below the serve threshold) leaves its task a miss, with the
candidate beside it for the worker to verify (grey.py).
`no_cache` tasks (and `ttl_s: 0`) are never looked up and leave no intent: nothing of theirs is
ever written. The scope is the tenant unless the tenant opted into a shared scope.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson
from redis.asyncio import Redis

from pipeline.cache.embedders import Embedder
from pipeline.cache.entries import clear_entries, entry_fields, store_answers
from pipeline.cache.semantic import (
    Candidate,
    SemanticIndex,
    build_embedder,
    semantic_scope,
)
from pipeline.cache.stats import SEP, CacheStatsRow, read_stats
from pipeline.cache.ttl import TTLPolicy
from pipeline.cache.vectors import ENTRY_FIELDS
from pipeline.config.settings import Settings
from pipeline.errors import PipelineError
from pipeline.fingerprint import item_key, request_key
from pipeline.keys import Keys
from pipeline.models import Task

logger = logging.getLogger("batchwise.cache")

_DEFAULT = object()


@dataclass
class Lookup:
    """What a submit chunk found: result records for the hits, the tasks still to run, the
    intents (item key -> fields) that let the executor cache the misses' answers, the grey-zone
    candidates (item key -> candidate) a worker verifies, and the counters and entries touched
    that `remember` writes with the submit's own round trip."""

    hits: list[dict[str, Any]] = field(default_factory=list)
    misses: list[Task] = field(default_factory=list)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    grey: dict[str, Candidate] = field(default_factory=dict)
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    touched: list[tuple[str, dict[bytes, bytes]]] = field(default_factory=list)
    at: float = field(default_factory=time.time)


@dataclass
class _Probe:
    task: Task
    policy: TTLPolicy
    key: str
    scope_id: str | None = None
    vector: bytes = b""


class ResponseCache:
    """L1 exact + L2 semantic cache over one Redis; one per process (it holds the L2 index)."""

    def __init__(
        self, redis: Redis, settings: Settings, keys: Keys, *, embedder: Any = _DEFAULT
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keys
        self.enabled = settings.cache_enabled
        self.semantic: SemanticIndex | None = None
        if self.enabled and settings.cache_semantic:
            chosen: Embedder | None = build_embedder(settings) if embedder is _DEFAULT else embedder
            if chosen is not None:
                self.semantic = SemanticIndex(
                    redis,
                    keys,
                    chosen,
                    max_entries=settings.cache_semantic_max_entries,
                    max_chars=settings.cache_semantic_max_chars,
                    index=settings.cache_semantic_index,
                )

    def open_grey_zone(self) -> None:
        """Look for grey-zone candidates too (up to `cache_semantic_verify_margin` below the
        threshold): the worker serves them once a verifier confirms them (cache/grey.py)."""
        if self.semantic is not None:
            self.semantic.grey_margin = self.settings.cache_semantic_verify_margin

    async def warm(self) -> None:
        """Load the semantic cache's model (a worker does at start, in the background, so the
        first batch does not wait for it; a producer that only connects never loads it). A
        model that cannot load is logged here and reported again by the lookups."""
        if self.semantic is None:
            return
        try:
            await self.semantic.warm()
        except PipelineError as exc:
            logger.warning("semantic cache: the embedding model did not load: %s", exc)

    # identities
    def scope(self, tenant: str) -> str:
        """The cache scope of a tenant: its own, or the shared scope it opted into."""
        shared = self.settings.cache_shared_scopes.get(tenant)
        return f"shared:{shared}" if shared else f"tenant:{tenant}"

    def cache_key(self, task: Task) -> str:
        return request_key(task, scope=self.scope(task.tenant))

    def policy(self, task: Task) -> TTLPolicy:
        return TTLPolicy.for_task(
            task.ttl_class, task.ttl_s, adaptive=self.settings.cache_adaptive_ttl
        )

    # submit side
    async def lookup(self, tasks: Sequence[Task]) -> Lookup:
        """Answer what the cache can; return the hits, the misses and their intents (queue
        them with `remember`)."""
        found = Lookup()
        probes: list[_Probe] = []
        for task in tasks:
            policy = self.policy(task)
            if not self.enabled or not policy.cacheable:
                found.misses.append(task)
            else:
                probes.append(_Probe(task, policy, self.cache_key(task)))
        if not probes:
            return found
        counts = found.counts
        async with self.redis.pipeline(transaction=False) as pipe:
            for probe in probes:
                pipe.hmget(self.keys.cache_entry(probe.key), list(ENTRY_FIELDS))
            rows = await pipe.execute()
        missed: list[_Probe] = []
        for probe, row in zip(probes, rows, strict=True):
            counts[(probe.task.tenant, probe.task.model, "lookups")] += 1
            if row[0] is None:
                missed.append(probe)
                continue
            entry = entry_fields(row)
            found.hits.append(self._hit(probe.task, entry, "exact", counts))
            found.touched.append((probe.key, entry))
        for probe, cand in zip(missed, await self._semantic_lookup(missed, counts), strict=True):
            if cand is None or cand.grey or cand.entry is None:
                found.misses.append(probe.task)
                found.intents[item_key(probe.task)] = self._intent(probe)
                if cand is not None and cand.grey:  # a worker asks the verification model
                    found.grey[item_key(probe.task)] = cand
                continue
            entry = entry_fields(cand.entry)
            found.hits.append(self._hit(probe.task, entry, "semantic", counts))
            found.touched.append((cand.key, entry))
        return found

    def remember(self, pipe: Any, lookup: Lookup) -> None:
        """Queue a lookup's writes on the caller's pipeline: the misses' intents (one command
        each: the intent is one string, its fields' JSON then the vector's bytes), the grey-zone
        candidates, the counters and the longer life that hits earn their entries."""
        for key, fields in lookup.intents.items():
            blob = orjson.dumps({k: v for k, v in fields.items() if k != "vec"})
            intent = self.keys.cache_intent(key)
            pipe.set(intent, blob + b"\0" + fields["vec"], ex=self.settings.results_ttl_s)
        for key, cand in lookup.grey.items():
            pipe.set(self.keys.cache_grey(key), cand.to_json(), ex=self.settings.results_ttl_s)
        self.account(pipe, lookup.touched, lookup.counts, lookup.at)

    def _intent(self, probe: _Probe) -> dict[str, Any]:
        task = probe.task
        return {
            "key": probe.key,
            "tenant": task.tenant,
            "model": task.model,
            "base": probe.policy.base_s,
            "max": probe.policy.max_s,
            "sem": probe.scope_id or "",
            "text": task.prompt if probe.scope_id else "",
            "vec": probe.vector,
        }

    def _hit(
        self,
        task: Task,
        entry: dict[bytes, bytes],
        kind: str,
        counts: Counter[tuple[str, str, str]],
    ) -> dict[str, Any]:
        return {"id": task.id, **self.answer(entry, task.tenant, task.model, kind, counts)}

    def answer(
        self,
        entry: dict[bytes, bytes],
        tenant: str,
        model: str,
        kind: str,
        counts: Counter[tuple[str, str, str]],
    ) -> dict[str, Any]:
        """The result fields of a hit on `entry` (cost 0, the saving), counted in `counts`."""
        value = orjson.loads(entry[b"v"])
        where = (tenant, model)
        counts[(*where, f"{kind}_hits")] += 1
        if value.get("nusd") is None:
            counts[(*where, "unpriced_hits")] += 1
        else:
            counts[(*where, "saved_nusd")] += int(value["nusd"])
        counts[(*where, "saved_input_tokens")] += int(value.get("in") or 0)
        counts[(*where, "saved_output_tokens")] += int(value.get("out") or 0)
        return {
            "status": "ok",
            "output": value["output"],
            "model": value.get("model") or model,
            "provider": value.get("provider"),
            "cache": kind,
            "batch_id": None,
            "batch_size": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_nusd": 0,
            "saved_nusd": value.get("nusd"),
            "naive_input_tokens": value.get("naive_in", 0),
            "naive_output_tokens": value.get("naive_out", 0),
        }

    async def _semantic_lookup(
        self, probes: list[_Probe], counts: Counter[tuple[str, str, str]]
    ) -> list[Candidate | None]:
        """For each L1 miss, the best live semantic candidate (served at or above its
        threshold, verified below it), or None; fills probe vectors."""
        found: list[Candidate | None] = [None] * len(probes)
        index = self.semantic
        if index is None:
            return found
        asking = []
        for i, probe in enumerate(probes):
            probe.scope_id = semantic_scope(
                probe.task, self.scope(probe.task.tenant), self.settings, index.embedder
            )
            if probe.scope_id is not None:
                asking.append(i)
        if not asking:
            return found
        # Embedded here even when the scope is still empty: the vector is stored with the
        # answer, so workers never run the model, and a chunk is embedded in one batch.
        try:
            vectors = await index.embed([probes[i].task.prompt for i in asking])
        except PipelineError as exc:  # an embedder outage costs savings, never answers
            logger.warning("semantic cache skipped for %d task(s): %s", len(asking), exc)
            for i in asking:
                probes[i].scope_id = None
            return found
        vectors = np.asarray(vectors, dtype=np.float32)
        by_scope: dict[str, list[int]] = {}
        for row, i in enumerate(asking):
            probes[i].vector = vectors[row].tobytes()
            by_scope.setdefault(probes[i].scope_id or "", []).append(row)
        queries = [
            (scope_id, [probes[asking[r]].task.prompt for r in rows], vectors[rows])
            for scope_id, rows in by_scope.items()
        ]
        choices: dict[int, list[Candidate]] = {}
        for rows, (passed, refused) in zip(
            by_scope.values(), await index.candidates(queries), strict=True
        ):
            for r, cands, blocked in zip(rows, passed, refused, strict=True):
                if cands:
                    choices[asking[r]] = cands
                if blocked:
                    task = probes[asking[r]].task
                    counts[(task.tenant, task.model, "semantic_blocked")] += 1
        choices = await self._with_entries(choices)
        expired = []
        for i, cands in choices.items():  # the best candidate whose entry is alive
            for cand in cands:
                if cand.entry is not None and cand.entry[0] is not None:
                    found[i] = cand
                    break
                expired.append(cand)
        await index.forget(expired)
        return found

    async def _with_entries(
        self, choices: dict[int, list[Candidate]]
    ) -> dict[int, list[Candidate]]:
        """The candidates with their entries' fields, read in one round trip where the index
        did not read them with the search (brute force)."""
        unread = [c for cands in choices.values() for c in cands if c.entry is None]
        if not unread:
            return choices
        async with self.redis.pipeline(transaction=False) as pipe:
            for cand in unread:
                pipe.hmget(self.keys.cache_entry(cand.key), list(ENTRY_FIELDS))
            rows = iter(await pipe.execute())
        return {
            i: [c if c.entry is not None else replace(c, entry=tuple(next(rows))) for c in cands]
            for i, cands in choices.items()
        }

    def account(
        self,
        pipe: Any,
        touched: Sequence[tuple[str, dict[bytes, bytes]]],
        counts: Counter[tuple[str, str, str]],
        now: float,
    ) -> None:
        """Queue the counters, and the longer life that hits earn their entries (adaptive TTL)."""
        for (tenant, model, metric), n in counts.items():
            if n:
                pipe.hincrby(self.keys.cache_stats(), SEP.join((tenant, model, metric)), n)
        hits: Counter[str] = Counter(key for key, _entry in touched)
        for key, entry in touched:
            if key not in hits:
                continue
            policy = TTLPolicy(int(entry[b"base"]), int(entry[b"max"]))
            total_hits = int(entry[b"hits"] or 0) + hits.pop(key)
            remaining = policy.remaining_s(age_s=now - float(entry[b"created"]), hits=total_hits)
            pipe.hset(self.keys.cache_entry(key), mapping={"hits": total_hits})
            if remaining > 0:
                pipe.expire(self.keys.cache_entry(key), remaining)
                member = SEP.join((entry[b"owner"].decode(), key))
                pipe.zadd(self.keys.cache_entries(), {member: now + remaining}, xx=True)

    # worker side
    async def store(self, item_key: str, outcome: dict[str, Any]) -> bool:
        """Cache one answered item if its tasks asked for it; False when there is nothing to do
        (no intent: `no_cache`, cache off, or this answer was already stored)."""
        return await self.store_many([(item_key, outcome)]) == 1

    async def store_many(self, answered: Sequence[tuple[str, dict[str, Any]]]) -> int:
        """Cache a batch's answered items in two round trips (take the intents, write the
        entries); returns how many were stored."""
        return await store_answers(self.redis, self.keys, self.semantic, answered)

    async def clear(self, *, tenant: str | None = None) -> int:
        """Delete the cached answers (entries, vectors with their prompts, pending intents) of
        one tenant, or of all tenants; returns the number of entries deleted. Counters stay."""
        return await clear_entries(self.redis, self.keys, tenant=tenant)

    # read side
    async def stats(self, *, tenant: str | None = None) -> list[CacheStatsRow]:
        """Entries, hit rates and savings per tenant and model."""
        return await read_stats(self.redis, self.keys, tenant=tenant)

    async def aclose(self) -> None:
        embedder = self.semantic.embedder if self.semantic else None
        close = getattr(embedder, "aclose", None)
        if close is not None:
            await close()
