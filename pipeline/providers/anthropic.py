"""Anthropic's native Messages API over httpx, configured like the official SDK.

`ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL` (the root, without `/v1`) configure it; requests carry
`x-api-key` and `anthropic-version`, the system prompt goes in the top-level `system` field, and a
long system prompt is marked for Anthropic's prompt cache so that every batch of a group reuses it.
Usage is normalised with `pipeline.costs.usage.from_anthropic` (cache reads and writes counted in
input).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from pipeline.config.records import ProviderConfig
from pipeline.costs.usage import from_anthropic
from pipeline.errors import TransientError
from pipeline.providers.base import ChatRequest, ChatResponse, rate_headers
from pipeline.providers.http import HTTPProvider
from pipeline.tokens import count_tokens

ANTHROPIC_VERSION = "2023-06-01"
# Below this a prompt cannot be cached (1,024 tokens for Sonnet/Opus, 2,048 for Haiku), and
# marking it only costs a cache write.
CACHE_MIN_TOKENS = 1024


class AnthropicMessages(HTTPProvider):
    """One Anthropic Messages endpoint, with a pooled connection and per-provider timeouts."""

    def __init__(
        self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        key = config.api_key.get_secret_value()
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        super().__init__(
            config,
            headers=headers,
            default_base_url="https://api.anthropic.com",
            transport=transport,
        )

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The Messages API body: top-level system, alternating user/assistant turns."""
        messages: list[dict[str, str]] = []
        for m in request.messages:
            role = "assistant" if m.role == "assistant" else "user"
            if messages and messages[-1]["role"] == role:  # the API wants alternating roles
                messages[-1]["content"] += "\n\n" + m.content
            else:
                messages.append({"role": role, "content": m.content})
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
            "temperature": request.temperature,
        }
        if request.system:
            block: dict[str, Any] = {"type": "text", "text": request.system}
            if count_tokens(request.system) >= CACHE_MIN_TOKENS:
                block["cache_control"] = {"type": "ephemeral"}
            body["system"] = [block]
        return body

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response, latency_ms = await self.post("/v1/messages", self.body(request))
        try:
            data = orjson.loads(response.content)
            blocks = data["content"]
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise TransientError(
                "answer is not an Anthropic message", provider=self.name, status=200
            ) from None
        return ChatResponse(
            text=text,
            usage=from_anthropic(data.get("usage") or {}),
            truncated=data.get("stop_reason") == "max_tokens",
            provider=self.name,
            model=request.model,
            latency_ms=latency_ms,
            rate_headers=rate_headers(response.headers),
        )
