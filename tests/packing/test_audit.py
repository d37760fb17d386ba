"""Packing audit: sampled items re-run alone, agreement recorded, batch sizes lowered."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli.main import main
from pipeline.packing.audit import agreement, audit_report, audited
from pipeline.packing.selection import batch_limit
from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker


def test_sample_is_stable_and_close_to_the_share() -> None:
    keys = [f"item-{i}" for i in range(4000)]
    picked = [k for k in keys if audited(k, 0.05)]
    assert picked == [k for k in keys if audited(k, 0.05)]
    assert 150 < len(picked) < 250
    assert not any(audited(k, 0.0) for k in keys[:100])
    assert all(audited(k, 1.0) for k in keys[:100])


def test_agreement() -> None:
    assert agreement("Positive.", " positive") == 1.0
    assert agreement("positive", "negative") == 0.0
    assert agreement({"a": 1, "b": 2}, {"b": 2, "a": 1}) == 1.0
    long_a = "the order ships within two business days from the warehouse"
    long_b = "the order ships within three business days from the warehouse"
    assert 0.7 < agreement(long_a, long_b) < 1.0


def write_jobs(path: Path, prompts: list[str]) -> Path:
    lines = [{"id": f"q{i}", "task_type": "faq", "prompt": p} for i, p in enumerate(prompts)]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def packed_sizes(bodies: list[dict[str, Any]]) -> list[int]:
    sizes = []
    for body in bodies:
        content = body["messages"][-1]["content"]
        if content.startswith('{"1":'):
            sizes.append(len(orjson.loads(content)))
    return sizes


async def test_audit_lowers_the_batch_size_when_packed_answers_degrade(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(
        redis_url, fake, audit_share=1.0, audit_min_samples=8, audit_threshold=0.9
    )
    fake.add_faults({"kind": "degrade", "times": 1})
    prompts = [f"question {i}" for i in range(10)]
    async with pipeline_client(settings) as client:
        async with running_worker(settings):
            submission = await client.submit_file(write_jobs(tmp_path / "a.jsonl", prompts))
            await client.wait(submission.run_id, timeout_s=20)
            results = [r async for r in client.results(submission.run_id)]
        redis, keys = client.pipeline.redis, client.pipeline.keys
        assert await batch_limit(redis, keys, "faq") == 5
        rows, events = await audit_report(redis, keys, settings)

    # the degraded packed answers never reached a task: audited items get the alone answer
    assert [r.output for r in results] == [expected_output(p) for p in prompts]
    assert packed_sizes(fake.stats()["bodies"]) == [10]
    (faq,) = rows
    assert (faq.task_type, faq.configured_max, faq.current_max) == ("faq", 10, 5)
    assert faq.by_size[10][0] == 10 and faq.by_size[10][1] < 0.2
    assert len(events) == 1
    assert events[0]["task_type"] == "faq"
    assert (events[0]["from_items"], events[0]["to_items"]) == (10, 5)

    # the packer now builds faq batches of at most 5
    fake.reset()
    quiet = settings.model_copy(update={"audit_share": 0.0})
    more = [f"another question {i}" for i in range(10)]
    async with pipeline_client(quiet) as client, running_worker(quiet):
        submission = await client.submit_file(write_jobs(tmp_path / "b.jsonl", more))
        await client.wait(submission.run_id, timeout_s=20)
        results = [r async for r in client.results(submission.run_id)]
    assert packed_sizes(fake.stats()["bodies"]) == [5, 5]
    assert {r.batch_size for r in results} == {5}


async def test_agreeing_packed_answers_keep_the_batch_size(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, audit_share=1.0, audit_min_samples=8)
    prompts = [f"question {i}" for i in range(10)]
    async with pipeline_client(settings) as client, running_worker(settings):
        submission = await client.submit_file(write_jobs(tmp_path / "a.jsonl", prompts))
        await client.wait(submission.run_id, timeout_s=20)
        results = [r async for r in client.results(submission.run_id)]
        redis, keys = client.pipeline.redis, client.pipeline.keys
        assert await batch_limit(redis, keys, "faq") is None
        rows, events = await audit_report(redis, keys, settings)
        ledger = [record async for record in client.pipeline.ledger.records()]
    assert rows[0].by_size == {10: (10, 1.0)} and events == []
    # one packed call and ten alone re-runs, each recorded and charged to its task
    assert fake.stats()["requests"] == 11
    assert sorted(r.batch_size for r in ledger) == [1] * 10 + [10]
    total = sum(float(r.cost_usd or 0) for r in ledger)
    assert abs(sum(r.cost_usd or 0 for r in results) - total) < 1e-9


async def test_a_rerun_batch_reuses_its_audit_calls(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake, audit_share=1.0)
    tasks = [{"id": f"q{i}", "task_type": "faq", "prompt": f"question {i}"} for i in range(3)]
    async with pipeline_client(settings) as client:
        p = client.pipeline
        await client.submit(tasks, complete=True)
        (batch_id,) = await p.packer.flush()
        loaded = await p.executor.load(batch_id)
        assert loaded is not None
        batch, items = loaded
        # a worker audits an item and dies before answering it; the job runs again
        first = await p.executor.audit.check(batch, items[0], "a packed answer", 3)
        again = await p.executor.audit.check(batch, items[0], "a packed answer", 3)
        records = [r async for r in p.ledger.records()]
        rows, _ = await audit_report(p.redis, p.keys, settings)
    assert first == again == expected_output("question 0")
    assert fake.stats()["requests"] == 1
    assert [r.batch_size for r in records] == [1]
    assert rows[0].by_size == {3: (1, 0.0)}  # recorded once


async def test_audit_command_reports_agreement_and_limit_changes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(redis_url)
    async with pipeline_client(settings) as client:
        redis, keys = client.pipeline.redis, client.pipeline.keys
        await redis.hset(keys.audit_stats("faq"), mapping={"10:n": 10, "10:sum": 4.0})
        await redis.sadd(keys.audit_types(), "faq")
        await redis.hset(keys.packing_limits(), "faq", 5)
        event = {
            "task_type": "faq",
            "from_items": 10,
            "to_items": 5,
            "agreement": 0.4,
            "samples": 10,
            "threshold": 0.9,
            "at": 0,
        }
        await redis.rpush(keys.packing_events(), orjson.dumps(event))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BATCHWISE_KEY_PREFIX", settings.key_prefix)
    assert await asyncio.to_thread(main, ["audit"]) == 0
    shown = capsys.readouterr().out
    assert "10 → 5" in shown and "40.0%" in shown
    assert "faq: max batch size 10 → 5 (agreement 40.0% over 10 audits" in shown
