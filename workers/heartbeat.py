"""Job leases: a worker's heartbeat is the lease on each job it runs.

arq marks a running job with an in-progress key that lives for the job timeout (300 s + 10 s by
default): a worker killed mid-call left its batches locked for five minutes, and so did in-progress
keys that survived a Redis restart in the AOF. Here the key is a short lease instead
(`worker_heartbeat_s`, 30 s by default) that a live worker renews every third of it for every job
it is still running. When a worker dies its leases run out, and the next poll of any other worker
finds the job in the queue with no in-progress key and runs it at once: the queue is the sweep,
the lease the heartbeat. A long provider call keeps its worker renewing, so it still has the whole
job timeout to finish. A rerun is harmless: the stored-answer step makes each batch's effects
happen once (one result per task, one ledger record per call).

`batchwise worker` runs `DurableWorker` (lifecycle.py), whose heartbeat this is. Under arq's own
CLI (`arq workers.WorkerSettings`) the worker is arq's: there the jobs' start and end hooks
(`lease_job`, `release_job`) keep the same leases (`HookedJobs`), without the outage handling of
`DurableWorker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from redis.commands.core import AsyncScript
from redis.exceptions import WatchError

from pipeline.state.reconnect import LOST


class LeasingWorker(Protocol):
    """What the heartbeat needs of a worker: its running jobs, its pool, and taking a lease."""

    tasks: dict[str, asyncio.Task[Any]]

    @property
    def pool(self) -> ArqRedis: ...

    async def take_lease(self, job_id: str) -> int: ...


logger = logging.getLogger("batchwise.worker")

TAKE_LEASE = """
-- KEYS: the job's in-progress key, the queue;  ARGV: job id, now ms, lease ms
-- Returns the job's queue score once this worker holds its lease, else 0.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local score = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]))
if not score or score > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
return score
"""


class Heartbeat:
    """Renews the leases of the jobs `worker` is running, every `lease_s / 3`."""

    def __init__(self, worker: LeasingWorker, lease_s: float) -> None:
        self.worker = worker
        self.lease_ms = max(1, int(lease_s * 1000))

    @property
    def tick_s(self) -> float:
        return self.lease_ms / 3000

    def running(self) -> list[str]:
        return [job_id for job_id, task in self.worker.tasks.items() if not task.done()]

    async def renew(self) -> int:
        """Extend the lease of every job still running here; returns how many were extended.
        A lease that is gone is taken again only if the job is still due: one that ran out
        during a Redis outage comes back, one arq released (job done or deferred) stays gone."""
        running = self.running()
        if not running:
            return 0
        async with self.worker.pool.pipeline(transaction=False) as pipe:
            for job_id in running:
                pipe.pexpire(in_progress_key_prefix + job_id, self.lease_ms)
            flags = await pipe.execute()
        extended = sum(bool(flag) for flag in flags)
        for job_id, flag in zip(running, flags, strict=True):
            if not flag and await self.worker.take_lease(job_id):
                extended += 1
        return extended

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.renew()
            except (WatchError, *LOST):  # Redis gone for good (the client gave up): next tick
                logger.debug("lease renewal failed", exc_info=True)


class HookedJobs:
    """The jobs arq's own worker runs here, known from its job hooks: what `Heartbeat` needs
    to lease them (arq's worker sets their in-progress keys for the job timeout)."""

    def __init__(self, pool: ArqRedis, queue_name: str, lease_s: float) -> None:
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self._pool = pool
        self.queue_name = queue_name
        self.lease_ms = max(1, int(lease_s * 1000))
        self._take: AsyncScript = pool.register_script(TAKE_LEASE)

    @property
    def pool(self) -> ArqRedis:
        return self._pool

    async def started(self, job_id: str) -> None:
        """A job started in this task: its in-progress key becomes a lease."""
        task = asyncio.current_task()
        if task is not None:
            self.tasks[job_id] = task
        await self._pool.pexpire(in_progress_key_prefix + job_id, self.lease_ms)

    def ended(self, job_id: str) -> None:
        self.tasks.pop(job_id, None)

    async def take_lease(self, job_id: str) -> int:
        keys = [in_progress_key_prefix + job_id, self.queue_name]
        return int(await self._take(keys=keys, args=[job_id, timestamp_ms(), self.lease_ms]))


async def open_leases(ctx: dict[str, Any], lease_s: float) -> None:
    """At start-up of arq's own worker: lease its jobs (`lease_job`, `release_job`)."""
    jobs = HookedJobs(ctx["redis"], ctx["settings"].queue_name, lease_s)
    ctx["leases"] = jobs
    ctx["heartbeat"] = asyncio.create_task(Heartbeat(jobs, lease_s).run())


async def close_leases(ctx: dict[str, Any]) -> None:
    beat = ctx.pop("heartbeat", None)
    if beat is not None:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat


async def lease_job(ctx: dict[str, Any]) -> None:
    """arq's `on_job_start`: the job's in-progress key is now a lease its heartbeat renews."""
    await ctx["leases"].started(ctx["job_id"])


async def release_job(ctx: dict[str, Any]) -> None:
    """arq's `on_job_end`."""
    ctx["leases"].ended(ctx["job_id"])
