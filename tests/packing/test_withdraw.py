"""Withdrawing a run's pending tasks: only this run's, only this tenant's, only what no batch
has taken; an item another run also waits on stays queued for it."""

from __future__ import annotations

import pytest

from pipeline.core.wiring import Pipeline
from pipeline.packing.withdraw import withdraw_pending
from pipeline.testing import make_settings
from workers.testing import pipeline_client

CANCELLED = {"code": "batch_cancelled", "message": "withdrawn"}


async def _pending(p: Pipeline) -> list[str]:
    """The item keys waiting in any group."""
    groups = [g.decode() for g in await p.redis.zrange(p.keys.groups(), 0, -1)]
    entries = [e for g in groups for e in await p.redis.lrange(p.keys.group_items(g), 0, -1)]
    return sorted(e.decode().split("|")[0] for e in entries)


@pytest.mark.parametrize("chunk", [1000, 1])  # a group in one script call, or one at a time
async def test_only_the_runs_pending_tasks_are_withdrawn(redis_url: str, chunk: int) -> None:
    async with pipeline_client(make_settings(redis_url, linger_ms=600_000)) as client:
        p = client.pipeline
        mine = [
            {"id": "a", "prompt": "alpha"},
            {"id": "s", "prompt": "shared question"},
            {"id": "t", "prompt": "taken", "system": "a group of its own"},
        ]
        await client.submit(mine, run_id="mine")
        await client.submit([{"id": "x", "prompt": "shared question"}], run_id="theirs")
        await client.submit([{"id": "a", "prompt": "alpha", "tenant": "globex"}], run_id="globex")
        for group in [g.decode() for g in await p.redis.zrange(p.keys.groups(), 0, -1)]:
            if (await p.packer.load_group(group))["system"] == "a group of its own":
                (taken,), _ = await p.packer.take(group, "batch-1", full_only=False)
        before = await _pending(p)
        assert len(before) == 3  # alpha twice (two tenants), the shared question once

        assert (
            await withdraw_pending(
                p.redis, p.keys, "mine", "default", CANCELLED, ttl_s=60, chunk=chunk
            )
            == 2
        )

        assert await p.runs.progress("mine") == (2, 3, True)  # "t" is in a batch: it runs
        records = {r["id"]: r for r in await p.runs.written("mine", ["a", "s", "t"])}
        assert set(records) == {"a", "s"}
        assert all(r["status"] == "failed" and r["error"] == CANCELLED for r in records.values())
        after = await _pending(p)
        assert len(after) == 2  # globex's alpha and the question "theirs" still waits on
        again = await withdraw_pending(
            p.redis, p.keys, "mine", "default", CANCELLED, ttl_s=60, chunk=chunk
        )
        assert again == 0 and await _pending(p) == after

        # answering what is left reaches exactly the tasks still waiting on it
        answered = [(key, {"status": "ok", "output": key, "batch_id": "b"}) for key in after]
        assert await p.runs.finish_items([*answered, (taken, {**answered[0][1], "output": "t"})])
        assert await p.runs.progress("theirs") == (1, 1, True)
        assert await p.runs.progress("globex") == (1, 1, True)
        assert await p.runs.progress("mine") == (3, 3, True)
        records = {r["id"]: r for r in await p.runs.written("mine", ["a", "s", "t"])}
        assert [records[i]["status"] for i in ("a", "s", "t")] == ["failed", "failed", "ok"]
