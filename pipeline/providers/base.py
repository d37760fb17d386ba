"""The provider protocol, request and response records, and error classification for HTTP.

Every provider turns a `ChatRequest` into a `ChatResponse` with normalised `Usage`, or raises a
`TransientError` (retry later) or `PermanentError` (don't) from `pipeline.errors`. No error
message ever carries an API key: provider text passes through `redact` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ContextTooLong, ProviderRefused, RateLimited, TransientError
from ..models import Message, Usage

_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_*\-]{6,}|AIza[0-9A-Za-z_\-]{10,})")
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s)", re.IGNORECASE)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    system: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float = 0.0
    json_mode: bool = False
    response_schema: dict[str, Any] | None = None
    # the system prompt is a long shared prefix: mark it for the provider's prompt cache
    # (Anthropic `cache_control`; OpenAI caches prefixes by itself). See docs/routing.md.
    cache_prefix: bool = False


@dataclass(frozen=True)
class ChatResponse:
    text: str
    usage: Usage
    truncated: bool
    provider: str
    model: str
    latency_ms: int
    simulated: bool = False


class Provider(Protocol):
    """A chat-completion endpoint. `serves` tells whether it can answer a model name."""

    name: str
    simulated: bool

    def serves(self, model: str) -> bool: ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove API keys, and anything shaped like one, from provider-supplied text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)


def retry_after_s(headers: Mapping[str, str], message: str = "") -> float | None:
    """The provider's wait hint: `retry-after-ms`, `retry-after`, or OpenAI's "try again in Ns"."""
    if value := headers.get("retry-after-ms"):
        try:
            return float(value) / 1000
        except ValueError:
            pass
    if value := headers.get("retry-after"):
        try:
            return float(value)
        except ValueError:
            pass
    if match := _TRY_AGAIN.search(message):
        amount = float(match.group(1))
        return amount / 1000 if match.group(2).lower() == "ms" else amount
    return None


def classify_http(
    provider: str, status: int, message: str, code: str, headers: Mapping[str, str]
) -> Exception:
    """Map an HTTP error answer to the error the caller should act on."""
    lowered = f"{code} {message}".lower()
    if status == 429 and "insufficient_quota" not in lowered:
        return RateLimited(
            message, provider=provider, status=status, retry_after_s=retry_after_s(headers, message)
        )
    if status in (408, 409) or status >= 500:
        return TransientError(
            message, provider=provider, status=status, retry_after_s=retry_after_s(headers, message)
        )
    if status == 400 and ("context_length" in lowered or "too long" in lowered):
        return ContextTooLong(message, provider=provider, status=status)
    return ProviderRefused(message, provider=provider, status=status)
