"""Redis load: the commands a task costs, counted by the server (INFO commandstats counts the
commands a Lua script runs as well as the script call itself). bench/redis_ops.py measures the
full picture; these hold the line on the parts that must stay cheap."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from pipeline.core.client import BatchwiseClient
from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker

OWN = {"cmdstat_info", "cmdstat_config|resetstat"}  # this test's own reads


async def commands(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(row["calls"]) for name, row in stats.items() if name not in OWN)


async def per_task(
    redis_url: str, client: BatchwiseClient, tasks: list[dict[str, Any]]
) -> tuple[float, list[Any]]:
    """Commands per task of one run of `tasks`, after a warm-up run (scripts loaded,
    connections open), and the run's results."""
    warm = [{**t, "id": f"w-{t['id']}", "prompt": f"warm {t['prompt']}"} for t in tasks[:20]]
    await client.wait(await client.submit(warm, complete=True), timeout=60)
    probe = Redis.from_url(redis_url)
    try:
        await probe.config_resetstat()
        run_id = await client.submit(tasks, complete=True)
        await client.wait(run_id, timeout=60)
        total = await commands(probe)
    finally:
        await probe.aclose()
    return total / len(tasks), [r async for r in client.results(run_id)]


async def test_a_packed_file_costs_few_redis_commands_per_task(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, max_items={"faq": 25})
    tasks = [
        {"id": f"f{i}", "task_type": "faq", "system": "Be brief.", "prompt": f"question {i}?"}
        for i in range(200)
    ]
    async with pipeline_client(settings) as client, running_worker(settings, poll_delay=None):
        cost, results = await per_task(redis_url, client, tasks)
    assert [r.output for r in results] == [expected_output(t["prompt"]) for t in tasks]
    assert {r.batch_size for r in results} == {25}
    assert cost <= 18, f"{cost:.1f} commands per task"


async def test_a_batch_sent_alone_costs_few_redis_commands_per_task(
    redis_url: str, fake: FakeProvider
) -> None:
    """Items that go alone (packing them would cost more) are one call each, but one batch
    record, one answer write and one set of savings for the batch."""
    settings = make_settings(redis_url, fake, pack_only_when_cheaper=True)
    tasks = [
        {"id": f"a{i}", "task_type": "short_answer", "system": "Be brief.", "prompt": f"q {i}"}
        for i in range(100)
    ]
    async with pipeline_client(settings) as client, running_worker(settings, poll_delay=None):
        cost, results = await per_task(redis_url, client, tasks)
    assert [r.output for r in results] == [expected_output(t["prompt"]) for t in tasks]
    assert {r.batch_size for r in results} == {1}
    assert cost <= 60, f"{cost:.1f} commands per task"


async def test_an_idle_flush_is_one_command(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with pipeline_client(settings) as client:
        redis = client.pipeline.redis
        before = await commands(redis)
        assert await client.pipeline.packer.flush() == []
        assert await commands(redis) - before == 1


async def test_a_task_alone_on_its_item_holds_its_answer_and_twins_share_one(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake)
    tasks = [
        {"id": "solo", "task_type": "faq", "prompt": "where is the station?"},
        {"id": "twin-a", "task_type": "faq", "prompt": "when does it open?"},
        {"id": "twin-b", "task_type": "faq", "prompt": "when does it open?"},
    ]
    async with pipeline_client(settings) as client, running_worker(settings, poll_delay=None):
        run_id = await client.submit(tasks, complete=True)
        await client.wait(run_id, timeout=30)
        p = client.pipeline
        stored = await p.redis.hgetall(p.keys.run_results(run_id))
        results = {r.id: r async for r in client.results(run_id)}
    assert not stored[b"solo"].startswith(b"@")  # the answer itself
    assert stored[b"twin-a"].startswith(b"@") and stored[b"twin-b"].startswith(b"@")
    assert results["solo"].output == expected_output("where is the station?")
    assert results["twin-a"].output == results["twin-b"].output
    assert results["twin-a"].output == expected_output("when does it open?")
    shares = [results["twin-a"].cost_usd, results["twin-b"].cost_usd]
    assert all(s is not None and s > 0 for s in shares)
