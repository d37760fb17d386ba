"""Write-time aggregation of the ledger: integer counters per UTC hour and day.

Every ledger record also adds its cost, tokens and counts to a few Redis hashes, in the same
atomic step that appends it (see `ledger.py`), so reports read a few hundred small hashes instead
of scanning every record. A re-run that adds no record adds no count either.

Hash fields are `metric` for a total, `metric␟dim␟value` for a breakdown, and
`metric␟dim␟value␟scope_dim␟scope_value` for a breakdown inside one tenant or endpoint (␟ is
the ASCII unit separator, which ids never contain in practice). Dimensions: `m` model, `p`
provider, `t` tenant, `e` endpoint, `u` user. Money is in nano-dollars (1e-9 USD).

    hour hash     totals; cost by m, p, t, e; cost by m, e inside t; cost by m, t inside e
    hour users    cost by u, and by u inside t and inside e (read only to explain anomalies)
    day hash      totals; cost/items/tokens by m, p, t, e, u; cost by m, e, u inside t and
                  by m, t, u inside e; savings per lever, and per lever inside t
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from .keys import Keys

if TYPE_CHECKING:
    from .ledger import Saving
    from .models import CallRecord

SEP = "\x1f"
NANO = Decimal(1_000_000_000)

# Opcodes the ledger's append script understands, each with a key index and two arguments.
INCR = "i"  # HINCRBY key field amount
HSET = "s"  # HSET key field value
ZADD = "z"  # ZADD key score member
SETEX = "x"  # SET key value EX seconds


def hour_of(at: float) -> str:
    """The UTC hour bucket of an epoch time, `YYYYMMDDHH`."""
    return time.strftime("%Y%m%d%H", time.gmtime(at))


def field_name(*parts: str) -> str:
    return SEP.join(parts)


@dataclass
class Ops:
    """Redis writes for the append script: extra keys and (opcode, key index, a, b) ops."""

    keys: list[str] = field(default_factory=list)
    ops: list[tuple[str, int, str | int | bytes, str | int | bytes]] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)
    first_key: int = 3  # KEYS[1], KEYS[2] are the id set and the stream

    def key(self, name: str) -> int:
        """The script's KEYS index of `name`, adding it on first use."""
        if name not in self._index:
            self.keys.append(name)
            self._index[name] = self.first_key + len(self.keys) - 1
        return self._index[name]

    def add(self, op: str, key: str, a: str | int | bytes, b: str | int | bytes) -> None:
        self.ops.append((op, self.key(key), a, b))

    def incr(self, key: str, counts: dict[str, int]) -> None:
        for name, amount in counts.items():
            if amount:
                self.add(INCR, key, name, amount)

    def args(self) -> list[str | int | bytes]:
        flat: list[str | int | bytes] = []
        for op, index, a, b in self.ops:
            flat += [op, index, a, b]
        return flat


def _add(counts: dict[str, int], name: str, amount: int) -> None:
    if amount:
        counts[name] = counts.get(name, 0) + amount


def call_rollups(keys: Keys, record: CallRecord, ops: Ops) -> None:
    """Add a call record's counters to its hour, hour-users and day hashes."""
    hour = hour_of(record.at)
    hour_start = int(record.at // 3600 * 3600)
    hour_f: dict[str, int] = {}
    users_f: dict[str, int] = {}
    day_f: dict[str, int] = {}
    usage = record.usage
    priced = record.cost_usd is not None
    cost = 0 if record.cost_usd is None else int(record.cost_usd * NANO)
    totals = {
        "calls": 1,
        "cost": cost,
        "unpriced": 0 if priced else 1,
        "errors": 1 if record.status == "error" else 0,
        "items": record.batch_size if record.status == "ok" else 0,
        "in": usage.input_tokens,
        "out": usage.output_tokens,
        "cached_in": usage.cached_input_tokens,
        "cache_write": usage.cache_write_tokens,
        "latency_ms": record.latency_ms,
    }
    for name, amount in totals.items():
        _add(hour_f, name, amount)
        _add(day_f, name, amount)
    tenant, model, provider = record.tenant, record.model, record.provider
    for dim, value in (("m", model), ("p", provider), ("t", tenant)):
        _add(hour_f, field_name("cost", dim, value), cost)
        _add(day_f, field_name("cost", dim, value), cost)
        _add(day_f, field_name("calls", dim, value), 1)
        _add(day_f, field_name("in", dim, value), usage.input_tokens)
        _add(day_f, field_name("out", dim, value), usage.output_tokens)
    _add(day_f, field_name("items", "m", model), totals["items"])
    _add(day_f, field_name("errors", "m", model), totals["errors"])
    _add(hour_f, field_name("cost", "m", model, "t", tenant), cost)
    _add(day_f, field_name("cost", "m", model, "t", tenant), cost)
    for share in record.shares:
        part = share.cost_nusd or 0
        user, endpoint = share.user_id, share.endpoint
        _add(hour_f, field_name("cost", "e", endpoint), part)
        _add(hour_f, field_name("cost", "e", endpoint, "t", tenant), part)
        _add(hour_f, field_name("cost", "m", model, "e", endpoint), part)
        _add(hour_f, field_name("cost", "t", tenant, "e", endpoint), part)
        _add(users_f, field_name("cost", "u", user), part)
        _add(users_f, field_name("cost", "u", user, "t", tenant), part)
        _add(users_f, field_name("cost", "u", user, "e", endpoint), part)
        for dim, value in (("e", endpoint), ("u", user)):
            _add(day_f, field_name("cost", dim, value), part)
            _add(day_f, field_name("items", dim, value), share.items)
            _add(day_f, field_name("in", dim, value), share.input_tokens)
            _add(day_f, field_name("out", dim, value), share.output_tokens)
        _add(day_f, field_name("cost", "e", endpoint, "t", tenant), part)
        _add(day_f, field_name("cost", "u", user, "t", tenant), part)
        _add(day_f, field_name("cost", "m", model, "e", endpoint), part)
        _add(day_f, field_name("cost", "t", tenant, "e", endpoint), part)
        _add(day_f, field_name("cost", "u", user, "e", endpoint), part)
        if record.status == "ok":
            _add(day_f, field_name("items", "t", tenant), share.items)
    ops.incr(keys.ledger_hour(hour), hour_f)
    ops.incr(keys.ledger_hour_users(hour), users_f)
    ops.incr(keys.ledger_day(hour[:8]), day_f)
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


def merge(into: dict[str, int], rows: Iterable[tuple[bytes | str, bytes | str]]) -> None:
    """Add HGETALL rows into a running total."""
    for raw_name, raw_value in rows:
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        into[name] = into.get(name, 0) + int(raw_value)
