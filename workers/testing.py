"""An arq worker and a client in the caller's event loop, for tests and benches: the parts of
`pipeline.testing` that need arq."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from arq import Worker
from arq.connections import ArqRedis, RedisSettings, create_pool

from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from workers.lifecycle import in_process_worker, running


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, *, poll_delay: float | None = 0.02
) -> AsyncIterator[Worker]:
    """An arq worker in this event loop, as `batchwise worker` would run it; it polls the queue
    every `poll_delay` seconds (None: the shipped `worker_poll_s`)."""
    pool = await create_pool(RedisSettings.from_dsn(settings.redis_url or ""))
    try:
        worker = in_process_worker(settings, pool, poll_delay=poll_delay)
        async with running(worker, grace_s=5) as started:
            yield started
    finally:
        await pool.aclose()


@contextlib.asynccontextmanager
async def pipeline_client(settings: Settings) -> AsyncIterator[BatchwiseClient]:
    """A client on `settings`' Redis that submits to a worker (`running_worker` or a process)."""
    pool: ArqRedis = await create_pool(RedisSettings.from_dsn(settings.redis_url or ""))
    client = BatchwiseClient(Pipeline(settings, pool))
    try:
        yield client
    finally:
        await client.pipeline.aclose()
        await pool.aclose()
