"""How long withdrawing a cancelled batch's queued lines blocks Redis.

A run of `--tasks` tasks waits in one group (nothing flushes it); then its tasks are withdrawn
the way a cancelled batch's are: in script calls of `--chunk` entries, and, as the baseline in
the same run, in one script call for the whole group. Redis runs one script at a time, so the
longest call is how long every other client (workers, producers, the server) waits.

    python bench/withdraw.py [--tasks 20000] [--chunk 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reports import private_redis

from pipeline.config.loading import load_settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.packing.withdraw import withdraw_pending

CANCELLED = {"code": "batch_cancelled", "message": "withdrawn"}


async def _measure(redis: Redis, tasks: int, chunk: int, prefix: str) -> tuple[float, float]:
    """(longest script call in ms, whole withdrawal in ms) for `tasks` queued tasks."""
    settings = load_settings(env={}, key_prefix=prefix, linger_ms=3_600_000, cache_semantic=False)
    pipeline = Pipeline(settings, redis)
    try:
        client = BatchwiseClient(pipeline)
        batch = [{"id": f"q{i}", "prompt": f"question number {i}"} for i in range(tasks)]
        await client.submit(batch, run_id="batch")
        await redis.slowlog_reset()
        started = time.perf_counter()
        withdrawn = await withdraw_pending(
            redis, pipeline.keys, "batch", "default", CANCELLED, ttl_s=600, chunk=chunk
        )
        whole_ms = (time.perf_counter() - started) * 1000
        assert withdrawn == tasks, (withdrawn, tasks)
        calls = [e for e in await redis.slowlog_get(100_000) if b"EVAL" in e["command"][:8]]
        return max(e["duration"] for e in calls) / 1000, whole_ms
    finally:
        await pipeline.aclose()


async def main(tasks: int, chunk: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with private_redis(Path(tmp)) as redis:
            await redis.config_set("slowlog-log-slower-than", 0)  # every command, timed
            await redis.config_set("slowlog-max-len", 100_000)
            one_ms, one_whole_ms = await _measure(redis, tasks, 10**9, "one")
            chunked_ms, chunked_whole_ms = await _measure(redis, tasks, chunk, "chunked")
    print(f"withdrawing {tasks} queued tasks of one group (timed by Redis's slowlog)")
    print(f"{'':28}{'longest call ms':>16}{'whole ms':>10}")
    print(f"{'one call for the group':28}{one_ms:>16.1f}{one_whole_ms:>10.0f}")
    print(f"{f'calls of {chunk} entries':28}{chunked_ms:>16.1f}{chunked_whole_ms:>10.0f}")
    whole = chunked_whole_ms / one_whole_ms
    print(f"longest block {chunked_ms / one_ms:.2f}x; whole withdrawal {whole:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000, help="entries per script call")
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.chunk))
