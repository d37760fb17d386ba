"""Running and stopping an arq worker in-process, with a drain that keeps its shutdown hook.

arq's own `Worker.close()` cancels the jobs in flight and then awaits them without
`return_exceptions`, so a job caught mid-flight (a cron tick, typically) raises CancelledError out
of `close()`: `on_shutdown` never runs, provider clients stay open, and `batchwise run` ended in a
traceback. Here the worker stops taking jobs, the jobs in flight get a grace period to finish,
what is left is cancelled (every job is idempotent; a cancelled batch reruns), then it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from arq import Worker
from arq.connections import ArqRedis

from pipeline.config import Settings

from .pickup import PromptWorker
from .settings import worker_settings

logger = logging.getLogger("batchwise.worker")


def in_process_worker(
    settings: Settings, redis: ArqRedis, *, poll_delay: float | None = None, **overrides: Any
) -> Worker:
    """A worker on an existing pool that leaves signals to its host (the CLI, a test)."""
    options = worker_settings(settings)
    options.pop("redis_settings")
    options.update(overrides)
    if poll_delay is not None:
        options["poll_delay"] = poll_delay
    return PromptWorker(**options, redis_pool=redis, handle_signals=False)


async def stop(
    worker: Worker,
    run_task: asyncio.Task[Any],
    grace_s: float,
    hurry: asyncio.Event | None = None,
) -> None:
    """Stop taking jobs, drain those in flight for up to `grace_s` (or until `hurry` is set),
    cancel the rest, close."""
    run_task.cancel()
    await asyncio.gather(run_task, return_exceptions=True)
    late = {t for t in worker.tasks.values() if not t.done()}
    if late:
        late = await _drain(late, grace_s, hurry)
        if late:
            logger.warning("shutdown: cancelling %d job(s) still running", len(late))
        for task in late:
            task.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    worker.tasks.clear()  # all done: close() must not re-raise their outcomes
    await worker.close()


async def _drain(
    tasks: set[asyncio.Task[Any]], grace_s: float, hurry: asyncio.Event | None
) -> set[asyncio.Task[Any]]:
    """Wait for `tasks` until the grace period ends or `hurry` is set; return the unfinished."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    hurried = asyncio.ensure_future(hurry.wait()) if hurry is not None else None
    pending: set[asyncio.Future[Any]] = set(tasks)
    try:
        while pending and (remaining := deadline - loop.time()) > 0:
            waiting = pending if hurried is None else {*pending, hurried}
            done, _ = await asyncio.wait(
                waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if hurried is not None and hurried in done:
                break
            pending -= done
    finally:
        if hurried is not None:
            hurried.cancel()
    return {t for t in tasks if not t.done()}


@contextlib.asynccontextmanager
async def running(worker: Worker, grace_s: float) -> AsyncIterator[Worker]:
    """Run `worker` in this event loop for the body of the block, then `stop` it."""
    run_task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        await stop(worker, run_task, grace_s)


async def serve(settings: Settings) -> None:
    """`batchwise worker`: run until SIGINT or SIGTERM, drain for `worker_drain_s` (a second
    signal cancels the jobs still running; they rerun elsewhere), close."""
    from arq.connections import RedisSettings, create_pool

    redis = await create_pool(RedisSettings.from_dsn(settings.redis_url or ""))
    worker = in_process_worker(settings, redis)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    run_task = asyncio.create_task(worker.async_run())
    signalled = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({run_task, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            logger.info(
                "shutdown: draining jobs in flight (up to %gs; signal again to cancel them)",
                settings.worker_drain_s,
            )
    finally:
        signalled.cancel()
        stopping.clear()  # a second signal cuts the drain short
        await stop(worker, run_task, settings.worker_drain_s, hurry=stopping)
    crash = None if run_task.cancelled() else run_task.exception()
    if crash is not None:
        raise crash
