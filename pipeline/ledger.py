"""The cost ledger: one immutable record per provider call, written exactly once.

A call's record, the stored provider answer and the per-item cost attribution are written in one
atomic step keyed by the call id, so a batch that runs again (worker killed, job retried) reuses
the stored answer and adds nothing: no second record, no second charge on any item.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from redis.asyncio import Redis

from .keys import Keys
from .models import CallRecord
from .prices import allocate

_RECORD = """
-- KEYS: ledger ids, ledger stream, response;  then one item-cost key per item
-- ARGV: record id, record json, response json, ttl s;  then (nusd|'x', in, out) per item
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'r', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
for i = 4, #KEYS do
  local base = 4 + (i - 4) * 3
  if ARGV[base + 1] == 'x' then
    redis.call('HSET', KEYS[i], 'unknown', 1)
  else
    redis.call('HINCRBY', KEYS[i], 'nusd', ARGV[base + 1])
  end
  redis.call('HINCRBY', KEYS[i], 'in', ARGV[base + 2])
  redis.call('HINCRBY', KEYS[i], 'out', ARGV[base + 3])
end
return 1
"""

NANO = Decimal(1_000_000_000)


@dataclass(frozen=True)
class Share:
    """One item's part of a call: cost in nano-dollars (None when the price is unknown), tokens."""

    nusd: int | None
    input_tokens: int
    output_tokens: int


def to_nano(cost: Decimal) -> int:
    return int((cost * NANO).to_integral_value(rounding=ROUND_HALF_UP))


def split_int(total: int, weights: Sequence[float]) -> list[int]:
    """Integer parts of `total` in proportion to `weights`, adding up to `total` exactly."""
    return [int(p) for p in allocate(Decimal(total), list(weights), quantum=Decimal(1))]


class Ledger:
    """Writes call records with their attribution; reads them back in order."""

    def __init__(self, redis: Redis, keys: Keys, *, response_ttl_s: int = 86400) -> None:
        self.redis = redis
        self.keys = keys
        self.response_ttl_s = response_ttl_s
        self._record = redis.register_script(_RECORD)

    async def record(
        self, record: CallRecord, response_json: bytes, shares: dict[str, Share]
    ) -> bool:
        """Write the record once; False when this call was already recorded."""
        k = self.keys
        keys = [k.ledger_ids(), k.ledger(), k.batch_response(record.batch_id)]
        args: list[str | int | bytes] = [
            record.id,
            record.model_dump_json(),
            response_json,
            self.response_ttl_s,
        ]
        for item_key, part in shares.items():
            keys.append(k.item_cost(item_key))
            args += ["x" if part.nusd is None else part.nusd, part.input_tokens, part.output_tokens]
        return bool(await self._record(keys=keys, args=args))

    async def records(self, *, chunk: int = 5000) -> AsyncIterator[CallRecord]:
        """Every call record, oldest first."""
        last = "-"
        while True:
            rows = await self.redis.xrange(self.keys.ledger(), min=last, count=chunk)
            if last != "-":
                rows = rows[1:]
            if not rows:
                return
            for _entry_id, fields in rows:
                yield CallRecord.model_validate_json(fields[b"r"])
            last = rows[-1][0].decode()
