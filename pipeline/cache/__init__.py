"""Exact and semantic response caches with TTL classes, tenant scopes and analytics.

store.py     ResponseCache: L1 exact + L2 semantic lookups at submit, stores on answer
entries.py   entries written from answered intents, and cleared
semantic.py  embedder choice, semantic scopes, the per-process index synced from Redis
grey.py      grey-zone candidates verified by the worker, beside the batch's own call
ttl.py       TTL classes for tasks that name none; adaptive TTL within a class's bounds
stats.py     per tenant and model analytics
"""

from __future__ import annotations

from pipeline.cache.stats import CacheStatsRow
from pipeline.cache.store import Lookup, ResponseCache
from pipeline.cache.ttl import TTLPolicy, infer_ttl_class

__all__ = [
    "CacheStatsRow",
    "Lookup",
    "ResponseCache",
    "TTLPolicy",
    "infer_ttl_class",
]
