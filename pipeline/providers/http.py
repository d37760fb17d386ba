"""What every HTTP provider client shares: a pooled httpx client with the provider's timeouts,
and one POST that turns transport failures and error answers into batchwise's error classes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from pipeline.config.records import ProviderConfig
from pipeline.errors import TransientError
from pipeline.providers.base import classify_http, error_fields
from pipeline.redaction import redact


class HTTPProvider:
    """Base of the HTTP clients. Subclasses build the body and read the answer."""

    simulated = False

    def __init__(
        self,
        config: ProviderConfig,
        *,
        headers: dict[str, str],
        default_base_url: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self._key = config.api_key.get_secret_value()
        self._client = httpx.AsyncClient(
            base_url=(config.base_url or default_base_url).rstrip("/"),
            headers={"content-type": "application/json", **headers},
            timeout=httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=config.max_in_flight),
            transport=transport,
        )

    def serves(self, model: str) -> bool:
        return self.config.serves(model)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[httpx.Response, int]:
        """POST `body`; return the successful response and its latency in ms.

        Raises `TransientError` for timeouts and connection failures, and the classified error
        for an HTTP error answer. Nothing raised carries the API key.
        """
        started = time.perf_counter()
        try:
            response = await self._client.post(path, content=orjson.dumps(body))
        except httpx.TimeoutException:
            raise TransientError("request timed out", provider=self.name) from None
        except httpx.TransportError as exc:
            message = redact(f"connection failed: {type(exc).__name__}", [self._key])
            raise TransientError(message, provider=self.name) from None
        latency_ms = int((time.perf_counter() - started) * 1000)
        if response.status_code >= 400:
            message, code = error_fields(response.content, response.reason_phrase)
            message = redact(message, [self._key])
            raise classify_http(self.name, response.status_code, message, code, response.headers)
        return response, latency_ms

    async def aclose(self) -> None:
        await self._client.aclose()
