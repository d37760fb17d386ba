"""A provider call's ledger record, with its cost and tokens split over the batch's items, and
the `CallBook` that writes a batch's calls, failed calls and savings to the ledger.

The split is exact (`split_int`): the items' shares add up to the call's tokens and
nano-dollars. Input is shared by the prompt's common part (evenly) plus each item's own
tokens; output by the size of each item's answer. The recorded cost is exactly what was
attributed, so the ledger and the per-task costs never disagree by a rounding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from pipeline.config.settings import Settings
from pipeline.costs.ledger import Ledger, Share, error_record, split_int
from pipeline.costs.money import to_nano, usd
from pipeline.costs.prices import PriceTable
from pipeline.costs.savings import Answered, batch_api_saving, call_savings, cost_shares
from pipeline.errors import ProviderError
from pipeline.models import Batch, CallRecord, Item
from pipeline.packing.wire import item_ids
from pipeline.providers.base import ChatResponse
from pipeline.tokens import count_tokens


def call_record(
    prices: PriceTable,
    batch: Batch,
    items: Sequence[Item],
    response: ChatResponse,
    outputs: dict[str, Any],
    *,
    batch_api: bool = False,
    attempt: int = 1,
) -> tuple[CallRecord, dict[str, Share]]:
    """The ledger record of the call and each item's share of it (by item key)."""
    usage = response.usage
    n = len(items)
    own = [i.input_tokens for i in items]
    shared = max(usage.input_tokens - sum(own), 0)
    in_weights = [shared / n + o for o in own]
    out_weights = [
        count_tokens(orjson.dumps(outputs[i]).decode()) if i in outputs else 0 for i in item_ids(n)
    ]
    # a fallback may have answered: price the model that did
    cost = prices.price(response.model, usage, batch_api=batch_api)
    in_tokens = split_int(usage.input_tokens, in_weights)
    out_tokens = split_int(usage.output_tokens, out_weights)
    if cost is None:
        nusd: list[int | None] = [None] * n
    else:
        total = to_nano(cost)
        in_cost = prices.price(
            response.model, usage.model_copy(update={"output_tokens": 0}), batch_api=batch_api
        )
        in_total = min(total, to_nano(in_cost or cost))
        nusd = [
            a + b
            for a, b in zip(
                split_int(in_total, in_weights),
                split_int(total - in_total, out_weights),
                strict=True,
            )
        ]
        cost = usd(total)
    shares = {item.key: Share(nusd[i], in_tokens[i], out_tokens[i]) for i, item in enumerate(items)}
    record = CallRecord(
        id=batch.id,
        at=time.time(),
        batch_id=batch.id,
        provider=response.provider,
        model=response.model,
        simulated=response.simulated,
        batch_api=batch_api,
        status="ok",
        usage=usage,
        cost_usd=cost,
        latency_ms=response.latency_ms,
        batch_size=n,
        tenant=batch.tenant,
        attribution={k: str(s.nusd) for k, s in shares.items()},
        attempt=attempt,
        shares=cost_shares(items, shares),
    )
    return record, shares


class CallBook:
    """A batch's calls in the ledger: each call's record with its cost split over the items, a
    failed call's record, and the savings of the answers."""

    def __init__(self, prices: PriceTable, ledger: Ledger, settings: Settings) -> None:
        self.prices = prices
        self.ledger = ledger
        self.settings = settings

    async def record(
        self,
        batch: Batch,
        items: Sequence[Item],
        response: ChatResponse,
        outputs: dict[str, Any],
        *,
        batch_api: bool = False,
        attempt: int = 1,
    ) -> None:
        """The ledger record of the call, with its cost split over the items exactly."""
        record, shares = call_record(
            self.prices, batch, items, response, outputs, batch_api=batch_api, attempt=attempt
        )
        if await self.ledger.record(record, response.to_json(), shares) and batch_api:
            await self.ledger.record_saving(batch_api_saving(self.prices, record))

    async def record_error(self, batch: Batch, exc: ProviderError, attempt: int) -> None:
        """A failed call in the ledger: nothing billed, the error and which try it was."""
        await self.ledger.record_error(error_record(batch, exc, attempt))

    async def record_savings(self, batch: Batch, answered: Sequence[Answered]) -> None:
        """The `packing`, `single_flight` and `routing` savings of `batch`'s answers."""
        baseline = self.settings.baseline_model
        for saving in call_savings(self.prices, batch, answered, baseline_model=baseline):
            await self.ledger.record_saving(saving)
