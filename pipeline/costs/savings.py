"""Savings against the baseline, and a call's cost by (user, endpoint).

The baseline of a task is what it would have cost sent alone, as a plain prompt, on the model it
asked for, or on `Settings.baseline_model` (what a team sends everything to without the tool)
when it named none. Each lever's saving is recorded apart from spend (a `Saving` ledger entry),
so spend plus every saving is the baseline, and spend plus every saving but routing is the same
models one by one:

- `packing`: for each item answered by a call, its naive cost on the model that answered less
  everything the item was charged (its share of this call and of any earlier call it failed in).
  Its `tasks` count every task answered by a provider call.
- `single_flight`: identical tasks that shared one item: the naive cost of every task but one.
- `routing`: a task answered on another model than its baseline model: its naive cost on the
  baseline model less its naive cost on the model that answered (negative if upgraded).
- `batch_api`: `batch_api_saving` prices the batch discount of one call.
- `cache`, `semantic_cache`: a task answered from the cache costs nothing: its naive cost on the
  model that answered it first (`cache_savings`, written at submit time with the hit).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.costs.ledger import Share
from pipeline.costs.money import to_nano
from pipeline.costs.prices import PriceTable
from pipeline.models import Batch, CallRecord, CostShare, Item, Saving, Usage
from pipeline.providers.base import ChatRequest, ChatResponse
from pipeline.tokens import count_messages, count_tokens


@dataclass(frozen=True)
class Answered:
    """An item a call answered: tasks given the answer, its total charge and naive tokens."""

    item: Item
    tasks: int
    spent_nusd: int | None
    naive_input_tokens: int
    naive_output_tokens: int


@dataclass(frozen=True)
class Calibration:
    """One call's token counts by the provider over the local tokenizer's (o200k).

    A task's naive (alone) tokens are counted locally and scaled by these, so the baseline speaks
    the provider's tokenizer: a task sent alone has exactly its call's counts as its baseline and
    saves nothing by packing, whatever the provider counts.
    """

    input: float = 1.0
    output: float = 1.0

    @classmethod
    def of(cls, request: ChatRequest, response: ChatResponse) -> Calibration:
        local_in = count_messages(request.system, [m.content for m in request.messages])
        local_out = count_tokens(response.text)
        used = response.usage
        return cls(
            used.input_tokens / local_in if used.input_tokens > 0 and local_in > 0 else 1.0,
            used.output_tokens / local_out if used.output_tokens > 0 and local_out > 0 else 1.0,
        )

    def naive(self, input_tokens: int, output_tokens: int) -> tuple[int, int]:
        """Locally counted (input, output) tokens in the provider's count."""
        return round(input_tokens * self.input), round(output_tokens * self.output)


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
    prices: PriceTable,
    batch: Batch,
    answered: Sequence[Answered],
    *,
    baseline_model: str = "",
    at: float | None = None,
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
        wanted = a.item.requested_model or baseline_model
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


@dataclass(frozen=True)
class Hit:
    """A task answered from the cache: who asked, its baseline model and the cached answer's
    model and naive tokens."""

    task_id: str
    kind: str  # "exact" or "semantic"
    tenant: str
    user_id: str
    endpoint: str
    baseline_model: str
    model: str
    naive_input_tokens: int
    naive_output_tokens: int


def cache_savings(
    prices: PriceTable, run_id: str, hits: Sequence[Hit], *, at: float | None = None
) -> list[Saving]:
    """The savings of cache hits answered together: their naive cost on the model that answered
    (`cache` or `semantic_cache`), and `routing` where that model is not their baseline model;
    one entry per lever, tenant, model and (user, endpoint). Ids derive from the run and the
    hits' task ids, so recording the same hits twice adds nothing."""
    at = time.time() if at is None else at
    totals: dict[tuple[str, str, str, str, str], list[int]] = {}  # -> [saved, tasks, baseline]
    for hit in hits:
        naive = naive_nusd(prices, hit.model, hit.naive_input_tokens, hit.naive_output_tokens)
        lever = "semantic_cache" if hit.kind == "semantic" else "cache"
        who = (hit.tenant, hit.model, hit.user_id, hit.endpoint)
        entry = totals.setdefault((lever, *who), [0, 0, 0])
        entry[1] += 1
        if naive is None:
            continue
        entry[0] += naive
        entry[2] += naive
        if hit.baseline_model and hit.baseline_model != hit.model:
            asked = naive_nusd(
                prices, hit.baseline_model, hit.naive_input_tokens, hit.naive_output_tokens
            )
            if asked is not None:
                routing = totals.setdefault(("routing", *who), [0, 0, 0])
                routing[0] += asked - naive
                routing[1] += 1
                routing[2] += asked
    tag = hashlib.sha256("\x1f".join(sorted(h.task_id for h in hits)).encode()).hexdigest()[:16]
    return [
        Saving(
            id=f"{run_id}:{tag}:{lever}:{_who(tenant, model, user, endpoint)}",
            at=at,
            lever=lever,
            saved_nusd=saved,
            tasks=tasks,
            tenant=tenant,
            user_id=user,
            endpoint=endpoint,
            model=model,
            baseline_nusd=baseline,
        )
        for (lever, tenant, model, user, endpoint), (saved, tasks, baseline) in totals.items()
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


def _who(*parts: str) -> str:
    """A short stable id for these names (a user and endpoint...), whatever characters they hold."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
