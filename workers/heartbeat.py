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
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from redis.exceptions import WatchError

from pipeline.state.reconnect import LOST


class LeasingWorker(Protocol):
    """What the heartbeat needs of a worker: its running jobs, its pool, and taking a lease."""

    tasks: dict[str, asyncio.Task[Any]]

    @property
    def pool(self) -> ArqRedis: ...

    async def take_lease(self, job_id: str) -> int: ...


logger = logging.getLogger("batchwise.worker")


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
