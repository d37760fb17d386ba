"""Grey-zone verification: a cheap model confirms a semantic candidate before it is served.

Above the serve threshold a candidate that the guard lets through is a hit; in the grey zone
below it (`cache_semantic_verify_margin` wide) it is a hit only when the verification model
answers a clear "yes" to "do these two requests ask the same thing?". All grey-zone candidates
of a batch go in one call (the format is `pipeline.cache.verdicts`), asked by the worker that runs
the batch (grey.py), on the cheapest model the configured providers serve (chosen once per
process), and the call is recorded in the ledger like any other.
Verdicts are cached per (semantic scope, query, cached prompt), "no" as well as "yes", so a pair
is never paid for twice while its verdict lives. Any failure is a "no": a provider outage costs
savings, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from pipeline.cache.verdicts import VERIFY_SYSTEM, read_verdicts, verify_prompt
from pipeline.costs.money import to_nano, usd
from pipeline.costs.paid import PaidCaller
from pipeline.errors import PipelineError
from pipeline.models import CallRecord, Message, Usage
from pipeline.providers.base import ChatRequest

logger = logging.getLogger("batchwise.cache")

# what a verification call looks like, to compare models' prices: a few pairs, a word each
_TYPICAL = Usage(input_tokens=400, output_tokens=20)


@dataclass(frozen=True)
class PairCheck:
    """One grey-zone candidate: the query, the cached prompt it may take the answer of."""

    tenant: str
    scope_id: str
    query: str
    cached: str

    @property
    def digest(self) -> str:
        raw = "\x00".join((self.scope_id, self.query, self.cached)).encode()
        return hashlib.sha256(raw).hexdigest()[:40]


class Verifier(PaidCaller):
    """Confirms grey-zone candidates on the cheapest served model; verdicts cached in Redis."""

    def setup(self) -> None:
        self._warned = False
        self._model = self._choose_model()

    def model(self) -> str | None:
        """The configured verification model, or the cheapest priced model a provider serves."""
        return self._model

    def _choose_model(self) -> str | None:
        if self.settings.cache_semantic_verify_model:
            return self.settings.cache_semantic_verify_model
        best: tuple[Decimal, str] | None = None
        for model in sorted({m for tier in self.settings.tiers.values() for m in tier}):
            price = self.prices.price(model, _TYPICAL) if self.chain.serves(model) else None
            if price is not None and (best is None or (price, model) < best):
                best = (price, model)
        return best[1] if best else None

    async def confirm(self, checks: Sequence[PairCheck]) -> list[bool]:
        """True for each check the model confirmed (now or earlier); False for everything else."""
        if not checks:
            return []
        keys = [self._verdict_key(c) for c in checks]
        known = await self.redis.mget(keys)
        verdicts = [v == b"1" for v in known]
        ask: dict[str, list[int]] = {}
        for i, (check, cached) in enumerate(zip(checks, known, strict=True)):
            if cached is None:
                ask.setdefault(check.tenant, []).append(i)
        tenants = list(ask)  # one call per tenant, all at once
        replies = await asyncio.gather(
            *(self._ask(t, [checks[i] for i in ask[t]]) for t in tenants)
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for tenant, answers in zip(tenants, replies, strict=True):
                if answers is None:
                    continue  # nothing learnt: ask again next time
                for i, yes in zip(ask[tenant], answers, strict=True):
                    verdicts[i] = yes
                    pipe.set(
                        keys[i], b"1" if yes else b"0", ex=self.settings.cache_semantic_verify_ttl_s
                    )
            await pipe.execute()
        return verdicts

    def _verdict_key(self, check: PairCheck) -> str:
        return self.keys.cache_verdict(check.digest)

    async def _ask(self, tenant: str, checks: Sequence[PairCheck]) -> list[bool] | None:
        """One call for `checks`, recorded in the ledger; None when it could not be made."""
        model = self.model()
        if model is None:
            if not self._warned:  # once per process: the configuration will not change
                self._warned = True
                logger.warning(
                    "semantic verification off: no provider serves a priced model of the tiers; "
                    "set BATCHWISE_CACHE_SEMANTIC_VERIFY_MODEL"
                )
            return None
        pairs = [(c.query, c.cached) for c in checks]
        request = ChatRequest(
            model=model,
            system=VERIFY_SYSTEM,
            messages=(Message(role="user", content=verify_prompt(pairs)),),
            max_tokens=8 + 8 * len(pairs),
            temperature=0.0,
            json_mode=True,
        )
        try:
            response = await self.chain.complete(request)
        except PipelineError as exc:
            logger.warning("semantic verification of %d pair(s) failed: %s", len(pairs), exc)
            return None
        cost = self.prices.price(response.model, response.usage)
        call_id = f"verify-{uuid.uuid4().hex[:20]}"
        await self.ledger.record(
            CallRecord(
                id=call_id,
                at=time.time(),
                batch_id=call_id,
                provider=response.provider,
                model=response.model,
                simulated=response.simulated,
                status="ok",
                usage=response.usage,
                cost_usd=None if cost is None else usd(to_nano(cost)),
                latency_ms=response.latency_ms,
                batch_size=len(pairs),
                tenant=tenant,
            ),
            response.to_json(),
            {},
        )
        if response.truncated:
            return [False] * len(pairs)
        return read_verdicts(response.text, len(pairs))
