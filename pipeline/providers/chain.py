"""Calling providers: health, rate limits, backoff, then the next model of the fallback chain.

For a request the chain is the model's own providers, then those of each model in
`settings.fallbacks[model]`, in order, each tried once down the chain (a fallback never restarts
the chain). Each step:

1. the provider's shared circuit (`health.py`) may say the provider is down: skip it at once;
2. a per-worker semaphore bounds the calls in flight to the provider;
3. the shared rate limiter (`ratelimit.py`) waits for room under every requests/tokens limit;
4. the call, retried on transient errors with tenacity: exponential backoff with full jitter,
   capped, honouring Retry-After, until the circuit opens or the retries are spent.

A 429 blocks the model for every worker until its Retry-After and does not count against the
provider's health; an auth or quota refusal opens the circuit at once; `ContextTooLong` is raised
at once, because the batch must be split rather than sent elsewhere. When every step fails the
error names each provider and why, and is transient if any step may succeed later.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import replace

from redis.asyncio import Redis
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from pipeline.config.records import ProviderConfig
from pipeline.config.settings import Settings
from pipeline.errors import (
    AccountRefused,
    ContextTooLong,
    PermanentError,
    ProviderError,
    ProviderRefused,
    RateLimited,
    TransientError,
)
from pipeline.keys import Keys
from pipeline.providers.base import ChatRequest, ChatResponse, Provider
from pipeline.providers.health import CircuitGate, ProviderHealth
from pipeline.providers.ratelimit import RateLimiter
from pipeline.tokens import count_messages


class CircuitOpen(TransientError):
    """The provider is skipped: its shared circuit is open (or another worker is probing it)."""


class ProviderDown(AccountRefused):
    """The provider is skipped: it refused this account and is marked down."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, CircuitOpen)


class ProviderChain:
    """The providers that can answer a model, then its fallbacks, with shared health and limits."""

    def __init__(
        self,
        providers: Sequence[Provider],
        settings: Settings,
        *,
        redis: Redis | None = None,
        keys: Keys | None = None,
    ) -> None:
        self.providers = list(providers)
        self.settings = settings
        self.configs: dict[str, ProviderConfig] = {c.name: c for c in settings.providers}
        keys = keys or Keys(settings.key_prefix)
        self.health = ProviderHealth(redis, keys, settings) if redis is not None else None
        self.limiter = RateLimiter(redis, keys, settings) if redis is not None else None
        self._slots = {
            p.name: asyncio.Semaphore(self._config_max_in_flight(p.name)) for p in self.providers
        }

    def _config_max_in_flight(self, name: str) -> int:
        config = self.configs.get(name)
        return config.max_in_flight if config is not None else 64

    def serving(self, model: str) -> list[Provider]:
        return [p for p in self.providers if p.serves(model)]

    def serves(self, model: str) -> bool:
        return bool(self.serving(model))

    def plan(self, model: str) -> list[tuple[str, Provider]]:
        """(model, provider) steps in the order they are tried: the model, then its fallbacks."""
        steps: list[tuple[str, Provider]] = []
        for candidate in (model, *self.settings.fallbacks.get(model, ())):
            for provider in self.serving(candidate):
                if (candidate, provider) not in steps:
                    steps.append((candidate, provider))
        return steps

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after_s", None)
        cap = self.settings.backoff_cap_s
        if hint is not None:
            return float(min(max(hint, 0.0), cap))
        ceiling = min(cap, self.settings.backoff_base_s * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer `request` from the first step of its chain that can.

        The response's `model` is the model that answered, which is a fallback model when the
        requested one was unavailable.
        """
        steps = self.plan(request.model)
        if not steps:
            raise ProviderRefused(
                f"no configured provider serves model {request.model!r}", provider="router"
            )
        errors: list[ProviderError] = []
        for model, provider in steps:
            step = request if model == request.model else replace(request, model=model)
            try:
                return await self._call(provider, step)
            except ContextTooLong:
                raise
            except (TransientError, PermanentError) as exc:
                errors.append(exc)
        raise _combined(request.model, errors)

    async def _call(self, provider: Provider, request: ChatRequest) -> ChatResponse:
        """One step of the chain: retries with backoff while the provider's circuit is closed."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.provider_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(provider, request)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _attempt(self, provider: Provider, request: ChatRequest) -> ChatResponse:
        gate = CircuitGate(True)
        if self.health is not None:
            gate = await self.health.gate(provider.name)
            if not gate.allowed:
                raise _skipped(provider.name, request.model, gate)
        config = self.configs.get(provider.name)
        async with self._slots[provider.name]:
            if self.limiter is not None:
                tokens = 0
                if self.limiter.needs_tokens(config, request.model):
                    contents = [m.content for m in request.messages]
                    tokens = count_messages(request.system, contents) + request.max_tokens
                await self.limiter.acquire(config, request.model, tokens)
            try:
                response = await provider.complete(request)
            except ProviderError as exc:
                await self._observe_failure(provider.name, request.model, exc)
                raise
        if self.health is not None:
            await self.health.succeeded(provider.name, gate)
        if self.limiter is not None and response.rate_headers:
            await self.limiter.learn(provider.name, request.model, response.rate_headers)
        return response

    async def _observe_failure(self, provider: str, model: str, exc: ProviderError) -> None:
        if isinstance(exc, RateLimited):
            if self.limiter is not None and exc.retry_after_s:
                await self.limiter.block(provider, model, exc.retry_after_s)
            return  # the limiter's business, not a sign of an unhealthy provider
        if self.health is None:
            return
        if isinstance(exc, AccountRefused):
            await self.health.failed(provider, str(exc), account=True)
        elif isinstance(exc, TransientError):
            await self.health.failed(provider, str(exc))


def _skipped(provider: str, model: str, gate: CircuitGate) -> ProviderError:
    wait = f"{gate.retry_in_s:.1f}s"
    if gate.account:
        return ProviderDown(
            f"marked down for {model} for another {wait} after: {gate.reason}",
            provider=provider,
        )
    why = f" after: {gate.reason}" if gate.reason else " (being probed)"
    return CircuitOpen(
        f"skipped for {model}, circuit open for another {wait}{why}",
        provider=provider,
        retry_after_s=gate.retry_in_s,
    )


def _combined(model: str, errors: list[ProviderError]) -> ProviderError:
    """One error for a chain that failed at every step, naming each provider and why."""
    if len(errors) == 1:
        return errors[0]
    providers = ",".join(dict.fromkeys(e.provider for e in errors))
    message = f"every provider for {model} failed: " + "; ".join(str(e) for e in errors)
    transient = [e for e in errors if isinstance(e, TransientError)]
    if transient:
        hints = [e.retry_after_s for e in transient if e.retry_after_s is not None]
        return TransientError(
            message, provider=providers, retry_after_s=min(hints) if hints else None
        )
    return ProviderRefused(message, provider=providers)
