"""The cost ledger: one immutable record per provider call, written exactly once.

A call's record, the stored provider answer, the per-item cost attribution and the hourly and
daily rollups (`rollup.py`) are written in one atomic step keyed by the call id, so a batch that
runs again (worker killed, job retried) reuses the stored answer and adds nothing: no second
record, no second charge on any item, no second count in a report.

Failed calls are recorded too (status `error`, nothing billed, id `batch#try`), and so are calls
of unknown outcome (`inflight.py`: status `unknown`, and the `adjustment` that reconciles them).
Savings are `Saving` entries in the same stream, apart from spend, written once per id the same
way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.costs import metrics
from pipeline.costs.prices import allocate
from pipeline.costs.rollup import (
    FOLD_EVERY,
    HSET,
    SETEX,
    Journal,
    Ops,
    call_counts,
    call_rollups,
    saving_rollups,
)
from pipeline.errors import ProviderError
from pipeline.keys import Keys
from pipeline.models import Batch, CallRecord, Saving

_APPEND = """
-- KEYS: ledger ids, ledger stream, then the keys the ops name
-- ARGV: record id, stream field, record json, JSON list of [op, key index, a, b]
-- (one JSON argument, not four per op: packing hundreds of arguments costs the client more
-- than the whole script costs the server)
-- Returns 0 when the record was already written, else the journal's length (1 if none).
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
local journal = 1
for _, o in ipairs(cjson.decode(ARGV[4])) do
  local op, key, a, b = o[1], KEYS[o[2]], o[3], o[4]
  if op == 'j' then
    journal = redis.call('RPUSH', key, a)
  elseif op == 's' then
    redis.call('HSET', key, a, b)
  elseif op == 'x' then
    redis.call('SET', key, a, 'EX', b)
  end
end
return journal
"""

_INCR_ALL = """
-- KEYS: a hash;  ARGV: JSON object field -> amount
for f, n in pairs(cjson.decode(ARGV[1])) do redis.call('HINCRBY', KEYS[1], f, n) end
return 1
"""

_XADD_ALL = """
-- KEYS: the ledger stream;  ARGV: call record JSON, one entry each (a bulk import: one round
-- trip and no per-entry client work for thousands of entries)
for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'r', ARGV[i]) end
return #ARGV
"""


@dataclass(frozen=True)
class Share:
    """One item's part of a call: cost in nano-dollars (None when the price is unknown), tokens."""

    nusd: int | None
    input_tokens: int
    output_tokens: int


def item_charge(part: Share) -> str:
    """An item's share of one call as an item-cost hash value: `nusd,in,out` (`?` for an
    unknown price)."""
    nusd = "?" if part.nusd is None else str(part.nusd)
    return f"{nusd},{part.input_tokens},{part.output_tokens}"


def split_int(total: int, weights: Sequence[float]) -> list[int]:
    """Integer parts of `total` in proportion to `weights`, adding up to `total` exactly."""
    return [int(p) for p in allocate(Decimal(total), list(weights), quantum=Decimal(1))]


def error_record(batch: Batch, exc: ProviderError, attempt: int) -> CallRecord:
    """The record of a call that failed: nothing billed; the provider, the error and the try."""
    code = type(exc).__name__ if exc.status is None else f"http_{exc.status}"
    return CallRecord(
        id=f"{batch.id}#{attempt}",
        at=time.time(),
        batch_id=batch.id,
        provider=exc.provider,
        model=batch.model,
        status="error",
        error=f"{code}: {str(exc)[:300]}",
        cost_usd=Decimal(0),
        batch_size=len(batch.item_keys),
        tenant=batch.tenant,
        attempt=attempt,
    )


class Ledger:
    """Writes call and saving records with their attribution and rollups; reads them back."""

    def __init__(self, redis: Redis, keys: Keys, *, response_ttl_s: int = 86400) -> None:
        self.redis = redis
        self.keys = keys
        self.response_ttl_s = response_ttl_s
        self._append = redis.register_script(_APPEND)
        self._incr_all = redis.register_script(_INCR_ALL)
        self._xadd_all = redis.register_script(_XADD_ALL)
        self.journal = Journal(redis, keys)

    async def record(
        self, record: CallRecord, response_json: bytes | None, shares: dict[str, Share]
    ) -> bool:
        """Write the record once, with the stored answer (None: a call without one) and each
        item's share; False when this call was already recorded (then nothing is written)."""
        ops = self._call_ops(record, response_json, shares)
        return await self._write(record.id, "r", record.model_dump_json().encode(), ops, record)

    async def record_many(self, records: Sequence[CallRecord], *, chunk: int = 500) -> int:
        """Write already-finished call records (an import or backfill) in pipelined chunks,
        each once; returns how many were new. No stored answer or item share is written."""
        written = 0
        for start in range(0, len(records), chunk):
            part = records[start : start + chunk]
            async with self.redis.pipeline(transaction=False) as pipe:
                for record in part:
                    ops = Ops()
                    call_rollups(self.keys, record, ops)
                    args: list[str | bytes] = [
                        record.id,
                        "r",
                        record.model_dump_json().encode(),
                        ops.args(self.keys.ledger_journal(), record.id),
                    ]
                    keys = [self.keys.ledger_ids(), self.keys.ledger(), *ops.keys]
                    await self._append(keys=keys, args=args, client=pipe)
                flags = await pipe.execute()
            for record, flag in zip(part, flags, strict=True):
                if flag:
                    written += 1
                    metrics.observe_call(record)
            await self.journal.fold()
        return written

    async def import_records(self, records: Sequence[CallRecord], *, chunk: int = 20_000) -> int:
        """Bulk-load finished call records (a backfill, a migration, a benchmark): the same
        records, id guard and rollups as `record_many`, with each chunk's rollups summed in
        memory first. Records already in the ledger are skipped. Not atomic per record: run it
        while nothing else writes these records."""
        written = 0
        for start in range(0, len(records), chunk):
            part = list({r.id: r for r in records[start : start + chunk]}.values())
            known: list[int] = await self.redis.smismember(
                self.keys.ledger_ids(), [r.id for r in part]
            )
            fresh = [r for r, seen in zip(part, known, strict=True) if not seen]
            if not fresh:
                continue
            sums: dict[str, dict[str, int]] = {}
            hours: dict[str, int] = {}
            for record in fresh:
                counts, hour, hour_start = call_counts(self.keys, record)
                hours[hour] = hour_start
                for key, fields in counts.items():
                    into = sums.setdefault(key, {})
                    for name, amount in fields.items():
                        if amount:
                            into[name] = into.get(name, 0) + amount
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.sadd(self.keys.ledger_ids(), *[r.id for r in fresh])
                blobs = [record.model_dump_json() for record in fresh]
                await self._xadd_all(keys=[self.keys.ledger()], args=blobs, client=pipe)
                for key, fields in sums.items():
                    blob = orjson.dumps({k: str(v) for k, v in fields.items()})
                    await self._incr_all(keys=[key], args=[blob], client=pipe)
                pipe.zadd(self.keys.ledger_hours(), hours)
                await pipe.execute()
            written += len(fresh)
        return written

    def _call_ops(
        self, record: CallRecord, response_json: bytes | None, shares: dict[str, Share]
    ) -> Ops:
        ops = Ops()
        if response_json is not None:
            response_key = self.keys.batch_response(record.batch_id)
            ops.add(SETEX, response_key, response_json.decode(), self.response_ttl_s)
        for item_key, part in shares.items():
            # one field per call (`runs.item_spend` sums them): one write per item, not four
            ops.add(HSET, self.keys.item_cost(item_key), f"call:{record.id}", item_charge(part))
        return ops

    async def record_error(self, record: CallRecord) -> bool:
        """Write a failed call (status `error`, nothing billed) once; False if already written."""
        return await self._write(record.id, "r", record.model_dump_json().encode(), Ops(), record)

    async def record_saving(self, saving: Saving) -> bool:
        """Write a saving once, apart from spend; False when its id was already recorded."""
        ops = Ops()
        saving_rollups(self.keys, saving, ops)
        written = await self._run(f"s:{saving.id}", "s", saving.model_dump_json().encode(), ops)
        if written:
            metrics.observe_saving(saving)
        return written

    async def _write(
        self, record_id: str, stream_field: str, blob: bytes, ops: Ops, record: CallRecord
    ) -> bool:
        call_rollups(self.keys, record, ops)
        written = await self._run(record_id, stream_field, blob, ops)
        if written:
            metrics.observe_call(record)
        return written

    async def _run(self, record_id: str, stream_field: str, blob: bytes, ops: Ops) -> bool:
        encoded = ops.args(self.keys.ledger_journal(), record_id)
        args: list[str | int | bytes] = [record_id, stream_field, blob, encoded]
        keys = [self.keys.ledger_ids(), self.keys.ledger(), *ops.keys]
        journal = int(await self._append(keys=keys, args=args))
        if journal and journal % FOLD_EVERY == 0:
            await self.journal.fold()
        return bool(journal)

    async def entries(self, *, chunk: int = 5000) -> AsyncIterator[CallRecord | Saving]:
        """Every ledger entry, call records and savings, oldest first."""
        async for fields in self._stream(chunk):
            if b"r" in fields:
                yield CallRecord.model_validate_json(fields[b"r"])
            elif b"s" in fields:
                yield Saving.model_validate_json(fields[b"s"])

    async def _stream(self, chunk: int) -> AsyncIterator[dict[bytes, bytes]]:
        """The fields of every stream entry not yet archived, oldest first, read `chunk` entries
        at a time (entries up to the archive's mark may linger until the archiver trims them)."""
        mark = await self.redis.get(self.keys.ledger_archive_mark())
        start = "(" + mark.decode() if mark else "-"
        while True:
            rows = await self.redis.xrange(self.keys.ledger(), min=start, count=chunk)
            if not rows:
                return
            for _entry_id, fields in rows:
                yield fields
            start = "(" + rows[-1][0].decode()  # exclusive: after the last entry read

    async def raw_entries(self, *, chunk: int = 20_000) -> AsyncIterator[dict[str, Any]]:
        """Every entry as plain JSON data with its `type` (`call` or `saving`), oldest first:
        no validation, for exports of millions of records."""
        async for fields in self._stream(chunk):
            if b"r" in fields:
                data: dict[str, Any] = orjson.loads(fields[b"r"])
                data["type"] = "call"
                yield data
            elif b"s" in fields:
                yield orjson.loads(fields[b"s"])

    async def records(
        self, *, chunk: int = 5000, errors: bool = False
    ) -> AsyncIterator[CallRecord]:
        """Every billed call record, oldest first; with `errors`, failed calls too."""
        async for entry in self.entries(chunk=chunk):
            if isinstance(entry, CallRecord) and (errors or entry.status == "ok"):
                yield entry
