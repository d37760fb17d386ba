"""Grey-zone candidates verified in the worker, beside the batch's own call.

At submit a grey-zone candidate (similar, guard passed, below the serve threshold) leaves its
task a miss, with the candidate stored beside the pending item (`Keys.cache_grey`). The worker
that runs the item's batch asks the verification model (verify.py): a confirmed candidate's
answer is served (`cache: "semantic"`, cost 0, the saving recorded), anything else goes to the
provider with the batch. A batch holding both grey-zone items and others runs as two parts at
once (`<batch>.m`, `<batch>.g`), so the others' call never waits for a verification; a part is
not an open batch of its own, the parent's job runs (and reruns) both.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis

from pipeline.cache.entries import entry_fields
from pipeline.cache.semantic import Candidate
from pipeline.cache.store import ResponseCache
from pipeline.cache.vectors import ENTRY_FIELDS
from pipeline.cache.verify import PairCheck, Verifier
from pipeline.costs.ledger import Ledger
from pipeline.costs.prices import PriceTable
from pipeline.costs.savings import Hit, cache_savings
from pipeline.keys import Keys
from pipeline.models import Batch, Item


class Results(Protocol):
    """Where answers go (the run store): each item's outcome to every task waiting for it."""

    async def finish_items(self, outcomes: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        """Write each (item key, outcome); return how many tasks each one answered."""
        ...


@dataclass(frozen=True)
class Settled:
    """What a batch does after its grey-zone items were settled: send `items`, or run `parts`
    instead (the batch was split)."""

    items: list[Item] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)


class GreyZone:
    """Verifies the grey-zone candidates of a batch's items before or beside its call."""

    def __init__(
        self,
        cache: ResponseCache,
        verifier: Verifier,
        runs: Results,
        ledger: Ledger,
        prices: PriceTable,
    ) -> None:
        self.cache = cache
        self.verifier = verifier
        self.runs = runs
        self.ledger = ledger
        self.prices = prices
        self.redis: Redis = cache.redis
        self.keys: Keys = cache.keys

    async def settle(self, batch: Batch, items: Sequence[Item]) -> Settled:
        """Split a batch of grey-zone items and others into two parts; verify a batch of
        grey-zone items only and serve what the model confirms; else change nothing."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.mget([k.cache_grey(item.key) for item in items])
            pipe.hget(k.batch(batch.id), "parts")
            raws, parts = await pipe.execute()
        if parts:  # split by an earlier run of this job
            return Settled(parts=parts.decode().split(","))
        grey = {
            item.key: Candidate.from_json(raw)
            for item, raw in zip(items, raws, strict=True)
            if raw is not None
        }
        if not grey:
            return Settled(items=list(items))
        if len(grey) < len(items):
            return Settled(parts=await self._split(batch, items, grey))
        served = await self._verify(batch, items, grey)
        return Settled(items=[item for item in items if item.key not in served])

    async def _split(
        self, batch: Batch, items: Sequence[Item], grey: dict[str, Candidate]
    ) -> list[str]:
        """Write the two parts and the parent's note of them in one transaction."""
        k = self.keys
        now = int(time.time() * 1000)
        parts = {
            f"{batch.id}.m": [item.key for item in items if item.key not in grey],
            f"{batch.id}.g": [item.key for item in items if item.key in grey],
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            for part, keys in parts.items():
                fields = {"group": batch.group, "items": ",".join(keys), "created_ms": now}
                flags = {
                    "alone_attempts": 0,
                    "status": "open",
                    "alone": "1" if batch.alone else "0",
                }
                pipe.hset(k.batch(part), mapping={**fields, **flags})
            pipe.hset(k.batch(batch.id), "parts", ",".join(parts))
            await pipe.execute()
        return list(parts)

    async def _verify(
        self, batch: Batch, items: Sequence[Item], grey: dict[str, Candidate]
    ) -> set[str]:
        """Ask the model about every candidate, serve the confirmed ones whose entry lives;
        returns the keys of the items served."""
        # an entry that expired or was cleared since the lookup is a miss: never paid to verify
        async with self.redis.pipeline(transaction=False) as pipe:
            for candidate in grey.values():
                pipe.hmget(self.keys.cache_entry(candidate.key), list(ENTRY_FIELDS))
            rows = await pipe.execute()
        alive = {key: row for key, row in zip(grey, rows, strict=True) if row[0] is not None}
        keys = list(alive)
        checks = [
            PairCheck(batch.tenant, grey[k].scope_id, grey[k].query, grey[k].text) for k in keys
        ]
        verdicts = await self.verifier.confirm(checks)
        counts: Counter[tuple[str, str, str]] = Counter()
        confirmed = [key for key, yes in zip(keys, verdicts, strict=True) if yes]
        for yes in verdicts:
            metric = "semantic_verified" if yes else "semantic_refused"
            counts[(batch.tenant, batch.model, metric)] += 1
        by_key = {item.key: item for item in items}
        answers: list[tuple[Item, dict[str, Any]]] = []
        touched = []
        for key in confirmed:
            entry = entry_fields(alive[key])
            record = self.cache.answer(entry, batch.tenant, batch.model, "semantic", counts)
            item = by_key[key]
            record["baseline_model"] = item.requested_model or self.cache.settings.baseline_model
            answers.append((item, record))
            touched.append((grey[key].key, entry))
        tasks = await self.runs.finish_items([(item.key, record) for item, record in answers])
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(*[self.keys.cache_grey(key) for key in keys])
            self.cache.account(pipe, touched, counts, time.time())
            await pipe.execute()
        await self._record_savings(batch, answers, tasks)
        return {item.key for item, _ in answers}

    async def _record_savings(
        self,
        batch: Batch,
        answers: Sequence[tuple[Item, dict[str, Any]]],
        tasks: Sequence[int],
    ) -> None:
        """The `semantic_cache` saving of every task given a served answer (ids derive from the
        batch and the items, so a rerun adds nothing)."""
        hits = [
            Hit(
                task_id=f"{item.key}#{n}",
                kind="semantic",
                tenant=batch.tenant,
                user_id=item.user_id,
                endpoint=item.endpoint,
                baseline_model=record["baseline_model"],
                model=record["model"],
                naive_input_tokens=int(record["naive_input_tokens"] or 0),
                naive_output_tokens=int(record["naive_output_tokens"] or 0),
            )
            for (item, record), count in zip(answers, tasks, strict=True)
            for n in range(max(count, 0))
        ]
        if hits:
            for saving in cache_savings(self.prices, batch.id, hits):
                await self.ledger.record_saving(saving)
