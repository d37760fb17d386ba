"""A budget hold shared by several calls: the calls of an alone batch (one per item) reserve
their worst cases together, in one step, and each settles its own part when it ends.

The hold is an ordinary reservation (`Budgets.reserve`) for the sum of the calls' worst cases,
so the breaker sees all of them at once; when they do not fit at once, each call reserves its
own (`take_hold` returns None). A call's part is settled once, keyed by its call id: to its
actual cost when it answered, to nothing when it failed, and to its worst case when its worker
died (`inflight.py` finds it). A call cancelled mid-flight leaves its part held, as a call's own
reservation would be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.budgets.breaker import Budgets
from pipeline.budgets.pace import UNREAD, month_bounds
from pipeline.costs.money import to_nano
from pipeline.errors import BreakerOpen
from pipeline.models import Batch
from pipeline.providers.base import ChatRequest, ChatResponse

logger = logging.getLogger("batchwise.budget")


@dataclass(frozen=True)
class Hold:
    """A reservation shared by several calls; `budget_nusd` is the monthly budget as read with
    it (for the settles' alerts)."""

    id: str
    tenant: str
    budget_nusd: int | None = UNREAD


async def take_hold(budgets: Budgets, hold_id: str, tenant: str, amount_nusd: int) -> Hold | None:
    """Reserve `amount_nusd` for several calls at once; None when the breaker has no room for
    them all at once, or when the hold was taken before (the same try running again: its parts
    are other calls'), and each call then reserves its own."""
    try:
        budget = await budgets.reserve(hold_id, tenant, amount_nusd)
    except BreakerOpen:
        return None
    return None if budget == UNREAD else Hold(hold_id, tenant, budget)


async def settle_part(
    budgets: Budgets, hold: Hold, call_id: str, part_nusd: int, actual_nusd: int
) -> int | None:
    """Settle one call's part of `hold` to `actual_nusd` (0: it failed, nothing was spent);
    returns the month's spend, or None when nothing was added."""
    month, _, _ = month_bounds(budgets.clock())
    keys = [
        budgets.keys.reservation(hold.id),
        budgets.keys.month_spend(month),
        budgets.keys.month_tenant_spend(month),
    ]
    total = int(
        await budgets.settle_part_script(
            keys=keys, args=[call_id, part_nusd, actual_nusd, hold.tenant]
        )
    )
    if total < 0:
        return None
    await budgets.monthly.alert(total, budgets.clock(), hold.budget_nusd)
    return total


async def spend_from(
    budgets: Budgets,
    hold: Hold,
    batch: Batch,
    request: ChatRequest,
    call: Callable[[ChatRequest], Awaitable[ChatResponse]],
    *,
    call_id: str,
    worst_nusd: int,
) -> ChatResponse:
    """`Budgets.spend` for a call whose worst case `hold` holds already."""
    try:
        response = await call(request)
    except asyncio.CancelledError:  # the call may have been billed: its part stays held
        raise
    except BaseException:
        await settle_part(budgets, hold, call_id, worst_nusd, 0)
        raise
    cost = budgets.prices.price(response.model, response.usage)  # a fallback may have answered
    try:
        actual = 0 if cost is None else to_nano(cost)
        await settle_part(budgets, hold, call_id, worst_nusd, actual)
    except Exception:  # never lose a paid answer over bookkeeping; the part stays held
        logger.exception("batch %s: settling its part of hold %s failed", batch.id, hold.id)
    return response
