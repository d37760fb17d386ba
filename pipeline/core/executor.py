"""Running one packed batch: call, record, split, answer, and retry what failed in smaller batches.

`BatchExecutor.run` is idempotent. The provider's answer is stored with the ledger record before
anything is split, so a re-run (worker killed, job retried) never calls or charges twice; results
are written once; child batches have deterministic ids. Items that got no valid output are retried
in halves, then alone, and finally end `failed` with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.budgets.breaker import Budgets
from pipeline.budgets.shared import Hold, spend_from, take_hold
from pipeline.cache import ResponseCache
from pipeline.cache.grey import GreyZone
from pipeline.config.settings import Settings
from pipeline.core.alone import HandOut, run_alone, run_children
from pipeline.core.inflight import InFlight
from pipeline.core.runs import RunStore
from pipeline.core.splitter import enforce_schema, matches_schema_type, parse_single, split
from pipeline.costs import metrics
from pipeline.costs.ledger import NANO, Ledger, Share, error_record, split_int, to_nano
from pipeline.costs.prices import PriceTable
from pipeline.costs.savings import (
    Answered,
    Calibration,
    batch_api_saving,
    call_savings,
    cost_shares,
)
from pipeline.errors import (
    BreakerOpen,
    ContextTooLong,
    PermanentError,
    ProviderError,
    TransientError,
)
from pipeline.keys import Keys
from pipeline.models import Batch, CallRecord, Item, TTLClass
from pipeline.packing.audit import PackingAudit
from pipeline.packing.gain import observe_outputs
from pipeline.packing.queue import GroupMetas, item_json
from pipeline.packing.request import build_request, naive_input_tokens
from pipeline.packing.wire import item_ids
from pipeline.providers.base import ChatRequest, ChatResponse
from pipeline.providers.chain import ProviderChain
from pipeline.routing.cascade import Cascade
from pipeline.routing.router import Router
from pipeline.tokens import count_tokens

logger = logging.getLogger("batchwise.executor")


class BatchExecutor:
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
        self.redis = redis
        self.settings = settings
        self.keys = keys
        self.chain = chain
        self.prices = prices
        self.runs = runs
        self.ledger = ledger
        self.budgets = budgets or Budgets(redis, settings, keys, prices, runs)
        self.audit = PackingAudit(redis, settings, keys, chain, prices, ledger)
        self.cascade = Cascade(redis, settings, keys, Router(settings, chain, prices), runs)
        self.cache: ResponseCache | None = None  # set by Pipeline; stores answers on the way out
        self.grey: GreyZone | None = None  # set by Pipeline when grey-zone hits are verified
        self.inflight = InFlight(redis, keys, ledger, self.budgets)
        self.metas = GroupMetas(redis, keys)

    async def load(self, batch_id: str) -> tuple[Batch, list[Item]] | None:
        loaded = await self._load(batch_id)
        return None if loaded is None else (loaded[0], loaded[1])

    async def _load(self, batch_id: str) -> tuple[Batch, list[Item], bytes | None] | None:
        """The open batch, its items and its stored answer, in two round trips (three when
        this process first meets the group)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.batch(batch_id))
            pipe.get(k.batch_response(batch_id))
            fields, stored = await pipe.execute()
        raw = {key.decode(): v.decode() for key, v in fields.items()}
        if not raw or raw.get("status") == "done":
            return None
        item_keys = tuple(raw["items"].split(","))
        meta = await self.metas.get(raw["group"])
        if meta is None:
            raise KeyError(f"batch {batch_id}: unknown group {raw['group']}")
        blobs = await self.redis.mget([k.item(key) for key in item_keys])
        batch = Batch(
            id=batch_id,
            group=raw["group"],
            tenant=meta["tenant"],
            model=meta["model"],
            system=meta["system"],
            temperature=meta["temperature"],
            response_schema=meta["response_schema"],
            ttl_class=TTLClass(meta["ttl_class"]),
            item_keys=item_keys,
            alone_attempts=int(raw.get("alone_attempts", 0)),
            created_at=int(raw.get("created_ms", 0)) / 1000,
            alone=raw.get("alone") == "1",
        )
        items = [Item.model_validate_json(item_json(b)) for b in blobs if b is not None]
        return batch, items, stored

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
        loaded = await self._load(batch_id)
        if loaded is None:
            return []
        batch, items, stored = loaded
        if stored is None and answer is None and self.grey is not None:
            grey = await self.grey.settle(batch, items)
            if grey.parts:  # grey-zone items verified beside the others' call
                retries = await run_children(self, grey.parts, last_try=last_try, attempt=attempt)
                await self._close(batch)
                return retries
            items = grey.items
        if not items:
            await self._close(batch)
            return []
        if batch.alone and answer is None:  # even one item left: its calls are the `.s` ones
            retries = await run_alone(self, batch, items, last_try=last_try, attempt=attempt)
            await self._close(batch)
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
                await self._record(
                    batch, items, request, response, {}, batch_api=batch_api, attempt=attempt
                )
                await self._settled(batch, items, call_id, response, batch_api)
            raise
        if stored is None:
            await self._record(
                batch, items, request, response, outputs, batch_api=batch_api, attempt=attempt
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
            await self.record_savings(batch, answered)
        metrics.observe_batch(batch.model)
        children: list[str] = []
        if retry:
            reason = "; ".join(sorted({failures[i] for i in ids if i in failures}))
            children = await self._retry(batch, retry, reason)
        await self._close(batch)
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
            return await self.budgets.hold(batch, items, exc, last_try=last_try, close=self._close)
        except ProviderError as exc:
            await self._record_error(batch, exc, attempt)
            await self.inflight.finish(batch, items, call_id, None)
            if isinstance(exc, ContextTooLong):
                if len(items) > 1:
                    return await self._retry(batch, [i.key for i in items], str(exc))
                return await self._fail(batch, items, "context_length", str(exc))
            if isinstance(exc, TransientError):
                if not last_try:
                    raise
                return await self._fail(batch, items, "provider_unavailable", str(exc))
            if isinstance(exc, PermanentError):
                return await self._fail(batch, items, "provider_refused", str(exc))
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
            await self._fail(loaded[0], loaded[1], code, message)

    async def _record(
        self,
        batch: Batch,
        items: Sequence[Item],
        request: ChatRequest,
        response: ChatResponse,
        outputs: dict[str, Any],
        *,
        batch_api: bool = False,
        attempt: int = 1,
    ) -> None:
        """The ledger record of the call, with its cost split over the items exactly."""
        usage = response.usage
        n = len(items)
        own = [i.input_tokens for i in items]
        shared = max(usage.input_tokens - sum(own), 0)
        in_weights = [shared / n + o for o in own]
        out_weights = [
            count_tokens(orjson.dumps(outputs[i]).decode()) if i in outputs else 0
            for i in item_ids(n)
        ]
        # a fallback may have answered: price the model that did
        cost = self.prices.price(response.model, usage, batch_api=batch_api)
        in_tokens = split_int(usage.input_tokens, in_weights)
        out_tokens = split_int(usage.output_tokens, out_weights)
        if cost is None:
            nusd: list[int | None] = [None] * n
        else:
            total = to_nano(cost)
            in_cost = self.prices.price(
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
            cost = Decimal(total) / NANO  # the recorded cost is exactly what was attributed
        shares = {
            item.key: Share(nusd[i], in_tokens[i], out_tokens[i]) for i, item in enumerate(items)
        }
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
        blob = response.to_json()
        if await self.ledger.record(record, blob, shares) and batch_api:
            await self.ledger.record_saving(batch_api_saving(self.prices, record))

    async def _record_error(self, batch: Batch, exc: ProviderError, attempt: int) -> None:
        """A failed call in the ledger: nothing billed, the error and which try it was."""
        await self.ledger.record_error(error_record(batch, exc, attempt))

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

    async def record_savings(self, batch: Batch, answered: Sequence[Answered]) -> None:
        """The `packing`, `single_flight` and `routing` savings of `batch`'s answers."""
        baseline = self.settings.baseline_model
        for saving in call_savings(self.prices, batch, answered, baseline_model=baseline):
            await self.ledger.record_saving(saving)

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

    async def _fail(
        self, batch: Batch, items: Sequence[Item], code: str, message: str
    ) -> list[str]:
        spent = await self.runs.spent([item.key for item in items])
        outcomes = [
            {
                "status": "failed",
                "model": batch.model,
                "batch_id": batch.id,
                "batch_size": len(items),
                **cost,
                "error": {"code": code, "message": message},
            }
            for cost in spent
        ]
        counts = await self.runs.finish_items(
            [(item.key, outcome) for item, outcome in zip(items, outcomes, strict=True)]
        )
        for tasks in counts:
            metrics.observe_failed(tasks)
        await self._close(batch)
        return []

    async def _retry(self, batch: Batch, item_keys: list[str], reason: str) -> list[str]:
        """Child batches for items without a valid output: halves, then alone, then failure."""
        if len(item_keys) == 1:
            attempts = batch.alone_attempts + 1 if len(batch.item_keys) == 1 else 0
            if attempts >= self.settings.max_alone_attempts:
                blob = await self.redis.get(self.keys.item(item_keys[0]))
                items = [Item.model_validate_json(item_json(blob))] if blob else []
                return await self._fail(batch, items, "no_valid_output", reason)
            plan = [(f"{batch.id}.r", item_keys, attempts)]
        else:
            half = (len(item_keys) + 1) // 2
            plan = [(f"{batch.id}.0", item_keys[:half], 0), (f"{batch.id}.1", item_keys[half:], 0)]
        children = []
        for child_id, keys, attempts in plan:
            child = self.keys.batch(child_id)
            if not await self.redis.exists(child):  # only this batch's job creates its children
                now = int(time.time() * 1000)
                await self.redis.hset(
                    child,
                    mapping={
                        "group": batch.group,
                        "items": ",".join(keys),
                        "created_ms": now,
                        "alone_attempts": attempts,
                        "reason": reason,
                        "status": "open",
                    },
                )
                await self.redis.zadd(self.keys.open_batches(), {child_id: now})
            children.append(child_id)
        logger.info(
            "batch %s: %d item(s) retried as %s (%s)",
            batch.id,
            len(item_keys),
            ", ".join(children),
            reason,
        )
        return children

    async def _close(self, batch: Batch) -> None:
        if not batch.recorded:
            return
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(k.batch(batch.id), "status", "done")
            pipe.expire(k.batch(batch.id), 86400)
            pipe.zrem(k.open_batches(), batch.id)
            await pipe.execute()
