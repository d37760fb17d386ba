"""Job pickup: a worker starts queued batches the moment it has a free slot, not at its next
queue poll; batches go on the queue in one round trip, each once."""

from __future__ import annotations

import time
from typing import Any

from arq.connections import RedisSettings, create_pool
from arq.jobs import Job

from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.enqueue import enqueue_batches
from workers.lifecycle import in_process_worker, running
from workers.testing import pipeline_client


async def test_a_freed_slot_starts_the_next_batch_without_waiting_for_the_poll(
    redis_url: str, fake: FakeProvider
) -> None:
    """One job slot, a queue poll of a minute, four batches one after another: each starts as
    the one before it ends (polling alone would take four minutes)."""
    settings = make_settings(redis_url, fake, worker_max_jobs=1, max_items={"faq": 1})
    fake.add_faults({"kind": "latency", "delay_s": 0.2, "times": 4})
    prompts = [f"pickup {i}" for i in range(4)]
    async with pipeline_client(settings) as client:
        worker = in_process_worker(settings, client.pipeline.redis, poll_delay=60)
        async with running(worker, grace_s=5):
            started = time.monotonic()
            run_id = await client.submit(
                [{"id": f"p{i}", "task_type": "faq", "prompt": p} for i, p in enumerate(prompts)],
                complete=True,
            )
            await client.wait(run_id, timeout_s=30)
            elapsed_s = time.monotonic() - started
            results = [r async for r in client.results(run_id)]
    assert [r.output for r in results] == [expected_output(p) for p in prompts]
    assert len({r.batch_id for r in results}) == 4
    assert elapsed_s < 30


async def test_batches_are_enqueued_once_each(redis_url: str) -> None:
    settings = make_settings(redis_url)
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    keys = [f"arq:job:batch:{b}" for b in ("b1", "b2", "b3")]
    try:
        ctx: dict[str, Any] = {"settings": settings, "redis": pool}
        await enqueue_batches(ctx, ["b1", "b2"])
        first = await pool.get(keys[1])
        await enqueue_batches(ctx, ["b2", "b3"])  # b2 is queued already: left alone
        again = await pool.get(keys[1])
        queued = await pool.zrange(settings.queue_name, 0, -1)
        jobs = [await Job(f"batch:{b}", pool).info() for b in ("b1", "b2", "b3")]
        await pool.delete(settings.queue_name, *keys)
    finally:
        await pool.aclose()
    assert sorted(queued) == [b"batch:b1", b"batch:b2", b"batch:b3"]
    assert first is not None and again == first
    assert [(j.function, j.args) for j in jobs if j is not None] == [
        ("process_batch", (b,)) for b in ("b1", "b2", "b3")
    ]
