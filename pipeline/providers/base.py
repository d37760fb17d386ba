"""The provider protocol, request and response records, and error classification for HTTP.

Every provider turns a `ChatRequest` into a `ChatResponse` with normalised `Usage`, or raises a
`TransientError` (retry later) or `PermanentError` (don't) from `pipeline.errors`. No error
message ever carries an API key: provider text passes through `pipeline.redaction.redact` first.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import orjson

from pipeline.errors import (
    AccountRefused,
    ContextTooLong,
    ProviderRefused,
    RateLimited,
    TransientError,
)
from pipeline.models import Message, Usage

_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s)", re.IGNORECASE)
# What OpenAI, Anthropic, Gemini and OpenAI-compatible servers say when a prompt is too big.
_CONTEXT_MARKERS = (
    "context_length",
    "context length",
    "context window",
    "too long",
    "too many tokens",
    "maximum number of tokens",
    "request_too_large",
)
# Refusals of the account rather than of the request: no request will succeed until fixed.
_ACCOUNT_MARKERS = ("insufficient_quota", "credit balance", "billing", "permission_denied")
_RATE_HEADER_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


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
    # the provider's rate-limit headers (x-ratelimit-*, anthropic-ratelimit-*), for the limiter
    rate_headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The answer as stored beside its ledger record, so a re-run never calls again."""
        return orjson.dumps({**asdict(self), "usage": self.usage.model_dump()})

    @classmethod
    def from_json(cls, blob: bytes | str) -> ChatResponse:
        data = orjson.loads(blob)
        return cls(**{**data, "usage": Usage(**data["usage"])})


class Provider(Protocol):
    """A chat-completion endpoint. `serves` tells whether it can answer a model name."""

    name: str
    simulated: bool

    def serves(self, model: str) -> bool: ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...


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
        with contextlib.suppress(TypeError, ValueError):  # the HTTP-date form
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    if match := _TRY_AGAIN.search(message):
        amount = float(match.group(1))
        return amount / 1000 if match.group(2).lower() == "ms" else amount
    return None


def rate_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The rate-limit headers of a response, lower-cased, for `RateLimiter.learn`."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(_RATE_HEADER_PREFIXES)}


def classify_http(
    provider: str, status: int, message: str, code: str, headers: Mapping[str, str]
) -> Exception:
    """Map an HTTP error answer to the error the caller should act on.

    Retryable: 408, 409, 429 (rate limit), 5xx and Anthropic's 529 overloaded. Not retryable:
    401/403/402 and exhausted quota or credit (`AccountRefused`: the provider is down for this
    account), an oversized prompt (`ContextTooLong`: split the batch), any other 4xx.
    """
    lowered = f"{code} {message}".lower()
    refused = 400 <= status < 500 and any(m in lowered for m in _ACCOUNT_MARKERS)
    if status in (401, 402, 403) or refused:
        return AccountRefused(message, provider=provider, status=status)
    if status == 429 or "resource_exhausted" in lowered:
        return RateLimited(
            message, provider=provider, status=status, retry_after_s=retry_after_s(headers, message)
        )
    if status in (408, 409) or status >= 500:
        return TransientError(
            message, provider=provider, status=status, retry_after_s=retry_after_s(headers, message)
        )
    if status in (400, 413) and any(m in lowered for m in _CONTEXT_MARKERS):
        return ContextTooLong(message, provider=provider, status=status)
    return ProviderRefused(message, provider=provider, status=status)


def error_fields(content: bytes, reason: str) -> tuple[str, str]:
    """(message, code) from an error body in OpenAI, Anthropic or Gemini shape."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return reason, ""
    if isinstance(doc, list) and doc:  # Gemini wraps its error in a list
        doc = doc[0]
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return reason, ""
    message = str(err.get("message") or reason)
    # OpenAI: code/type; Anthropic: type; Gemini: status (RESOURCE_EXHAUSTED, ...)
    code = " ".join(str(err[k]) for k in ("code", "type", "status") if err.get(k))
    return message, code
