"""arq WorkerSettings, built from batchwise's settings at start-up."""

from __future__ import annotations

from typing import Any

from arq import func
from arq.connections import RedisSettings

from pipeline.config.loading import load_settings
from pipeline.config.settings import Settings
from workers.cron import cron_jobs as batch_api_cron_jobs
from workers.heartbeat import close_leases, lease_job, open_leases, release_job
from workers.jobs import process_batch, shutdown, startup


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `arq.Worker` (one arq job per packed batch)."""
    if not settings.redis_url:
        raise ValueError("REDIS_URL must be set for a worker")
    return {
        "functions": [
            func(process_batch, timeout=settings.job_timeout_s, max_tries=settings.job_max_tries)
        ],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": settings.queue_name,
        "max_jobs": settings.worker_max_jobs,
        "poll_delay": settings.worker_poll_s,
        "job_timeout": settings.job_timeout_s,
        "max_tries": settings.job_max_tries,
        # none: a batch's record says whether it is done, and recover_batches can re-enqueue
        # at once a batch whose job arq gave up on (timeout)
        "keep_result": 0,
        "ctx": {"settings": settings},
        "cron_jobs": batch_api_cron_jobs(settings),
    }


async def leased_startup(ctx: dict[str, Any]) -> None:
    await startup(ctx)
    await open_leases(ctx, ctx["settings"].worker_heartbeat_s)


async def leased_shutdown(ctx: dict[str, Any]) -> None:
    await close_leases(ctx)
    await shutdown(ctx)


def arq_settings() -> dict[str, Any]:
    """What `arq workers.WorkerSettings` runs, read from the environment (and ./batchwise.toml)
    when arq asks for it, never when a module is imported. Its jobs are leased (heartbeat.py)
    as `batchwise worker`'s are."""
    settings = load_settings()
    if not settings.redis_url:
        settings = settings.model_copy(update={"redis_url": "redis://localhost:6379"})
    return {
        **worker_settings(settings),
        "on_startup": leased_startup,
        "on_shutdown": leased_shutdown,
        "on_job_start": lease_job,
        "on_job_end": release_job,
    }
