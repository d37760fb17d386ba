"""Jobs left locked by a worker that is known to be dead.

A running job is marked by an in-progress key, a lease its worker renews (heartbeat.py), so the
jobs of a worker that was killed wait for the lease to run out before another worker may run them.
Where the caller knows no live worker can be running them (the embedded server of `batchwise
run`, with no other run attached), the marks can go at once: every batch job is idempotent.
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

CHUNK = 500


async def release_dead_jobs(redis: Redis, queue_name: str) -> int:
    """Clear the in-progress marks of the jobs queued on `queue_name`; returns how many there
    were. Only for a queue no live worker is consuming."""
    released = 0
    job_ids = await redis.zrange(queue_name, 0, -1)
    for start in range(0, len(job_ids), CHUNK):
        keys = [in_progress_key_prefix + j.decode() for j in job_ids[start : start + CHUNK]]
        released += int(await redis.delete(*keys))
    return released
