"""An embedder that calls any OpenAI-compatible /v1/embeddings endpoint."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np

from pipeline.cache.embedders._base import Calibrated, Vectors, normalise
from pipeline.errors import PermanentError, ProviderRefused, RateLimited, TransientError


class OpenAIEmbeddings(Calibrated):
    """Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Azure-style gateways, vLLM, TEI).

    `base_url` includes the version prefix, e.g. "https://api.openai.com/v1". The API key is sent
    as a bearer token and never appears in an error, a log line or this object's repr.
    The 0.90 thresholds are conservative guesses, NOT calibrated here (no network): run
    bench/calibrate_semantic.py --embedder openai against your endpoint and pass the result.
    """

    threshold = 0.90
    threshold_ja = 0.90

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str = "text-embedding-3-small",
        dim: int = 1536,
        threshold: float | None = None,
        threshold_ja: float | None = None,
        batch_size: int = 256,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._set_thresholds(threshold, threshold_ja)
        self.name = f"openai-compatible:{model}"
        self.model = model
        self.dim = dim
        self.batch_size = batch_size
        self._url = base_url.rstrip("/") + "/embeddings"
        self._api_key = api_key
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport)

    def __repr__(self) -> str:
        return f"OpenAIEmbeddings(url={self._url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`, `batch_size` per request, and normalise the rows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            await self._request(list(texts[i : i + self.batch_size]))
            for i in range(0, len(texts), self.batch_size)
        ]
        return normalise(np.vstack(parts))

    async def _request(self, batch: list[str]) -> Vectors:
        headers = {"Authorization": f"Bearer {self._api_key}"}
        try:
            response = await self._client.post(
                self._url, json={"model": self.model, "input": batch}, headers=headers
            )
        except httpx.TimeoutException:
            raise TransientError("embedding request timed out", provider=self.name) from None
        except httpx.HTTPError as exc:
            raise TransientError(
                f"embedding request failed: {type(exc).__name__}", provider=self.name
            ) from None
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError):
            raise PermanentError(
                "embedding response is not OpenAI-shaped JSON",
                provider=self.name,
                status=response.status_code,
            ) from None
        if vectors.shape != (len(batch), self.dim):
            raise PermanentError(
                f"expected {len(batch)} vectors of {self.dim} dims, got shape {vectors.shape}",
                provider=self.name,
                status=response.status_code,
            )
        return vectors

    def _status_error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        try:
            detail = str(response.json()["error"]["message"])[:300]
        except (ValueError, KeyError, TypeError):
            detail = response.reason_phrase or "error"
        detail = detail.replace(self._api_key, "***") if self._api_key else detail
        if status == 429:
            retry = response.headers.get("retry-after", "")
            retry_after_s = float(retry) if retry.replace(".", "", 1).isdigit() else None
            return RateLimited(
                detail, provider=self.name, status=status, retry_after_s=retry_after_s
            )
        if status >= 500 or status == 408:
            return TransientError(detail, provider=self.name, status=status)
        return ProviderRefused(detail, provider=self.name, status=status)
