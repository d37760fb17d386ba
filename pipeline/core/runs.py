"""Runs and their results: exactly one result per submitted task, readable in input order.

A result is written once (HSETNX), and the run's `done` counter moves only when it is: a batch
that runs twice never duplicates a result. A task alone on its item holds the item's answer (its
*outcome*) itself; identical tasks sharing an item hold a reference to the outcome, stored once,
with their share of the cost. A batch's outcomes go out in one atomic step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.costs.money import usd_float
from pipeline.keys import Keys
from pipeline.models import Result

_WRITE = """
-- KEYS: run results, run;  ARGV: task id, result json, ttl s
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'done', 1)
  if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
  return 1
end
return 0
"""

_FINISH = """
-- KEYS: per item its item, cost and outcome keys
-- ARGV: key prefix, ttl s, then per item its outcome json
-- Gives each item's outcome to every task waiting on it (`length:ref` after the item's JSON
-- and \\30): a task alone on its item gets the outcome itself, several share it through the
-- outcome hash (each its share of the cost). Returns per item how many tasks were waiting,
-- -1 when the item was already given.
local counts, done, order = {}, {}, {}
for i = 0, #KEYS / 3 - 1 do
  local item, cost, outcome = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local blob = redis.call('GET', item)
  if not blob then
    counts[#counts + 1] = -1
  else
    local refs, pos = {}, string.find(blob, '\\30', 1, true) + 1
    while pos <= #blob do
      local colon = string.find(blob, ':', pos, true)
      local n = tonumber(string.sub(blob, pos, colon - 1))
      refs[#refs + 1] = string.sub(blob, colon + 1, colon + n)
      pos = colon + n + 1
    end
    local value = ARGV[3 + i]
    if #refs > 1 then
      redis.call('HSET', outcome, 'json', value, 'n', #refs)
      redis.call('EXPIRE', outcome, ARGV[2])
    end
    for j, ref in ipairs(refs) do
      local sep = string.find(ref, '\\31', 1, true)
      local run, tid = string.sub(ref, 1, sep - 1), string.sub(ref, sep + 1)
      if #refs > 1 then value = '@' .. outcome .. '|' .. (j - 1) end
      if redis.call('HSETNX', ARGV[1] .. ':run:' .. run .. ':results', tid, value) == 1 then
        if not done[run] then
          done[run] = 0
          order[#order + 1] = run
        end
        done[run] = done[run] + 1
      end
    end
    redis.call('DEL', item, cost)
    counts[#counts + 1] = #refs
  end
end
for _, run in ipairs(order) do
  local results = ARGV[1] .. ':run:' .. run .. ':results'
  redis.call('HINCRBY', ARGV[1] .. ':run:' .. run, 'done', done[run])
  if redis.call('TTL', results) == -1 then redis.call('EXPIRE', results, ARGV[2]) end
end
return counts
"""


def share(total: int, n: int, index: int) -> int:
    """The index-th of n integer shares of total; the shares add up to total exactly."""
    base, extra = divmod(total, n)
    return base + (1 if index < extra else 0)


def item_spend(row: dict[bytes, bytes]) -> dict[str, Any]:
    """The outcome fields of an item-cost hash: one field `call:<id>` per call that charged
    the item, valued `nusd,in,out` (nusd `?` when the call's price was unknown)."""
    nusd: int | None = 0
    in_tokens = out_tokens = 0
    calls = []
    for raw_name, raw_value in row.items():
        name = raw_name.decode()
        if not name.startswith("call:"):
            continue
        calls.append(name.removeprefix("call:"))
        cost, used_in, used_out = raw_value.decode().split(",")
        nusd = None if nusd is None or cost == "?" else nusd + int(cost)
        in_tokens += int(used_in)
        out_tokens += int(used_out)
    return {
        "input_tokens": in_tokens,
        "output_tokens": out_tokens,
        "cost_nusd": nusd,
        "calls": sorted(calls),
    }


class RunStore:
    """Run records, result writes and ordered result reads."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int = 7 * 86400) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._write = redis.register_script(_WRITE)
        self._finish = redis.register_script(_FINISH)

    async def create(self, run_id: str, *, source: str, simulated: bool) -> None:
        now = time.time()
        await self.redis.hset(
            self.keys.run(run_id),
            mapping={
                "created_at": now,
                "source": source,
                "simulated": int(simulated),
                "total": 0,
                "done": 0,
                "sealed": 0,
            },
        )
        await self.redis.zadd(self.keys.runs(), {run_id: now})

    def add_tasks(self, pipe: Any, run_id: str, tasks: Sequence[tuple[str, Any, str]]) -> None:
        """Queue the writes that register (task id, metadata, tenant) in input order."""
        k = self.keys
        pipe.rpush(k.run_order(run_id), *[task_id for task_id, _, _ in tasks])
        echo = {task_id: orjson.dumps(meta) for task_id, meta, _ in tasks if meta is not None}
        if echo:
            pipe.hset(k.run_tasks(run_id), mapping=echo)
        by_tenant: dict[str, dict[str, str]] = {}
        for task_id, _, tenant in tasks:
            by_tenant.setdefault(tenant, {})[task_id] = run_id
        day = int(time.time() // 86400)
        for tenant, runs in by_tenant.items():
            pipe.hset(k.task_runs(tenant, day), mapping=runs)
            pipe.expire(k.task_runs(tenant, day), self.ttl_s + 86400)

    async def seal(self, run_id: str, total: int) -> None:
        """Mark the submission complete: the run is done when `done` reaches `total`."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.run(run_id), mapping={"total": total, "sealed": 1})
            for key in (
                k.run(run_id),
                k.run_order(run_id),
                k.run_results(run_id),
                k.run_tasks(run_id),
            ):
                pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def write(self, run_id: str, result: dict[str, Any], pipe: Any = None) -> None:
        """Write a complete result (rejections, cache hits, failures without an item)."""
        k = self.keys
        await self._write(
            keys=[k.run_results(run_id), k.run(run_id)],
            args=[result["id"], orjson.dumps(result), self.ttl_s],
            client=pipe,
        )

    async def finish_item(self, item_key: str, outcome: dict[str, Any]) -> int:
        """Give an item's outcome to every task waiting on it; -1 if it was already given."""
        (n,) = await self.finish_items([(item_key, outcome)])
        return n

    async def finish_items(self, outcomes: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        """`finish_item` for each (item key, outcome), in one script."""
        if not outcomes:
            return []
        k = self.keys
        keys: list[str] = []
        args: list[str | int | bytes] = [k.prefix, self.ttl_s]
        for item_key, outcome in outcomes:
            keys += [
                k.item(item_key),
                k.item_cost(item_key),
                f"{k.prefix}:outcome:{item_key}:{outcome['batch_id']}",
            ]
            args.append(orjson.dumps(outcome))
        counts = await self._finish(keys=keys, args=args)
        return [int(n) for n in counts]

    async def spent(self, item_keys: Sequence[str]) -> list[dict[str, Any]]:
        """The outcome fields of what each item cost over every call it took (the ledger's
        attribution): tokens, nano-dollars (None when a price was unknown), the calls' ids."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for item_key in item_keys:
                pipe.hgetall(self.keys.item_cost(item_key))
            rows: list[dict[bytes, bytes]] = await pipe.execute()
        return [item_spend(row) for row in rows]

    async def progress(self, run_id: str) -> tuple[int, int, bool]:
        """(done, total, sealed) of a run."""
        raw = await self.redis.hmget(self.keys.run(run_id), ["done", "total", "sealed"])
        if raw[0] is None:
            raise KeyError(run_id)
        return int(raw[0]), int(raw[1] or 0), raw[2] in (b"1", "1")

    async def info(self, run_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.run(run_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def wait(
        self, run_id: str, *, poll_s: float = 0.05, timeout_s: float | None = None
    ) -> None:
        """Return when every task of a sealed run has its result."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            done, total, sealed = await self.progress(run_id)
            if sealed and done >= total:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id}: {done} of {total} results after {timeout_s}s")
            await asyncio.sleep(poll_s)

    async def records(self, run_id: str, *, chunk: int = 1000) -> AsyncIterator[dict[str, Any]]:
        """Raw result records in input order, with costs resolved to this task's share."""
        k = self.keys
        start = 0
        while True:
            ids = [
                i.decode()
                for i in await self.redis.lrange(k.run_order(run_id), start, start + chunk - 1)
            ]
            if not ids:
                return
            start += len(ids)
            for record in await self.written(run_id, ids):
                yield record

    async def written(self, run_id: str, ids: list[str]) -> list[dict[str, Any]]:
        """The records of those `ids` whose result is written, in the order given."""
        k = self.keys
        raw = await self.redis.hmget(k.run_results(run_id), ids)
        echoes = await self.redis.hmget(k.run_tasks(run_id), ids)
        refs = {v.decode()[1:].rsplit("|", 1)[0] for v in raw if v and v.startswith(b"@")}
        outcomes = await self._outcomes(sorted(refs))
        found = []
        for task_id, value, echo in zip(ids, raw, echoes, strict=True):
            if value is None:
                continue
            record = self._resolve(value.decode(), outcomes)
            record["id"] = task_id
            if echo is not None:
                record["metadata"] = orjson.loads(echo)
            found.append(record)
        return found

    async def results(self, run_id: str) -> AsyncIterator[Result]:
        async for record in self.records(run_id):
            yield to_result(record)

    async def result(
        self, task_id: str, run_id: str | None = None, *, tenant: str = "default"
    ) -> Result | None:
        """One task's result: from the named run, else from the latest run in which `tenant`
        used the id (another tenant's task with the same id is never found)."""
        if run_id is None:
            today = int(time.time() // 86400)
            async with self.redis.pipeline(transaction=False) as pipe:
                for day in range(today, today - self.ttl_s // 86400 - 2, -1):  # newest first
                    pipe.hget(self.keys.task_runs(tenant, day), task_id)
                found = [raw for raw in await pipe.execute() if raw is not None]
            if not found:
                return None
            run_id = found[0].decode()
        value = await self.redis.hget(self.keys.run_results(run_id), task_id)
        if value is None:
            return None
        text = value.decode()
        refs = [text[1:].rsplit("|", 1)[0]] if text.startswith("@") else []
        record = self._resolve(text, await self._outcomes(refs))
        record["id"] = task_id
        echo = await self.redis.hget(self.keys.run_tasks(run_id), task_id)
        if echo is not None:
            record["metadata"] = orjson.loads(echo)
        return to_result(record)

    async def _outcomes(self, refs: Sequence[str]) -> dict[str, tuple[dict[str, Any], int]]:
        if not refs:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.hmget(ref, ["json", "n"])
            rows = await pipe.execute()
        return {
            ref: (orjson.loads(row[0]), int(row[1]))
            for ref, row in zip(refs, rows, strict=True)
            if row[0] is not None
        }

    @staticmethod
    def _resolve(value: str, outcomes: dict[str, tuple[dict[str, Any], int]]) -> dict[str, Any]:
        if not value.startswith("@"):
            record: dict[str, Any] = orjson.loads(value)
            return record
        ref, index_text = value[1:].rsplit("|", 1)
        if ref not in outcomes:
            return {"status": "failed", "error": {"code": "expired", "message": "result expired"}}
        outcome, n = outcomes[ref]
        index = int(index_text)
        record = dict(outcome)
        for field in ("input_tokens", "output_tokens"):  # naive_* stay whole: each task alone
            record[field] = share(int(outcome.get(field) or 0), n, index)
        if outcome.get("cost_nusd") is not None:
            record["cost_nusd"] = share(int(outcome["cost_nusd"]), n, index)
        return record


def to_result(record: dict[str, Any]) -> Result:
    """A public result line from a stored record (costs kept in nano-dollars internally)."""
    data = dict(record)
    cost = data.pop("cost_nusd", 0)
    data["cost_usd"] = None if cost is None else usd_float(cost)
    return Result.model_validate(data)
