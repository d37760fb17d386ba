"""What a semantic vector index is to the cache: search many queries per scope, publish, forget.

VectorIndex (Protocol)
├── VectorSetIndex   Redis 8 vector sets, one set per scope, HNSW with int8 quantisation,
│                    searched on the server and shared by every process (vectorset.py)
└── StreamIndex      Redis streams + brute force in each process: the fallback for a Redis
                     without vector sets (bruteforce.py)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.cache.embedders import Vectors

CANDIDATES = 4  # best-scoring entries checked by the guard and for liveness, per query
# the fields of a cached answer's hash that a lookup reads (see ResponseCache)
ENTRY_FIELDS = ("v", "created", "hits", "base", "max", "owner")
Entry = tuple[bytes | None, ...]  # ENTRY_FIELDS' values; all None when the entry expired


@dataclass(frozen=True)
class Search:
    """Queries of one semantic scope: their unit vectors and the similarity each needs."""

    scope_id: str
    vectors: Vectors
    thresholds: Sequence[float]


@dataclass(frozen=True)
class Match:
    """A cached prompt whose cosine similarity to a query reached the query's threshold."""

    score: float
    key: str
    text: str
    entry: Entry | None = None  # the cached answer's fields when the index read them with it


class VectorIndex(Protocol):
    """Where the vectors of cached prompts live; shared by every process through Redis."""

    async def search(self, searches: Sequence[Search]) -> list[list[list[Match]]]:
        """Per search, per query: up to CANDIDATES matches at or above the threshold, best
        first (with their entries' ENTRY_FIELDS where the index reads them in the same trip)."""
        ...

    def publish(
        self, pipe: Any, scope_id: str, key: str, vector: bytes, text: str, owner: str
    ) -> None:
        """Queue on `pipe` the write that adds a new entry's vector (`owner`: its tenant)."""
        ...

    def trim(self, pipe: Any, scope_ids: Sequence[str]) -> None:
        """Queue on `pipe` what keeps these scopes within `max_entries` (after publishing)."""
        ...

    async def forget(self, scope_id: str, keys: Sequence[str]) -> None:
        """These entries expired: never offer them again."""
        ...

    async def clear(self, tenant: str | None) -> None:
        """Delete the vectors of one tenant's entries, or all of them."""
        ...
