"""arq cron jobs of the batch-API route and nightly runs: thin wrappers on the library.

arq enqueues each cron tick under one job id, so a tick runs once however many workers run;
the library's leases make a tick that overlaps another (or follows a dead worker) safe anyway.
"""

from __future__ import annotations

import logging
from typing import Any

from arq import cron
from arq.cron import CronJob

from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.costs.archive import LedgerArchive
from pipeline.errors import TransientError
from pipeline.nightly.batch_api import BatchApi
from pipeline.nightly.inbox import Nightly
from workers.enqueue import enqueue_batches

logger = logging.getLogger("batchwise.worker")


def open_batch_api(ctx: dict[str, Any]) -> None:
    """Build the worker's batch-API route at start-up (arq copies ctx for every job)."""
    p: Pipeline = ctx["pipeline"]
    ctx["batchapi"] = BatchApi(p.redis, p.settings, p.keys, p.executor)


def batch_api(ctx: dict[str, Any]) -> BatchApi:
    """The worker's batch-API route."""
    route: BatchApi = ctx["batchapi"]
    return route


async def poll_provider_batches(ctx: dict[str, Any]) -> int:
    """Submit pending batches to provider batch APIs and settle the ended ones."""
    try:
        children = await batch_api(ctx).tick()
    except TransientError as exc:
        logger.warning("provider batch poll: %s", exc)
        return 0
    await enqueue_batches(ctx, children)
    return len(children)


async def nightly_inbox(ctx: dict[str, Any]) -> int:
    """Claim new inbox files and finish the complete ones."""
    p: Pipeline = ctx["pipeline"]
    counts = await Nightly(BatchwiseClient(p)).tick()
    return counts["claimed"] + counts["finished"] + counts["failed"]


async def archive_ledger(ctx: dict[str, Any]) -> int:
    """Move ledger entries older than the retention window to the Parquet archive."""
    p: Pipeline = ctx["pipeline"]
    archive = LedgerArchive(p.redis, p.keys, p.settings.archive_dir)
    done = await archive.run(p.settings.ledger_retention_s)
    if done is not None and done.entries:
        logger.info("ledger: %d entries archived in %d file(s)", done.entries, done.files)
    return 0 if done is None else done.entries


async def close(ctx: dict[str, Any]) -> None:
    route = ctx.pop("batchapi", None)
    if route is not None:
        await route.aclose()


def _seconds(every_s: int) -> set[int]:
    step = min(max(1, every_s), 60)
    return set(range(0, 60, step))


def cron_jobs(settings: Settings) -> list[CronJob]:
    """The poller always runs (it is idle without open batches); the inbox job when one is set.

    Their timeout is the batch jobs' own: arq keeps a killed worker's jobs locked for the longest
    function timeout, so a longer one would delay crash recovery of every batch. A tick cut short
    is resumed by the next (settling skips finished batches; leases run out).
    """
    jobs = [
        cron(
            poll_provider_batches,
            second=_seconds(settings.batch_api_poll_s),
            run_at_startup=True,
            timeout=settings.job_timeout_s,
        )
    ]
    if settings.nightly_inbox is not None:
        jobs.append(
            cron(
                nightly_inbox,
                second=_seconds(settings.nightly_poll_s),
                run_at_startup=True,
                timeout=settings.job_timeout_s,
            )
        )
    if settings.ledger_archive_every_s:
        every_min = settings.ledger_archive_every_s // 60
        minutes = {7} if every_min >= 60 else set(range(0, 60, max(1, every_min)))
        jobs.append(cron(archive_ledger, minute=minutes, second=0, timeout=settings.job_timeout_s))
    return jobs
