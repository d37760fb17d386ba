"""OpenAI-compatible chat completions over httpx: OpenAI, Gemini's OpenAI endpoint, vLLM,
llama.cpp, Ollama — anything that speaks `/chat/completions` with a bearer key."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from pipeline.config.records import ProviderConfig
from pipeline.costs.usage import from_openai
from pipeline.errors import TransientError
from pipeline.providers.base import ChatRequest, ChatResponse, rate_headers
from pipeline.providers.http import HTTPProvider


class OpenAICompatible(HTTPProvider):
    """One OpenAI-compatible endpoint, with a pooled connection and per-provider timeouts."""

    def __init__(
        self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        key = config.api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        super().__init__(config, headers=headers, transport=transport)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response, latency_ms = await self.post("/chat/completions", self.body(request))
        try:
            data = orjson.loads(response.content)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise TransientError(
                "answer is not a chat completion", provider=self.name, status=response.status_code
            ) from None
        return ChatResponse(
            text=text,
            usage=from_openai(data.get("usage") or {}),
            truncated=choice.get("finish_reason") == "length",
            provider=self.name,
            model=request.model,
            latency_ms=latency_ms,
            rate_headers=rate_headers(response.headers),
        )
