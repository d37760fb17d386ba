"""Enqueueing batch jobs: many arq jobs in one round trip, each once."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from pipeline.config.settings import Settings

# arq's enqueue_job for many jobs in one round trip (it takes four per job): a job whose id is
# queued, running or has a kept result is left alone, as arq does
_ENQUEUE = """
-- KEYS: the queue, then per job its job key and result key
-- ARGV: score (ms), expiry (ms), then per job its id and serialized job
local n = 0
for i = 0, (#KEYS - 1) / 2 - 1 do
  local job, result = KEYS[2 + i * 2], KEYS[3 + i * 2]
  if redis.call('EXISTS', job, result) == 0 then
    redis.call('PSETEX', job, ARGV[2], ARGV[4 + i * 2])
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3 + i * 2])
    n = n + 1
  end
end
return n
"""
ENQUEUE_CHUNK = 200


async def enqueue_batches(ctx: dict[str, Any], batch_ids: list[str]) -> None:
    """One `process_batch` job per batch, and a look at the queue by this worker's free slots."""
    if not batch_ids:
        return
    settings: Settings = ctx["settings"]
    redis: ArqRedis = ctx["redis"]
    script = ctx.get("enqueue_script") or redis.register_script(_ENQUEUE)
    ctx["enqueue_script"] = script
    for start in range(0, len(batch_ids), ENQUEUE_CHUNK):
        now = timestamp_ms()
        keys = [settings.queue_name]
        args: list[int | str | bytes] = [now, redis.expires_extra_ms]
        for batch_id in batch_ids[start : start + ENQUEUE_CHUNK]:
            job_id = f"batch:{batch_id}"
            keys += [job_key_prefix + job_id, result_key_prefix + job_id]
            job = serialize_job(
                "process_batch", (batch_id,), {}, None, now, serializer=redis.job_serializer
            )
            args += [job_id, job]
        await script(keys=keys, args=args)
    if "wake" in ctx:
        ctx["wake"].set()
