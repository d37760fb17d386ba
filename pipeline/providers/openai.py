"""OpenAI-compatible chat completions over httpx: OpenAI, Gemini's OpenAI endpoint, vLLM,
llama.cpp, Ollama — anything that speaks `/chat/completions` with a bearer key."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from ..config import ProviderConfig
from ..errors import TransientError
from ..usage import from_openai
from .base import ChatRequest, ChatResponse, classify_http, error_fields, rate_headers, redact


class OpenAICompatible:
    """One OpenAI-compatible endpoint, with a pooled connection and per-provider timeouts."""

    simulated = False

    def __init__(
        self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.name = config.name
        self.config = config
        self._key = config.api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=config.max_in_flight),
            transport=transport,
        )

    def serves(self, model: str) -> bool:
        return self.config.serves(model)

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
        started = time.perf_counter()
        try:
            response = await self._client.post(
                "/chat/completions",
                content=orjson.dumps(self.body(request)),
                headers={"content-type": "application/json"},
            )
        except httpx.TimeoutException:
            raise TransientError("request timed out", provider=self.name) from None
        except httpx.TransportError as exc:
            message = redact(f"connection failed: {type(exc).__name__}", [self._key])
            raise TransientError(message, provider=self.name) from None
        latency_ms = int((time.perf_counter() - started) * 1000)
        if response.status_code >= 400:
            raise self._error(response)
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

    def _error(self, response: httpx.Response) -> Exception:
        message, code = error_fields(response.content, response.reason_phrase)
        message = redact(message, [self._key])
        return classify_http(self.name, response.status_code, message, code, response.headers)

    async def aclose(self) -> None:
        await self._client.aclose()
