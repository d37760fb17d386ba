"""A dependency-free character n-gram embedder for unit tests and as a last-resort fallback."""

from __future__ import annotations

import unicodedata
import zlib
from collections.abc import Sequence

import numpy as np

from pipeline.cache.embedders._base import (
    THRESHOLD_HASHING,
    THRESHOLD_JA_HASHING,
    Calibrated,
    Vectors,
    normalise,
)


class HashingEmbedder(Calibrated):
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
        unit: Vectors = normalise(row[None, :])[0]
        return unit

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` inline (microseconds per text)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self.vector(t) for t in texts])
