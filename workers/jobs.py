"""Job functions: the only place a transient error becomes `arq.Retry`."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from arq import Retry

from pipeline.config.loading import load_settings
from pipeline.config.settings import Settings
from pipeline.core.wiring import Pipeline
from pipeline.costs import metrics
from pipeline.errors import TransientError
from pipeline.redaction import redact, redact_logs, secret_values
from workers.cron import batch_api, open_batch_api
from workers.cron import close as close_batch_api
from workers.enqueue import enqueue_batches

logger = logging.getLogger("batchwise.worker")

FLUSH_TICK_S = 0.05
STALE_BATCH_S = 30.0


async def process_batch(ctx: dict[str, Any], batch_id: str) -> int:
    """Run one packed batch; enqueue its retry children."""
    pipeline: Pipeline = ctx["pipeline"]
    settings: Settings = ctx["settings"]
    last_try = ctx["job_try"] >= settings.job_max_tries
    if await batch_api(ctx).divert(batch_id):  # answered later by a provider batch
        return 0
    ceiling = min(settings.backoff_cap_s, settings.backoff_base_s * 2 ** ctx["job_try"])
    try:
        children = await pipeline.executor.run(batch_id, last_try=last_try, attempt=ctx["job_try"])
    except TransientError as exc:
        defer = exc.retry_after_s if exc.retry_after_s is not None else random.uniform(0, ceiling)
        logger.warning("batch %s: %s; retrying in %.1fs", batch_id, exc, defer)
        raise Retry(defer=defer) from None
    except Exception as exc:  # a bug or a Redis hiccup: retry, and never leave tasks unanswered
        if not last_try:
            logger.exception("batch %s failed unexpectedly; retrying", batch_id)
            raise Retry(defer=random.uniform(0, ceiling)) from None
        logger.exception("batch %s failed on its last try; failing its tasks", batch_id)
        message = redact(f"{type(exc).__name__}: {exc}", secret_values(settings))
        await pipeline.executor.fail_batch(batch_id, "internal_error", message)
        return 0
    await enqueue_batches(ctx, children)
    return len(children)


async def _flusher(ctx: dict[str, Any]) -> None:
    """Turns full and lingering groups into batch jobs, every tick, in every worker."""
    pipeline: Pipeline = ctx["pipeline"]
    last_sweep = 0.0
    while True:
        try:
            await pipeline.packer.flush(sink=lambda made: enqueue_batches(ctx, made))
            if time.monotonic() - last_sweep > STALE_BATCH_S / 2:
                last_sweep = time.monotonic()
                await recover_batches(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep flushing through a passing Redis hiccup
            logger.exception("flusher tick failed")
            await asyncio.sleep(1)
        await asyncio.sleep(FLUSH_TICK_S)


async def recover_batches(ctx: dict[str, Any]) -> None:
    """Re-enqueue open batches whose job was lost (a flusher died between take and enqueue).
    arq ignores an enqueue whose job id is queued, running or has a kept result."""
    pipeline: Pipeline = ctx["pipeline"]
    cutoff_ms = (time.time() - STALE_BATCH_S) * 1000
    stale = await pipeline.redis.zrangebyscore(pipeline.keys.open_batches(), "-inf", cutoff_ms)
    await enqueue_batches(ctx, [b.decode() for b in stale])


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or load_settings()
    ctx["settings"] = settings
    redact_logs(secret_values(settings))
    ctx["pipeline"] = Pipeline(settings, ctx["redis"])
    ctx["warm"] = asyncio.create_task(ctx["pipeline"].cache.warm())  # the model, off the loop
    open_batch_api(ctx)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.metrics_host)
    ctx["flusher"] = asyncio.create_task(_flusher(ctx))
    logger.info("worker ready: providers %s", ", ".join(p.name for p in ctx["pipeline"].providers))


async def shutdown(ctx: dict[str, Any]) -> None:
    for task in (ctx.get("flusher"), ctx.get("warm")):
        if task is None:
            continue
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the rest of the shutdown still closes what it holds
            logger.warning("worker shutdown: %s", redact(str(exc), secret_values(ctx["settings"])))
    await close_batch_api(ctx)
    if "pipeline" in ctx:
        await ctx["pipeline"].aclose()
