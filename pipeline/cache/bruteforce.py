"""The fallback vector index for a Redis without vector sets: streams plus in-process search.

Each semantic scope is one Redis stream of (key, vector, prompt, owner). Every process keeps an
in-process copy of the scopes it has searched (numpy, brute force over unit vectors) and reads
only the stream entries it has not seen yet before each search, so all workers and producers
share what any of them cached. A lookup costs O(entries) per query and every process holds the
vectors in memory: fine for thousands of entries per scope, slow at 100k (see docs/semantic.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from redis.asyncio import Redis

from pipeline.cache.embedders import Vectors
from pipeline.cache.vectors import CANDIDATES, Match, Search
from pipeline.keys import Keys

SYNC_PAGE = 5000  # stream entries read per round trip when a process catches up
QUERY_BLOCK = 64  # queries scored against an index at once (bounds the score matrix)


@dataclass
class ScopeIndex:
    """The in-process copy of one scope's vectors: rows of unit vectors, their keys and prompts."""

    dim: int
    vectors: Vectors = field(init=False)
    alive: npt.NDArray[np.bool_] = field(init=False)  # False once a row's entry expired
    keys: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    cursor: str = "-"

    def __post_init__(self) -> None:
        self.vectors = np.zeros((4, self.dim), dtype=np.float32)  # many scopes stay tiny
        self.alive = np.zeros(4, dtype=bool)

    @property
    def size(self) -> int:
        return len(self.keys)

    def add(self, key: str, vector: Vectors, text: str) -> None:
        n = self.size
        if n == len(self.vectors):
            grown = np.zeros((2 * n, self.dim), dtype=np.float32)
            grown[:n] = self.vectors
            self.vectors = grown
            self.alive = np.concatenate([self.alive, np.zeros(n, dtype=bool)])
        self.vectors[n] = vector
        self.alive[n] = True
        self.keys.append(key)
        self.texts.append(text)

    def keep_last(self, count: int) -> None:
        """Forget all but the newest `count` rows (the stream was trimmed the same way)."""
        drop = self.size - count
        if drop <= 0:
            return
        self.vectors = np.ascontiguousarray(self.vectors[drop : self.size])
        self.alive = self.alive[drop : self.size].copy()
        self.keys, self.texts = self.keys[drop:], self.texts[drop:]

    def best(self, queries: Vectors, thresholds: Sequence[float]) -> list[list[tuple[float, int]]]:
        """For each query, up to CANDIDATES (score, row) at or above its threshold, best first."""
        limits = np.asarray(thresholds, dtype=np.float32)[:, None]
        n = self.size
        found: list[list[tuple[float, int]]] = [[] for _ in range(len(queries))]
        if n == 0:
            return found
        alive = self.alive[:n]
        for start in range(0, len(queries), QUERY_BLOCK):
            block = queries[start : start + QUERY_BLOCK]
            scores = block @ self.vectors[:n].T  # (q, n): unit vectors, so cosine similarity
            # most queries have no row above their threshold: no sorting at all
            above = scores >= limits[start : start + QUERY_BLOCK]
            for j in np.flatnonzero(above.any(axis=1)):
                rows = np.flatnonzero(above[j] & alive)
                if len(rows) > CANDIDATES:
                    rows = rows[np.argpartition(-scores[j, rows], CANDIDATES - 1)[:CANDIDATES]]
                found[start + j] = sorted(
                    ((float(scores[j, r]), int(r)) for r in rows), reverse=True
                )
        return found


class StreamIndex:
    """Per process: scope id -> in-process index, kept in step with the Redis streams."""

    def __init__(self, redis: Redis, keys: Keys, dim: int, *, max_entries: int) -> None:
        self.redis = redis
        self.keys = keys
        self.dim = dim
        self.max_entries = max_entries
        self.scopes: dict[str, ScopeIndex] = {}
        self._syncing = asyncio.Lock()  # concurrent submits must not read a page twice

    async def search(self, searches: Sequence[Search]) -> list[list[list[Match]]]:
        """For each search (one scope, many queries): each query's matches, best first."""
        async with self._syncing:
            await self._sync(sorted({s.scope_id for s in searches}))
        out = []
        for s in searches:
            index = self.scopes[s.scope_id]
            out.append(
                [
                    [Match(score, index.keys[row], index.texts[row]) for score, row in best]
                    for best in index.best(s.vectors, s.thresholds)
                ]
            )
        return out

    async def _sync(self, pending: list[str]) -> None:
        while pending:
            async with self.redis.pipeline(transaction=False) as pipe:
                for scope_id in pending:
                    index = self.scopes.setdefault(scope_id, ScopeIndex(self.dim))
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

    async def forget(self, scope_id: str, keys: Sequence[str]) -> None:
        """These entries expired: never offer them again in this process."""
        index = self.scopes.get(scope_id)
        if index is None:
            return
        gone = set(keys)
        for row, key in enumerate(index.keys):
            if key in gone:
                index.alive[row] = False

    def publish(
        self, pipe: Any, scope_id: str, key: str, vector: bytes, text: str, owner: str
    ) -> None:
        """Queue the write that shares a new entry's vector with every process."""
        pipe.xadd(
            self.keys.cache_vectors(scope_id),
            {"k": key, "v": vector, "t": text, "o": owner},
            maxlen=self.max_entries,
            approximate=True,
        )

    def trim(self, pipe: Any, scope_ids: Sequence[str]) -> None:
        """Nothing to do: `publish` caps each stream as it writes."""

    async def clear(self, tenant: str | None) -> None:
        """Delete the vectors of one tenant's entries, or all of them."""
        async for stream in self.redis.scan_iter(self.keys.cache_vectors("*"), count=1000):
            if tenant is None:
                await self.redis.delete(stream)
                continue
            last = "-"
            while rows := await self.redis.xrange(stream, min=last, count=SYNC_PAGE):
                drop = [i for i, fields in rows if fields.get(b"o", b"").decode() == tenant]
                if drop:
                    await self.redis.xdel(stream, *drop)
                if len(rows) < SYNC_PAGE:
                    break
                last = "(" + rows[-1][0].decode()
