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
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from .keys import Keys

if TYPE_CHECKING:
    from .ledger import Saving
    from .models import CallRecord

SEP = "\x1f"
NANO = Decimal(1_000_000_000)

# Opcodes the ledger's append script understands: [op, key index, a, b]
INCR = "i"  # HINCRBY key a b
INCR_ALL = "h"  # HINCRBY key field amount, for each field of the object a
HSET = "s"  # HSET key a b
ZADD = "z"  # ZADD key a(score) b(member)
SETEX = "x"  # SET key a EX b


def hour_of(at: float) -> str:
    """The UTC hour bucket of an epoch time, `YYYYMMDDHH`."""
    return time.strftime("%Y%m%d%H", time.gmtime(at))


def field_name(*parts: str) -> str:
    return SEP.join(parts)


Counts = dict[str, int]


@dataclass
class Ops:
    """Redis writes for the append script: extra keys, ops, and counters per hash."""

    keys: list[str] = field(default_factory=list)
    ops: list[tuple[str, int, str | int, str | int]] = field(default_factory=list)
    hashes: dict[str, Counts] = field(default_factory=dict)
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
        self.key(key)
        into = self.hashes.setdefault(key, {})
        for name, amount in counts.items():
            if amount:
                into[name] = into.get(name, 0) + amount

    def args(self) -> bytes:
        """The ops as the script's one JSON argument (amounts as strings: exact in Lua)."""
        out: list[list[Any]] = [
            [op, i, str(a) if isinstance(a, int) else a, str(b)] for op, i, a, b in self.ops
        ]
        for key, counts in self.hashes.items():
            if counts:
                out.append([INCR_ALL, self.key(key), {k: str(v) for k, v in counts.items()}, ""])
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
    ops.add(ZADD, keys.ledger_hours(), hour_start, hour)


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
    ops.add(ZADD, keys.ledger_hours(), int(saving.at // 3600 * 3600), hour)


def parse_field(name: str) -> tuple[str, ...]:
    """A hash field split into its parts: (metric,), (metric, dim, value) or with a scope."""
    return tuple(name.split(SEP))


def merge(into: dict[str, int], rows: Iterable[tuple[bytes | str, bytes | str | int]]) -> None:
    """Add HGETALL rows into a running total."""
    for raw_name, raw_value in rows:
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        into[name] = into.get(name, 0) + int(raw_value)
