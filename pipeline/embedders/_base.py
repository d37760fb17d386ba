"""What every embedder shares: the protocol, calibrated thresholds, normalisation, model cache."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

# Calibrated by bench/calibrate_semantic.py (see the module docstring); rerun it after changing
# the embedder, the guard or the labelled pairs, and paste the figures it prints here.
THRESHOLD_MINILM, THRESHOLD_JA_MINILM = 0.825, 0.925
THRESHOLD_E5, THRESHOLD_JA_E5 = 0.955, 0.955
THRESHOLD_HASHING, THRESHOLD_JA_HASHING = 0.65, 0.855
THRESHOLD_ROUTED, THRESHOLD_JA_ROUTED = 0.88, 0.955

JAPANESE = re.compile("[\u3041-\u3096\u30a1-\u30fa\u4e00-\u9fff]")


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


class Calibrated:
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
        return self.threshold_ja if is_japanese(query) else self.threshold


def is_japanese(text: str) -> bool:
    """True when `text` contains kana or kanji: such a prompt is matched as Japanese."""
    return JAPANESE.search(text) is not None


def normalise(vectors: Vectors) -> Vectors:
    """Scale every row to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def shared_model(kind: str, key: str, load: Any) -> Any:
    """Load each model once per process, however many embedders or tasks ask at once."""
    with _models_lock:
        if (kind, key) not in _models:
            _models[(kind, key)] = load()
        return _models[(kind, key)]
