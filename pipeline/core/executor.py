"""Running one packed batch: call, record, split, answer, and retry what failed in smaller batches.

`BatchExecutor.run` is idempotent. The provider's answer is stored with the ledger record before
anything is split, so a re-run (worker killed, job retried) never calls or charges twice; results
are written once; child batches have deterministic ids. Items that got no valid output are retried
in halves, then alone, and finally end `failed` with the reason (`rebatch.py`); the call's cost is
split over the items in the ledger record (`attribution.py`, `CallBook`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.budgets.breaker import Budgets
from pipeline.budgets.shared import Hold, spend_from, take_hold
from pipeline.cache import ResponseCache
from pipeline.cache.grey import GreyZone
from pipeline.config.settings import Settings
from pipeline.core.alone import HandOut, run_alone, run_children
from pipeline.core.attribution import CallBook
from pipeline.core.batches import BatchStore
from pipeline.core.inflight import InFlight
from pipeline.core.rebatch import Rebatcher
from pipeline.core.runs import RunStore
from pipeline.core.splitter import enforce_schema, matches_schema_type, parse_single, split
from pipeline.costs import metrics
from pipeline.costs.ledger import Ledger
from pipeline.costs.money import to_nano
from pipeline.costs.paid import PaidCaller
from pipeline.costs.prices import PriceTable
from pipeline.costs.savings import (
    Answered,
    Calibration,
)
from pipeline.errors import (
    BreakerOpen,
    ContextTooLong,
    PermanentError,
    ProviderError,
    TransientError,
)
from pipeline.keys import Keys
from pipeline.models import Batch, Item
from pipeline.packing.audit import PackingAudit
from pipeline.packing.gain import observe_outputs
from pipeline.packing.queue import GroupMetas
from pipeline.packing.request import build_request, naive_input_tokens
from pipeline.packing.wire import item_ids
from pipeline.providers.base import ChatRequest, ChatResponse
from pipeline.providers.chain import ProviderChain
from pipeline.routing.cascade import Cascade
from pipeline.routing.router import Router
from pipeline.tokens import count_tokens

logger = logging.getLogger("batchwise.executor")


class BatchExecutor(PaidCaller):
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        keys: Keys,
        chain: ProviderChain,
        prices: PriceTable,
        runs: RunStore,
        ledger: Ledger,
        budgets: Budgets | None = None,
    ) -> None:
        super().__init__(redis, settings, keys, chain, prices, ledger)
        self.runs = runs
        self.budgets = budgets or Budgets(redis, settings, keys, prices)
        self.audit = PackingAudit(redis, settings, keys, chain, prices, ledger)
        self.cascade = Cascade(redis, settings, keys, Router(settings, chain, prices), runs)
        self.cache: ResponseCache | None = None  # set by Pipeline; stores answers on the way out
        self.grey: GreyZone | None = None  # set by Pipeline when grey-zone hits are verified
        self.inflight = InFlight(redis, keys, ledger, self.budgets)
        self.metas = GroupMetas(redis, keys)
        self.store = BatchStore(redis, keys, self.metas)
        self.rebatch = Rebatcher(self.store, runs, settings)
        self.book = CallBook(prices, ledger, settings)

    async def load(self, batch_id: str) -> tuple[Batch, list[Item]] | None:
        loaded = await self.store.load(batch_id)
        return None if loaded is None else (loaded[0], loaded[1])

    def request_for(self, batch: Batch, items: Sequence[Item]) -> tuple[ChatRequest, bool]:
        """The provider request for a batch, and whether it is packed."""
        return build_request(batch, items, cache_min_tokens=self.settings.prompt_cache_min_tokens)

    async def run(
        self,
        batch_id: str,
        *,
        last_try: bool = False,
        answer: ChatResponse | None = None,
        batch_api: bool = False,
        attempt: int = 1,
    ) -> list[str]:
        """Run a batch; return the ids of child batches the caller must enqueue.

        `answer` is the provider's answer when it came another way (a provider batch API,
        `batch_api=True` prices it so); the batch is then split and recorded without a call.
        Raises `TransientError` when the provider is unavailable and this is not the last try.
        """
        loaded = await self.store.load(batch_id)
        if loaded is None:
            return []
        batch, items, stored = loaded
        if stored is None and answer is None and self.grey is not None:
            grey = await self.grey.settle(batch, items)
            if grey.parts:  # grey-zone items verified beside the others' call
                retries = await run_children(self, grey.parts, last_try=last_try, attempt=attempt)
                await self.store.close(batch)
                return retries
            items = grey.items
        if not items:
            await self.store.close(batch)
            return []
        if batch.alone and answer is None:  # even one item left: its calls are the `.s` ones
            retries = await run_alone(self, batch, items, last_try=last_try, attempt=attempt)
            await self.store.close(batch)
            return retries
        return await self.execute(
            batch,
            items,
            stored,
            last_try=last_try,
            answer=answer,
            batch_api=batch_api,
            attempt=attempt,
        )

    async def execute(
        self,
        batch: Batch,
        items: Sequence[Item],
        stored: bytes | None,
        *,
        last_try: bool = False,
        answer: ChatResponse | None = None,
        batch_api: bool = False,
        attempt: int = 1,
        hand_out: HandOut | None = None,
        hold: Hold | None = None,
    ) -> list[str]:
        """`run` for a loaded batch, `stored` its answer kept from an earlier run, if any;
        `hand_out` writes its answers (by default at once, `hand_out`, with the savings; given
        one, the caller writes the savings); `hold` holds its call's worst case already."""
        request, packed = self.request_for(batch, items)
        call_id: str | None = None
        if stored is not None:
            response = ChatResponse.from_json(stored)
        elif answer is not None:
            response = answer
        else:
            call_id = await self.inflight.prepare(batch, items)
            called = await self._call(batch, items, request, call_id, attempt, last_try, hold)
            if not isinstance(called, ChatResponse):
                return called
            response = called

        ids = item_ids(len(items))
        try:
            outputs, failures = self._parse(batch, response, ids, packed)
        except Exception:  # the call is paid for even when its answer cannot be processed
            if stored is None:
                await self.book.record(
                    batch, items, response, {}, batch_api=batch_api, attempt=attempt
                )
                await self._settled(batch, items, call_id, response, batch_api)
            raise
        if stored is None:
            await self.book.record(
                batch, items, response, outputs, batch_api=batch_api, attempt=attempt
            )
            await self._settled(batch, items, call_id, response, batch_api)

        retry: list[str] = []
        settled: list[tuple[Item, dict[str, Any]]] = []
        calibration = Calibration.of(request, response)
        for item_id, item in zip(ids, items, strict=True):
            if item_id not in outputs:
                retry.append(item.key)
            elif final := await self._outcome(
                batch, item, response, outputs[item_id], len(items), calibration
            ):
                settled.append((item, final))
        answered = await (hand_out or self.hand_out)(settled)
        if self.settings.audit_share > 0:  # what the packer expects the audit's re-runs to cost
            sizes = [a.naive_output_tokens for a in answered]
            await observe_outputs(self.redis, self.keys, items[0].task_type, batch.model, sizes)
        if hand_out is None:  # an alone batch writes the savings of its calls together
            await self.book.record_savings(batch, answered)
        metrics.observe_batch(batch.model)
        children: list[str] = []
        if retry:
            reason = "; ".join(sorted({failures[i] for i in ids if i in failures}))
            children = await self.rebatch.retry(batch, retry, reason)
        await self.store.close(batch)
        return children

    async def _call(
        self,
        batch: Batch,
        items: Sequence[Item],
        request: ChatRequest,
        call_id: str,
        attempt: int,
        last_try: bool,
        hold: Hold | None,
    ) -> ChatResponse | list[str]:
        """The batch's provider call under its budget (its own reservation, or its part of
        `hold`) and its intent; on failure, what the batch does instead (the child batches to
        enqueue), or the error raised for a retry."""
        worst = self.budgets.worst_case_nusd(batch.model, request)
        steps = self.chain.plan(batch.model)
        provider = steps[0][1].name if steps else "none"

        async def tracked(req: ChatRequest) -> ChatResponse:
            shared = "" if hold is None else hold.id
            await self.inflight.begin(batch, call_id, attempt, provider, worst, shared)
            return await self.chain.complete(req)

        try:
            if hold is not None:
                return await spend_from(
                    self.budgets, hold, batch, request, tracked, call_id=call_id, worst_nusd=worst
                )
            return await self.budgets.spend(
                batch, request, tracked, call_id=call_id, worst_nusd=worst
            )
        except BreakerOpen as exc:
            return await self.rebatch.held(batch, items, exc, last_try=last_try)
        except ProviderError as exc:
            await self.book.record_error(batch, exc, attempt)
            await self.inflight.finish(batch, items, call_id, None)
            if isinstance(exc, ContextTooLong):
                if len(items) > 1:
                    return await self.rebatch.retry(batch, [i.key for i in items], str(exc))
                return await self.rebatch.fail(batch, items, "context_length", str(exc))
            if isinstance(exc, TransientError):
                if not last_try:
                    raise
                return await self.rebatch.fail(batch, items, "provider_unavailable", str(exc))
            if isinstance(exc, PermanentError):
                return await self.rebatch.fail(batch, items, "provider_refused", str(exc))
            raise

    def _parse(
        self, batch: Batch, response: ChatResponse, ids: list[str], packed: bool
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Each item's output by id, and the reason of each item without a valid one."""
        if packed:
            outcome = enforce_schema(
                split(response.text, ids, truncated=response.truncated), batch.response_schema
            )
            if outcome.unknown_ids:
                logger.warning("batch %s: ignored unknown ids %s", batch.id, outcome.unknown_ids)
            return outcome.outputs, outcome.failures
        ok, value, reason = parse_single(response.text, want_json=batch.response_schema is not None)
        if ok and batch.response_schema and not matches_schema_type(value, batch.response_schema):
            ok, reason = False, "output is not of the schema's type"
        return ({"1": value}, {}) if ok else ({}, {"1": reason})

    async def _settled(
        self,
        batch: Batch,
        items: Sequence[Item],
        call_id: str | None,
        response: ChatResponse,
        batch_api: bool,
    ) -> None:
        """The call is in the ledger: drop its intent, reconcile the batch's lost calls."""
        if call_id is None:
            return
        cost = self.prices.price(response.model, response.usage, batch_api=batch_api)
        await self.inflight.finish(batch, items, call_id, 0 if cost is None else to_nano(cost))

    async def fail_batch(self, batch_id: str, code: str, message: str) -> None:
        """End every item of a batch as failed (the worker's last resort)."""
        loaded = await self.load(batch_id)
        if loaded is not None:
            await self.rebatch.fail(loaded[0], loaded[1], code, message)

    async def _outcome(
        self,
        batch: Batch,
        item: Item,
        response: ChatResponse,
        output: Any,
        size: int,
        calibration: Calibration,
    ) -> dict[str, Any] | None:
        """The item's answer, after the audit and the cascade; None when the cascade took it
        (escalated to the next tier's model, or failed evaluation at the top)."""
        output = await self.audit.check(batch, item, output, size)
        if await self.cascade.settle(batch, item, output, size):
            return None
        naive_in, naive_out = calibration.naive(
            naive_input_tokens(batch.system, item),
            count_tokens(output if isinstance(output, str) else orjson.dumps(output).decode()),
        )
        return {
            "status": "ok",
            "output": output,
            "model": response.model,
            "provider": response.provider,
            "cache": "miss",
            "batch_id": batch.id,
            "batch_size": size,
            "baseline_model": item.requested_model or self.settings.baseline_model,
            "naive_input_tokens": naive_in,
            "naive_output_tokens": naive_out,
        }

    async def share_hold(
        self, batch: Batch, calls: Sequence[tuple[Batch, Item]], attempt: int
    ) -> Hold | None:
        """One budget hold for the calls of an alone batch's items, this try of its job
        (`shared.py`); None when there is no room for them all at once."""
        if len(calls) < 2:
            return None
        worst = sum(
            self.budgets.worst_case_nusd(one.model, self.request_for(one, [item])[0])
            for one, item in calls
        )
        hold_id = f"{batch.id}:alone:{attempt}"
        return await take_hold(self.budgets, hold_id, batch.tenant, worst)

    async def hand_out(self, settled: Sequence[tuple[Item, dict[str, Any]]]) -> list[Answered]:
        """Cost, cache and hand out a batch's answers, a round trip for each step, not per item."""
        if not settled:
            return []
        for (_, outcome), spent in zip(
            settled, await self.runs.spent([item.key for item, _ in settled]), strict=True
        ):
            outcome.update(spent)
        pairs = [(item.key, outcome) for item, outcome in settled]
        if self.cache is not None:  # before the tasks see them: a run that follows finds them
            await self.cache.store_many(pairs)
        counts = await self.runs.finish_items(pairs)
        return [
            Answered(
                item,
                tasks,
                outcome["cost_nusd"],
                outcome["naive_input_tokens"],
                outcome["naive_output_tokens"],
            )
            for (item, outcome), tasks in zip(settled, counts, strict=True)
        ]
