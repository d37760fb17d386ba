"""Starting queued batch jobs without waiting for the next queue poll.

arq starts jobs only when it polls the queue (`poll_delay`). In a latency-bound run every job
slot frees after one provider call, so a slot sat idle for half a poll on average: with a 0.5 s
poll and ~1 s calls a worker was idle a third of the time. Here a worker also looks at the
queue the moment one of its slots frees or its own flusher enqueues batches, so the poll only
matters for jobs that other processes enqueue or that wait out a retry delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq import Worker
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

logger = logging.getLogger("batchwise.worker")


class PromptPickup(Worker):
    """Starts queued jobs as soon as the worker has a free slot for them (a base to mix in
    before arq's worker, or a subclass of it).

    `ctx["wake"]` is the event that asks for a look at the queue (the flusher sets it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake = asyncio.Event()
        self.starting = asyncio.Lock()
        self.ctx["wake"] = self.wake

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self.wake.set()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """The base start, for the jobs no worker has taken yet, a slot's worth at a time.

        A running job stays at the head of the queue until it ends, so every look at the queue
        meets every job running anywhere: one round trip sorts them out before any is tried.
        The jobs of a wave start at once, not one after another (64 slots took a second or
        more to fill on a busy machine). One wave at a time (the poll and the pickup may both
        call this): a wave never asks for more slots than are free, so no start waits on the
        slot semaphore for a running job to end.
        """
        async with self.starting:
            await self._start(job_ids)

    async def _start(self, job_ids: list[bytes]) -> None:
        if self.job_counter >= self.max_jobs:
            return
        mine = {job_id for job_id, task in self.tasks.items() if not task.done()}
        todo = [j for j in job_ids if j.decode() not in mine]
        if not todo:
            return
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in todo:
                pipe.exists(in_progress_key_prefix + job_id.decode())
            taken = await pipe.execute()
        todo = [j for j, running in zip(todo, taken, strict=True) if not running]
        while todo and self.job_counter < self.max_jobs:
            free = self.max_jobs - self.job_counter
            wave, todo = todo[:free], todo[free:]
            await asyncio.gather(*(super(PromptPickup, self).start_jobs([j]) for j in wave))

    async def main(self) -> None:
        pickup = asyncio.create_task(self._pickup())
        try:
            await super().main()
        finally:
            pickup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pickup

    async def _pickup(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            free = self.max_jobs - self.job_counter
            if free <= 0 or not self.allow_pick_jobs or self._pool is None:
                continue
            try:  # as arq's poll looks: running jobs are among the first in the queue
                job_ids = await self.pool.zrangebyscore(
                    self.queue_name,
                    min=float("-inf"),
                    max=timestamp_ms(),
                    start=0,
                    num=self.queue_read_limit,
                )
                await self.start_jobs(job_ids)
            except Exception:  # the regular poll carries on; so does this loop
                logger.exception("starting queued jobs failed")
                await asyncio.sleep(1)
