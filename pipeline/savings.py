"""Savings against the naive baseline, and a call's cost by (user, endpoint).

The naive baseline of a task is what it would have cost sent alone, as a plain prompt, on the
model it asked for. Each lever's saving is recorded apart from spend (a `Saving` ledger entry):

- `packing`: for each item answered by a call, its naive cost less everything the item was
  charged (its share of this call and of any earlier call it failed in). Its `tasks` count every
  task answered by a provider call.
- `single_flight`: identical tasks that shared one item: the naive cost of every task but one.
- `routing`: a task that named a model but was answered on another: its naive cost on the
  model it asked for less its naive cost on the model that answered (negative if upgraded).
- `batch_api`: `batch_api_saving` prices the batch discount of one call.
- `cache`: written by the cache stage (see docs/ledger.md).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from .ledger import NANO, Saving, Share, to_nano
from .models import Batch, CallRecord, CostShare, Item, Usage
from .prices import PriceTable


@dataclass(frozen=True)
class Answered:
    """An item a call answered: tasks given the answer, its total charge and naive tokens."""

    item: Item
    tasks: int
    spent_nusd: int | None
    naive_input_tokens: int
    naive_output_tokens: int


def cost_shares(items: Sequence[Item], shares: dict[str, Share]) -> tuple[CostShare, ...]:
    """A call's item shares summed per (user, endpoint), in first-seen order."""
    parts: dict[tuple[str, str], CostShare] = {}
    for item in items:
        share = shares[item.key]
        key = (item.user_id, item.endpoint)
        old = parts.get(key) or CostShare(user_id=item.user_id, endpoint=item.endpoint, cost_nusd=0)
        cost = None if old.cost_nusd is None or share.nusd is None else old.cost_nusd + share.nusd
        parts[key] = CostShare(
            user_id=item.user_id,
            endpoint=item.endpoint,
            items=old.items + 1,
            cost_nusd=cost,
            input_tokens=old.input_tokens + share.input_tokens,
            output_tokens=old.output_tokens + share.output_tokens,
        )
    return tuple(parts.values())


def naive_nusd(prices: PriceTable, model: str, input_tokens: int, output_tokens: int) -> int | None:
    """A task's cost sent alone on `model`, in nano-dollars; None when the price is unknown."""
    cost = prices.price(model, Usage(input_tokens=input_tokens, output_tokens=output_tokens))
    return None if cost is None else to_nano(cost)


def call_savings(
    prices: PriceTable, batch: Batch, answered: Sequence[Answered], *, at: float | None = None
) -> list[Saving]:
    """The `packing`, `single_flight` and `routing` savings of one call, one entry per lever and
    (user, endpoint)."""
    at = time.time() if at is None else at
    totals: dict[tuple[str, str, str], list[int]] = {}  # -> [saved, tasks, baseline]
    for a in answered:
        if a.tasks <= 0:  # already given by an earlier run of this batch
            continue
        naive = naive_nusd(prices, batch.model, a.naive_input_tokens, a.naive_output_tokens)
        who = (a.item.user_id, a.item.endpoint)
        packing = totals.setdefault(("packing", *who), [0, 0, 0])
        packing[1] += a.tasks
        if naive is None or a.spent_nusd is None:
            continue
        packing[0] += naive - a.spent_nusd
        packing[2] += naive
        wanted = a.item.requested_model
        if wanted and wanted != batch.model:
            asked = naive_nusd(prices, wanted, a.naive_input_tokens, a.naive_output_tokens)
            if asked is not None:  # the router answered on another model than the one asked
                routing = totals.setdefault(("routing", *who), [0, 0, 0])
                routing[0] += (asked - naive) * a.tasks
                routing[1] += a.tasks
                routing[2] += asked * a.tasks
        if a.tasks > 1:
            flight = totals.setdefault(("single_flight", *who), [0, 0, 0])
            flight[0] += naive * (a.tasks - 1)
            flight[1] += a.tasks - 1
            flight[2] += naive * (a.tasks - 1)
    return [
        Saving(
            id=f"{batch.id}:{lever}:{_who(user, endpoint)}",
            at=at,
            lever=lever,
            saved_nusd=saved,
            tasks=tasks,
            tenant=batch.tenant,
            user_id=user,
            endpoint=endpoint,
            model=batch.model,
            baseline_nusd=baseline,
            batch_id=batch.id,
        )
        for (lever, user, endpoint), (saved, tasks, baseline) in totals.items()
    ]


def batch_api_saving(prices: PriceTable, record: CallRecord) -> Saving:
    """What going through the provider's batch API saved on one call: its standard price less
    its batch price (0 when the model's price is unknown)."""
    standard = prices.price(record.model, record.usage)
    batch = prices.price(record.model, record.usage, batch_api=True)
    saved = 0 if standard is None or batch is None else to_nano(standard) - to_nano(batch)
    user, endpoint = (
        (record.shares[0].user_id, record.shares[0].endpoint)
        if len(record.shares) == 1
        else ("", "")
    )
    return Saving(
        id=f"{record.id}:batch_api",
        at=record.at,
        lever="batch_api",
        saved_nusd=saved,
        tasks=record.batch_size,
        tenant=record.tenant,
        user_id=user,
        endpoint=endpoint,
        model=record.model,
        baseline_nusd=None if standard is None else to_nano(standard),
        batch_id=record.batch_id,
    )


def _who(user: str, endpoint: str) -> str:
    """A short stable id for a (user, endpoint) pair, whatever characters they hold."""
    return hashlib.sha256(f"{user}\x1f{endpoint}".encode()).hexdigest()[:16]


def usd(nusd: int | None) -> Decimal | None:
    """Nano-dollars as exact USD."""
    return None if nusd is None else Decimal(nusd) / NANO
