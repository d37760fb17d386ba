"""Write-time aggregation of the ledger: integer counters per UTC hour and day.

Every ledger record also adds its cost, tokens and counts to a few Redis hashes, in the same
atomic step that appends it (see `ledger.py`), so reports read a few hundred small hashes instead
of scanning every record. A re-run that adds no record adds no count either.

Hash fields are `metric` for a total, `metric␟dim␟value` for a breakdown, and
`metric␟dim␟value␟scope_dim␟scope_value` for a breakdown inside one tenant or endpoint (␟ is
the ASCII unit separator, which ids never contain in practice). Dimensions: `m` model, `p`
provider, `t` tenant, `e` endpoint, `u` user. Money is in nano-dollars (1e-9 USD).

    hour          totals; cost by m, p, t, e; cost by m, e inside t; by m, t inside e; savings
    hour users    user -> cost: overall, and one hash per tenant and per endpoint (read only
                  to explain anomalies, so reports never read them)
    day           totals; cost, calls, items, tokens by m, p, t; cost, items, tokens by e;
                  cost, items by u; cost by m, e inside t and by m, t inside e; savings per
                  lever, and per lever inside t
    day users     user -> cost, one hash per tenant and per endpoint (explains anomalies)

A record's counters (~60 fields over a dozen hashes) are not added one HINCRBY at a time: the
append step pushes them, as one JSON entry, onto the ledger's journal list (one RPUSH), and a
fold sums many entries in memory and adds each distinct field once. The writer whose push makes
the journal a multiple of `FOLD_EVERY` entries long folds; every reader of the hashes folds all
first (`Journal.fold(drain=True)`), so a report never misses a record. A fold removes the entries
it read and adds their sums in one atomic step, and only if no other fold took them first: each
entry is counted exactly once, whoever folds, and a writer that dies before folding only leaves
the work to the next fold.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio import Redis

from pipeline.costs.money import NANO
from pipeline.keys import Keys

if TYPE_CHECKING:
    from pipeline.models import CallRecord, Saving

SEP = "\x1f"

# Opcodes the ledger's append script understands: [op, key index, a, b]
HSET = "s"  # HSET key a b
SETEX = "x"  # SET key a EX b
JOURNAL = "j"  # RPUSH key a: a record's rollup counters, for the next fold

FOLD_EVERY = 256  # journal entries per fold on the write path (~0.5 MB of entries)
FOLD_CHUNK = 2000  # entries read per fold step


def hour_of(at: float) -> str:
    """The UTC hour bucket of an epoch time, `YYYYMMDDHH`."""
    return time.strftime("%Y%m%d%H", time.gmtime(at))


def field_name(*parts: str) -> str:
    return SEP.join(parts)


Counts = dict[str, int]


@dataclass
class Ops:
    """Redis writes for the append script: extra keys, ops, and the rollup counters per hash
    (with the hours they touch) that go to the journal as one entry."""

    keys: list[str] = field(default_factory=list)
    ops: list[tuple[str, int, str | int, str | int]] = field(default_factory=list)
    hashes: dict[str, Counts] = field(default_factory=dict)
    hours: dict[str, int] = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict)
    first_key: int = 3  # KEYS[1], KEYS[2] are the id set and the stream

    def key(self, name: str) -> int:
        """The script's KEYS index of `name`, adding it on first use."""
        if name not in self._index:
            self.keys.append(name)
            self._index[name] = self.first_key + len(self.keys) - 1
        return self._index[name]

    def add(self, op: str, key: str, a: str | int, b: str | int) -> None:
        self.ops.append((op, self.key(key), a, b))

    def incr(self, key: str, counts: Counts) -> None:
        """Add `counts` to the hash `key` (summed with earlier increments of the same hash)."""
        into = self.hashes.setdefault(key, {})
        for name, amount in counts.items():
            if amount:
                into[name] = into.get(name, 0) + amount

    def hour(self, hour: str, hour_start: int) -> None:
        """Index `hour` (scored by its start) among the hours that have records."""
        self.hours[hour] = hour_start

    def args(self, journal: str, entry_id: str) -> bytes:
        """The ops as the script's one JSON argument (amounts as strings: exact in Lua), the
        rollup counters as one journal entry."""
        out: list[list[Any]] = [
            [op, i, str(a) if isinstance(a, int) else a, str(b)] for op, i, a, b in self.ops
        ]
        if self.hashes or self.hours:
            entry = {"i": entry_id, "h": {k: v for k, v in self.hashes.items() if v}}
            entry["z"] = self.hours
            out.append([JOURNAL, self.key(journal), orjson.dumps(entry).decode(), ""])
        return orjson.dumps(out)


def call_counts(keys: Keys, record: CallRecord) -> tuple[dict[str, Counts], str, int]:
    """A call record's counters per rollup hash, with its hour and the hour's start."""
    hour = hour_of(record.at)
    day = hour[:8]
    usage = record.usage
    cost = 0 if record.cost_usd is None else int(record.cost_usd * NANO)
    ok = record.status == "ok"
    items = record.batch_size if ok else 0
    calls = 0 if record.status == "adjustment" else 1
    errors = 1 if record.status in ("error", "unknown") else 0
    tenant, model, provider = record.tenant, record.model, record.provider
    h: Counts = {
        "calls": calls,
        "cost": cost,
        "unpriced": 1 if record.cost_usd is None else 0,
        "errors": errors,
        "items": items,
        "in": usage.input_tokens,
        "out": usage.output_tokens,
        "cached_in": usage.cached_input_tokens,
        "cache_write": usage.cache_write_tokens,
        "latency_ms": record.latency_ms,
        "simulated": 1 if record.simulated else 0,
    }
    d: Counts = dict(h)
    out: dict[str, Counts] = {keys.ledger_hour(hour): h, keys.ledger_day(day): d}
    users: dict[str, Counts] = {}
    t_scope = f"{SEP}t{SEP}{tenant}"
    for dim, value in (("m", model), ("p", provider), ("t", tenant)):
        tail = f"{SEP}{dim}{SEP}{value}"
        h["cost" + tail] = cost
        d["cost" + tail] = cost
        d["calls" + tail] = calls
        d["items" + tail] = items
        d["in" + tail] = usage.input_tokens
        d["out" + tail] = usage.output_tokens
    d[f"errors{SEP}m{SEP}{model}"] = errors
    h[f"cost{SEP}m{SEP}{model}{t_scope}"] = cost
    d[f"cost{SEP}m{SEP}{model}{t_scope}"] = cost
    for share in record.shares:
        part = share.cost_nusd or 0
        user, endpoint = share.user_id, share.endpoint
        e = f"{SEP}e{SEP}{endpoint}"
        u = f"{SEP}u{SEP}{user}"
        scoped = (
            f"cost{e}{t_scope}",
            f"cost{SEP}m{SEP}{model}{e}",
            f"cost{SEP}t{SEP}{tenant}{e}",
        )
        for c in (h, d):
            c["cost" + e] = c.get("cost" + e, 0) + part
            for name in scoped:
                c[name] = c.get(name, 0) + part
        for name, amount in (
            ("items" + e, share.items),
            ("in" + e, share.input_tokens),
            ("out" + e, share.output_tokens),
            ("cost" + u, part),
            ("items" + u, share.items),
        ):
            if amount:
                d[name] = d.get(name, 0) + amount
        for name in (
            keys.ledger_hour_users(hour),
            keys.ledger_hour_users(hour, f"t:{tenant}"),
            keys.ledger_hour_users(hour, f"e:{endpoint}"),
            keys.ledger_day_users(day, f"t:{tenant}"),
            keys.ledger_day_users(day, f"e:{endpoint}"),
        ):
            c = users.setdefault(name, {})
            c[user] = c.get(user, 0) + part
    out.update(users)
    return out, hour, int(record.at // 3600 * 3600)


def call_rollups(keys: Keys, record: CallRecord, ops: Ops) -> None:
    """Add a call record's counters to its hour and day hashes, and its hour to the index."""
    counts, hour, hour_start = call_counts(keys, record)
    for key, fields in counts.items():
        ops.incr(key, fields)
    ops.hour(hour, hour_start)


def saving_rollups(keys: Keys, saving: Saving, ops: Ops) -> None:
    """Add a saving record's counters to its hour and day hashes."""
    hour = hour_of(saving.at)
    counts = {
        field_name("saved", saving.lever): saving.saved_nusd,
        field_name("tasks", saving.lever): saving.tasks,
    }
    ops.incr(keys.ledger_hour(hour), counts)
    ops.incr(
        keys.ledger_day(hour[:8]),
        counts
        | {
            field_name("saved", saving.lever, "t", saving.tenant): saving.saved_nusd,
            field_name("tasks", saving.lever, "t", saving.tenant): saving.tasks,
        },
    )
    ops.hour(hour, int(saving.at // 3600 * 3600))


def parse_field(name: str) -> tuple[str, ...]:
    """A hash field split into its parts: (metric,), (metric, dim, value) or with a scope."""
    return tuple(name.split(SEP))


def merge(into: dict[str, int], rows: Iterable[tuple[bytes | str, bytes | str | int]]) -> None:
    """Add HGETALL rows into a running total."""
    for raw_name, raw_value in rows:
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        into[name] = into.get(name, 0) + int(raw_value)


_FOLD = """
-- KEYS: the journal, the hours index, then the hashes
-- ARGV: entries read, the last of them, JSON [[key index, {field: amount}], ...],
--       JSON {hour: start}
-- Entries are unique (each holds its record id) and only ever leave from the head, so if the
-- last entry read is still where it was, nobody folded them since they were read.
local n = tonumber(ARGV[1])
if redis.call('LINDEX', KEYS[1], n - 1) ~= ARGV[2] then return 0 end
redis.call('LTRIM', KEYS[1], n, -1)
for _, h in ipairs(cjson.decode(ARGV[3])) do
  local key = KEYS[h[1]]
  for f, v in pairs(h[2]) do redis.call('HINCRBY', key, f, v) end
end
for hour, start in pairs(cjson.decode(ARGV[4])) do redis.call('ZADD', KEYS[2], start, hour) end
return 1
"""


class Journal:
    """The ledger's journal of rollup counters not yet added to their hashes."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._fold = redis.register_script(_FOLD)

    async def fold(self, *, drain: bool = False) -> int:
        """Add journal entries to their hashes; returns how many this call folded. A writer
        stops when another fold took its entries; a reader (`drain`) goes on until the journal
        is empty, so what it reads next includes every record written before."""
        folded = 0
        journal = self.keys.ledger_journal()
        while True:
            raw: list[bytes] = await self.redis.lrange(journal, 0, FOLD_CHUNK - 1)
            if not raw:
                return folded
            sums: dict[str, Counts] = {}
            hours: dict[str, int] = {}
            for entry in raw:
                doc = orjson.loads(entry)
                for key, fields in doc["h"].items():
                    into = sums.setdefault(key, {})
                    for name, amount in fields.items():
                        into[name] = into.get(name, 0) + int(amount)
                hours.update(doc["z"])
            names = [k for k, v in sums.items() if any(v.values())]
            counters = [
                [i + 3, {f: str(n) for f, n in sums[k].items() if n}] for i, k in enumerate(names)
            ]
            args: list[int | bytes] = [
                len(raw),
                raw[-1],
                orjson.dumps(counters),
                orjson.dumps(hours),
            ]
            keys = [journal, self.keys.ledger_hours(), *names]
            if await self._fold(keys=keys, args=args):
                folded += len(raw)
            elif not drain:
                return folded
            if len(raw) < FOLD_CHUNK and not drain:
                return folded
