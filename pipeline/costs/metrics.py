"""Prometheus metrics: what the workers did and what it cost, for scraping.

Metrics live in their own registry (`REGISTRY`) and are fed by the ledger as records are written
(calls, tokens, cost, latency, savings) and by the executor (batches, failed tasks). A worker
serves them over HTTP when `metrics_port` is set (`serve`); nothing is served by default.
Counters count what this process wrote, so a re-run that writes nothing counts nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from pipeline.models import CallRecord, Saving

logger = logging.getLogger("batchwise.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

TASKS = Counter(
    "batchwise_tasks",
    "Tasks finished, by outcome (answered by a call, cache_hit, failed).",
    ["outcome"],
    registry=REGISTRY,
)
BATCHES = Counter(
    "batchwise_batches", "Packed batches run to the end.", ["model"], registry=REGISTRY
)
BATCH_SIZE = Histogram(
    "batchwise_batch_size",
    "Items per provider call.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
CALLS = Counter(
    "batchwise_provider_calls",
    "Provider calls recorded in the ledger.",
    ["provider", "model", "status"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "batchwise_provider_errors",
    "Provider calls that failed, by provider and error code.",
    ["provider", "code"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "batchwise_tokens",
    "Tokens billed, by model and kind (input, cached_input, cache_write, output).",
    ["model", "kind"],
    registry=REGISTRY,
)
COST = Counter(
    "batchwise_cost_usd",
    "Spend in USD, by tenant and model.",
    ["tenant", "model"],
    registry=REGISTRY,
)
UNPRICED = Counter(
    "batchwise_unpriced_calls",
    "Calls to a model with no known price (cost unknown, not zero).",
    ["model"],
    registry=REGISTRY,
)
SAVED = Gauge(  # a lever can lose money (a packed call that failed): not a counter
    "batchwise_saved_usd",
    "Saving against each task sent alone on its requested model, by lever (may be negative).",
    ["lever"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "batchwise_provider_latency_seconds",
    "Provider call latency.",
    ["provider", "model"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
CACHE_HIT_RATE = Gauge(
    "batchwise_cache_hit_rate",
    "Share of finished tasks answered from cache, since this process started.",
    registry=REGISTRY,
)


def _hit_rate() -> float:
    hits = TASKS.labels("cache_hit")._value.get()
    answered = TASKS.labels("answered")._value.get()
    total = hits + answered
    return float(hits / total) if total else 0.0


CACHE_HIT_RATE.set_function(_hit_rate)


def observe_call(record: CallRecord) -> None:
    """Count a call record that was just written."""
    CALLS.labels(record.provider, record.model, record.status).inc()
    if record.status == "adjustment":  # a credit: a Prometheus counter cannot go down
        return
    if record.status == "error":
        code = (record.error or "error").split(":", 1)[0]
        ERRORS.labels(record.provider, code).inc()
        return
    BATCH_SIZE.observe(record.batch_size)
    LATENCY.labels(record.provider, record.model).observe(record.latency_ms / 1000)
    usage = record.usage
    uncached = max(usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens, 0)
    for kind, count in (
        ("input", uncached),
        ("cached_input", usage.cached_input_tokens),
        ("cache_write", usage.cache_write_tokens),
        ("output", usage.output_tokens),
    ):
        if count:
            TOKENS.labels(record.model, kind).inc(count)
    if record.cost_usd is None:
        UNPRICED.labels(record.model).inc()
    else:
        COST.labels(record.tenant, record.model).inc(float(record.cost_usd))


def observe_saving(saving: Saving) -> None:
    """Count a saving record that was just written."""
    if saving.saved_nusd:
        SAVED.labels(saving.lever).inc(saving.saved_nusd / 1e9)
    if saving.lever == "cache":
        TASKS.labels("cache_hit").inc(saving.tasks)
    elif saving.lever == "packing":
        TASKS.labels("answered").inc(saving.tasks)


def observe_failed(tasks: int) -> None:
    """Count tasks that ended `failed` after their batch gave up."""
    if tasks > 0:
        TASKS.labels("failed").inc(tasks)


def observe_batch(model: str) -> None:
    BATCHES.labels(model).inc()


_served: set[int] = set()
_lock = threading.Lock()


def serve(port: int, host: str = "0.0.0.0") -> bool:
    """Serve `/metrics` on `port` in a background thread, once per port per process."""
    with _lock:
        if port in _served:
            return False
        start_http_server(port, addr=host, registry=REGISTRY)
        _served.add(port)
    logger.info("metrics on http://%s:%d/metrics", host, port)
    return True
