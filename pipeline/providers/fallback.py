"""Calling providers: backoff on transient errors, then the next provider that serves the model.

Backoff is exponential with full jitter, capped, and honours the provider's Retry-After. When a
provider keeps failing transiently or refuses, the chain moves on; `ContextTooLong` is raised at
once, because the batch must be split rather than sent elsewhere.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from ..config import Settings
from ..errors import ContextTooLong, PermanentError, ProviderRefused, TransientError
from .base import ChatRequest, ChatResponse, Provider


class ProviderChain:
    """The providers that can answer a model, tried in configured order."""

    def __init__(self, providers: Sequence[Provider], settings: Settings) -> None:
        self.providers = list(providers)
        self.settings = settings

    def serving(self, model: str) -> list[Provider]:
        return [p for p in self.providers if p.serves(model)]

    def serves(self, model: str) -> bool:
        return bool(self.serving(model))

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after_s", None)
        cap = self.settings.backoff_cap_s
        if hint is not None:
            return float(min(max(hint, 0.0), cap))
        ceiling = min(cap, self.settings.backoff_base_s * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer `request` from the first provider that can; raise the last error otherwise."""
        candidates = self.serving(request.model)
        if not candidates:
            raise ProviderRefused(
                f"no configured provider serves model {request.model!r}", provider="router"
            )
        last: Exception | None = None
        for provider in candidates:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.settings.provider_retries + 1),
                wait=self._wait,
                retry=retry_if_exception_type(TransientError),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        return await provider.complete(request)
            except ContextTooLong:
                raise
            except (TransientError, PermanentError) as exc:
                last = exc
        assert last is not None
        raise last
