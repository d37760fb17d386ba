"""Budgets: the cost circuit breaker that holds across every worker.

The breaker holds per scope (`global`, and `tenant:NAME` for each tenant) with an hourly and a
daily limit, across every worker. Before a provider call its worst-case cost (estimated input
plus the full max_tokens of output, priced) is *reserved* in one Lua step that checks every limit
of every scope and charges them all or none. After the call the reservation is *settled* to the
actual cost (and the month's spend counter moves); on failure it is *released*. Concurrent calls
therefore never take the recorded spend past a limit, whatever their timing.

When a reservation would cross a limit the scope's breaker opens until the end of that window
(or until an operator closes it): no call of the scope starts, and its batches wait (the worker
re-queues them, `BreakerOpen`) or are rejected, by `breaker_policy`; what a batch does then is
the executor's part (`core/rebatch.py`). This module only reserves, settles and trips.

Reservations are keyed by batch id, so a re-run batch never charges twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from redis.asyncio import Redis

from pipeline.budgets.pace import UNREAD, MonthlyBudget, month_bounds
from pipeline.budgets.scripts import RESERVE, SETTLE, SETTLE_PART
from pipeline.config.settings import Settings
from pipeline.costs.money import to_nano, usd
from pipeline.costs.prices import PriceTable
from pipeline.errors import BreakerOpen, BudgetBusy, CallOverLimit, ConfigError
from pipeline.keys import Keys
from pipeline.models import Batch, Usage
from pipeline.providers.base import ChatRequest, ChatResponse
from pipeline.tokens import count_messages

logger = logging.getLogger("batchwise.budget")

Clock = Callable[[], float]
WINDOWS = ("hourly", "daily")
UNSET = -2  # a limit the settings leave to the next rule


@dataclass(frozen=True)
class BreakerState:
    """An open breaker: which scope, until when, and the limit that the call would have crossed."""

    scope: str
    window: str
    until: float
    limit_usd: Decimal
    used_usd: Decimal
    wanted_usd: Decimal


class Budgets:
    """The cost circuit breaker and the monthly budget it feeds, over one Redis."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        keys: Keys,
        prices: PriceTable,
        *,
        clock: Clock = time.time,
        monthly: MonthlyBudget | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keys
        self.prices = prices
        self.clock = clock
        self.monthly = monthly or MonthlyBudget(
            redis,
            keys,
            settings.budget_monthly_usd,
            alert_pcts=settings.budget_alert_pcts,
            webhook_url=settings.budget_webhook_url,
        )
        self._reserve = redis.register_script(RESERVE)
        self._settle = redis.register_script(SETTLE)
        self.settle_part_script = redis.register_script(SETTLE_PART)  # shared.py

    def set_clock(self, clock: Clock) -> None:
        """Use another clock for windows, pace and plan counters (tests, replays)."""
        self.clock = clock

    # -- limits ------------------------------------------------------------------------------

    def _setting(self, scope: str, window: str) -> int:
        """A scope's limit from the settings in nano-dollars; UNSET when it has none."""
        lim = self.settings.breaker_limits.get(scope)
        value = None if lim is None else (lim.hourly_usd if window == "hourly" else lim.daily_usd)
        return UNSET if value is None else to_nano(value)

    async def scopes(self) -> list[str]:
        """Every scope with a limit or a reservation (`tenant` defaults are not a scope)."""
        names = set(self.settings.breaker_limits) | {"global"}
        for key in await self.redis.hkeys(self.keys.budget_config()):
            if key.startswith(b"limit:"):
                names.add(key.decode()[len("limit:") :].rsplit(":", 1)[0])
        names |= {s.decode() for s in await self.redis.smembers(self.keys.breaker_scopes())}
        return sorted(names - {"tenant"})

    async def limits(self, scope: str) -> dict[str, int | None]:
        """A scope's limits in nano-dollars (None: no limit), resolved as `reserve` does."""
        raw = await self.redis.hgetall(self.keys.budget_config())
        config = {k.decode(): v.decode() for k, v in raw.items()}
        out: dict[str, int | None] = {}
        for window in WINDOWS:
            chain = [(f"limit:{scope}:{window}", self._setting(scope, window))]
            if scope.startswith("tenant:"):
                chain.append((f"limit:tenant:{window}", self._setting("tenant", window)))
            out[window] = None
            for field, setting in chain:
                if field in config:
                    out[window] = None if config[field] == "none" else int(config[field])
                    break
                if setting != UNSET:
                    out[window] = setting
                    break
        return out

    async def set_limit(self, scope: str, window: str, limit_usd: Decimal | None) -> None:
        """Operator override of a scope's limit (None: no limit)."""
        if window not in WINDOWS:
            raise ConfigError(f"window must be one of {WINDOWS}, not {window!r}")
        value = "none" if limit_usd is None else str(to_nano(limit_usd))
        await self.redis.hset(self.keys.budget_config(), f"limit:{scope}:{window}", value)

    # -- the breaker -------------------------------------------------------------------------

    def worst_case_nusd(self, model: str, request: ChatRequest) -> int:
        """The most a call can cost: estimated input (plus the margin) and all of max_tokens."""
        estimate = count_messages(request.system, [m.content for m in request.messages])
        tokens_in = math.ceil(estimate * (1 + self.settings.breaker_input_margin))
        usage = Usage(input_tokens=tokens_in, output_tokens=request.max_tokens)
        cost = self.prices.price(model, usage)
        return 0 if cost is None else to_nano(cost)

    async def reserve(self, reservation_id: str, tenant: str, amount_nusd: int) -> int | None:
        """Reserve `amount_nusd` in the global and the tenant scope, or raise `BreakerOpen`
        (`BudgetBusy` when only calls in flight are in the way). Returns the monthly budget as
        read with a new reservation (`UNREAD` when the reservation was there already)."""
        now = self.clock()
        hour, day = int(now // 3600), int(now // 86400)
        keys = [
            self.keys.reservation(reservation_id),
            self.keys.breaker_scopes(),
            self.keys.budget_config(),
        ]
        args: list[str | int | float] = [amount_nusd, now, 2, hour]
        for scope in ("global", f"tenant:{tenant}"):
            keys.append(self.keys.breaker_spend(scope, day))
            args.append(scope)
            args += [self._setting(scope, w) for w in WINDOWS]
            args += [self._setting("tenant", w) for w in WINDOWS]
            args += [(hour + 1) * 3600, (day + 1) * 86400]
        reply = await self._reserve(keys=keys, args=args)
        if int(reply[0]) == 1:
            return self.monthly.resolve(reply[2]) if len(reply) > 2 else UNREAD
        scope, until, window, how, limit = (v.decode() for v in reply[1:])
        until_s = float(until)
        if how == "never":
            raise CallOverLimit(
                f"cost breaker {scope}: this call's worst case of ${usd(amount_nusd)} is more than "
                f"the whole {window} limit of ${usd(limit)}; raise the limit or send fewer or "
                "shorter tasks (lower max_tokens)",
                scope=scope,
                until=until_s,
                retry_after_s=0.0,
            )
        if how == "busy":
            raise BudgetBusy(
                f"cost breaker {scope}: its {window} limit of ${usd(limit)} has room only once "
                "calls in flight settle; trying again shortly",
                scope=scope,
                until=until_s,
                retry_after_s=min(self.settings.breaker_recheck_s, 1.0) * random.uniform(0.5, 1),
            )
        if how == "opened":
            logger.warning(
                "cost breaker %s opened: a call of $%s would cross its %s limit; closed at %s",
                scope,
                usd(amount_nusd),
                window,
                time.strftime("%H:%M:%S", time.gmtime(until_s)),
            )
        wait_s = max(min(until_s - now, self.settings.breaker_recheck_s), 0.05)
        raise BreakerOpen(
            f"cost breaker {scope} is open: its {window} limit of ${usd(limit)} would be crossed; "
            f"calls wait until {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(until_s))} "
            "or an operator closes it (batchwise budget close-breaker)",
            scope=scope,
            until=until_s,
            retry_after_s=wait_s,
        )

    async def settle(
        self, reservation_id: str, tenant: str, actual_nusd: int, budget_nusd: int | None = UNREAD
    ) -> int | None:
        """Turn a held reservation into the actual cost; returns the month's spend, or None when
        it was already settled (a re-run). `budget_nusd`: the monthly budget, when known."""
        month, _, _ = month_bounds(self.clock())
        total = await self._settle(
            keys=[
                self.keys.reservation(reservation_id),
                self.keys.month_spend(month),
                self.keys.month_tenant_spend(month),
            ],
            args=[actual_nusd, tenant, 1],
        )
        if int(total) < 0:
            return None
        await self.monthly.alert(int(total), self.clock(), budget_nusd)
        return int(total)

    async def release(self, reservation_id: str) -> None:
        """Give a held reservation back (the call failed): a retry reserves afresh."""
        await self._settle(keys=[self.keys.reservation(reservation_id), "-", "-"], args=[0, "", 0])

    async def spend(
        self,
        batch: Batch,
        request: ChatRequest,
        call: Callable[[ChatRequest], Awaitable[ChatResponse]],
        *,
        call_id: str | None = None,
        worst_nusd: int | None = None,
    ) -> ChatResponse:
        """Reserve the call's worst case (`worst_nusd` when the caller has it already), make it,
        settle to its actual cost (release on error). The reservation is the call's (`call_id`,
        by default the batch id)."""
        reservation = call_id or batch.id
        if worst_nusd is None:
            worst_nusd = self.worst_case_nusd(batch.model, request)
        budget = await self.reserve(reservation, batch.tenant, worst_nusd)
        try:
            response = await call(request)
        except asyncio.CancelledError:  # the call may have been billed: its hold stays counted
            raise
        except BaseException:
            await self.release(reservation)
            raise
        cost = self.prices.price(response.model, response.usage)  # a fallback may have answered
        try:
            actual = 0 if cost is None else to_nano(cost)
            await self.settle(reservation, batch.tenant, actual, budget)
        except Exception:  # never lose a paid answer over bookkeeping; the hold stays counted
            logger.exception("batch %s: settling its budget reservation failed", batch.id)
        return response

    async def open_breakers(self) -> list[BreakerState]:
        """Every breaker that is open now."""
        now = self.clock()
        states = []
        raw = await self.redis.hgetall(self.keys.budget_config())
        for field, value in sorted(raw.items()):
            if not field.startswith(b"open:"):
                continue
            until, window, limit, used, wanted, _ = value.decode().split("|")
            if float(until) > now:
                scope = field.decode().removeprefix("open:")
                states.append(
                    BreakerState(scope, window, float(until), usd(limit), usd(used), usd(wanted))
                )
        return states

    async def close_breaker(self, scope: str) -> bool:
        """Operator command: close a scope's breaker now. Calls resume while they fit under the
        limits; one that still does not fit opens it again. True if it was open."""
        field = f"open:{scope}"
        raw = await self.redis.hget(self.keys.budget_config(), field)
        await self.redis.hdel(self.keys.budget_config(), field)
        was_open = raw is not None and float(raw.decode().split("|", 1)[0]) > self.clock()
        if was_open:
            logger.warning("cost breaker %s closed by the operator", scope)
        return was_open

    async def window_spend(self, scope: str) -> dict[str, Decimal]:
        """A scope's spend in the current hour and day: `hourly` and `daily` count reserved plus
        settled spend, `hourly_settled` and `daily_settled` only what calls actually cost."""
        now = self.clock()
        hour, day = int(now // 3600), int(now // 86400)
        raw = await self.redis.hgetall(self.keys.breaker_spend(scope, day))
        spend = {k.decode(): int(v) for k, v in raw.items()}
        return {
            "hourly": usd(spend.get(f"h:{hour}", 0)),
            "daily": usd(sum(v for k, v in spend.items() if k.startswith("h:"))),
            "hourly_settled": usd(spend.get(f"s:{hour}", 0)),
            "daily_settled": usd(sum(v for k, v in spend.items() if k.startswith("s:"))),
        }
