"""arq WorkerSettings, built from batchwise's settings at start-up."""

from __future__ import annotations

from typing import Any, ClassVar

from arq import func
from arq.connections import RedisSettings

from pipeline.config.loading import load_settings
from pipeline.config.settings import Settings
from workers.cron import cron_jobs as batch_api_cron_jobs
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
        # short, so recover_batches can re-enqueue a batch whose job arq gave up on (timeout)
        "keep_result": 60,
        "ctx": {"settings": settings},
        "cron_jobs": batch_api_cron_jobs(settings),
    }


class WorkerSettings:
    """For `arq workers.WorkerSettings`; reads the environment when arq imports it."""

    _settings = load_settings()
    functions: ClassVar[list[Any]] = [
        func(process_batch, timeout=_settings.job_timeout_s, max_tries=_settings.job_max_tries)
    ]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(_settings.redis_url or "redis://localhost:6379")
    queue_name = _settings.queue_name
    max_jobs = _settings.worker_max_jobs
    poll_delay = _settings.worker_poll_s
    job_timeout = _settings.job_timeout_s
    max_tries = _settings.job_max_tries
    cron_jobs = batch_api_cron_jobs(_settings)
    keep_result = 60
