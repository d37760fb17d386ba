"""Running and stopping an arq worker in-process, with a drain that keeps its shutdown hook.

arq's own `Worker.close()` cancels the jobs in flight and then awaits them without
`return_exceptions`, so a job caught mid-flight (a cron tick, typically) raises CancelledError out
of `close()`: `on_shutdown` never runs, provider clients stay open, and `batchwise run` ended in a
traceback. Here the worker stops taking jobs, the jobs in flight get a grace period to finish,
what is left is cancelled (every job is idempotent; a cancelled batch reruns), then it closes.

A worker also rides out a Redis outage (`DurableWorker`): its Redis client waits and reconnects
(pipeline/state/reconnect.py), the jobs it holds carry on, and its jobs are leased, not locked for
the job timeout (heartbeat.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from arq import Worker
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from redis.commands.core import AsyncScript
from redis.exceptions import WatchError

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.state.reconnect import LOST, OutageRetry, retry_policy, safe_url
from workers.heartbeat import TAKE_LEASE, Heartbeat
from workers.pickup import PromptPickup
from workers.settings import worker_settings

logger = logging.getLogger("batchwise.worker")
CLOSE_WAIT_S = 3.0  # how long a closing worker waits for a lost Redis


class DurableWorker(Worker):
    """arq's worker with leased jobs (a heartbeat) that keeps polling through a Redis outage.

    Its pool's retry policy waits out an outage inside each command; what still escapes (a
    connection lost while arq watches a key) must not end the worker. Jobs are claimed by one
    script rather than arq's optimistic transaction.
    """

    def __init__(self, *args: Any, heartbeat_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_progress_timeout_s = heartbeat_s  # the lease; Heartbeat renews it
        self.heartbeat = Heartbeat(self, heartbeat_s)
        self._take_script: AsyncScript | None = None

    async def _take(self, *, keys: list[str], args: list[str | int]) -> int:
        if self._take_script is None:
            self._take_script = self.pool.register_script(TAKE_LEASE)
        return int(await self._take_script(keys=keys, args=args))

    async def async_run(self) -> None:
        beat = asyncio.create_task(self.heartbeat.run())
        try:
            await super().async_run()
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    async def close(self) -> None:
        """arq's close, except that a Redis still gone at shutdown does not hold the exit (the
        health key is left to expire)."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values())
        with contextlib.suppress(TimeoutError, *LOST):
            await asyncio.wait_for(self.pool.delete(self.health_check_key), CLOSE_WAIT_S)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (WatchError, *LOST):
            logger.debug("poll interrupted by a lost Redis connection", exc_info=True)
            await asyncio.sleep(self.poll_delay_s)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start of each job, claiming it with its lease and giving the job slot back when
        the claim fails or the connection is lost mid-claim (arq's own would leak the slot)."""
        for job_id_b in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            job_id = job_id_b.decode()
            started = False
            try:
                started = await self._claim(job_id)
            finally:
                if not started:
                    self.job_counter -= 1
                    self.sem.release()

    async def take_lease(self, job_id: str) -> int:
        """Take the job's lease if nobody holds it and it is due (not finished, not deferred):
        one script, one round trip (arq's WATCH / EXISTS / ZSCORE / MULTI / PSETEX / EXEC is
        four). Returns the job's queue score, or 0 when the lease was not taken."""
        return await self._take(
            keys=[in_progress_key_prefix + job_id, self.queue_name],
            args=[job_id, timestamp_ms(), int(self.in_progress_timeout_s * 1000)],
        )

    async def _claim(self, job_id: str) -> bool:
        here = self.tasks.get(job_id)
        if here is not None and not here.done():
            return False  # running here already: its lease ran out while Redis was away
        score = await self.take_lease(job_id)
        if not score:
            return False  # running elsewhere, finished, or deferred by another worker
        task = self.loop.create_task(self.run_job(job_id, int(score)))
        task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[job_id] = task
        return True


class BatchWorker(PromptPickup, DurableWorker):
    """The worker `batchwise worker` and `batchwise run` use: leased jobs, and a queued batch
    starts as soon as a slot is free (pickup.py)."""


def in_process_worker(
    settings: Settings, redis: ArqRedis, *, poll_delay: float | None = None, **overrides: Any
) -> DurableWorker:
    """A worker on an existing pool that leaves signals to its host (the CLI, a test)."""
    options = worker_settings(settings)
    options.pop("redis_settings")
    options.update(overrides)
    if poll_delay is not None:
        options["poll_delay"] = poll_delay
    return BatchWorker(
        **options,
        redis_pool=redis,
        handle_signals=False,
        heartbeat_s=settings.worker_heartbeat_s,
    )


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
    policy = retry_policy(settings, "worker", give_up_s=None, wait_at_start=True)
    redis = await create_pool(arq_redis_settings(settings, policy))
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


def arq_redis_settings(settings: Settings, policy: OutageRetry) -> RedisSettings:
    """arq's connection settings for REDIS_URL with `policy` on every connection."""
    try:
        base = RedisSettings.from_dsn(settings.redis_url or "")
    except ValueError as exc:
        url = safe_url(settings.redis_url or "")
        raise ConfigError(f"REDIS_URL {url!r} is not a Redis URL: {exc}") from None
    base.retry = policy
    base.retry_on_error = list(LOST)
    base.conn_retries = 0  # the policy does the waiting
    return base
