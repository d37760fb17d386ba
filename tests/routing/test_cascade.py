"""Cascades: evaluators, and escalation of only the failing items on the fake provider."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config.records import CascadeSpec
from pipeline.errors import ConfigError
from pipeline.routing.cascade import (
    EvalContext,
    build_evaluator,
    evaluate,
    register_evaluator,
)
from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker

CTX = EvalContext(task_type="classification", model="gpt-4o-mini", prompt="p")
SCHEMA = {
    "type": "object",
    "properties": {"order": {"type": "string"}},
    "required": ["order"],
}


def hard_fails_on_mini(output: Any, ctx: EvalContext) -> str | None:
    """A test evaluator: prompts marked 'hard' are judged wrong when the mini model answers."""
    if "hard" in ctx.prompt and ctx.model == "gpt-4o-mini":
        return "too hard for the mini model"
    return None


def check(spec: str | dict[str, Any], output: Any, ctx: EvalContext = CTX) -> str | None:
    return evaluate([build_evaluator(spec)], output, ctx)


def test_json_evaluator() -> None:
    assert check("json", {"a": 1}) is None
    assert check("json", '{"a": 1}') is None
    assert check("json", "[1, 2") == "json: output is not valid JSON"


def test_schema_evaluator_uses_the_tasks_schema_or_its_own() -> None:
    with_schema = EvalContext("extraction", "m", "p", response_schema=SCHEMA)
    assert check("schema", {"order": "55120"}, with_schema) is None
    assert check("schema", '{"order": "55120"}', with_schema) is None
    failed = check("schema", {"order": 55120}, with_schema)
    assert failed is not None and "does not conform" in failed
    assert check("schema", {"x": 1}, CTX) is None  # no schema to check against
    own = {"kind": "schema", "schema": SCHEMA}
    assert check(own, {"order": "1"}) is None
    assert check(own, {}) is not None
    with pytest.raises(ConfigError):
        build_evaluator({"kind": "schema", "schema": {"type": 12}})


def test_labels_evaluator_ignores_case_spacing_quotes_and_full_stop() -> None:
    spec = {"kind": "labels", "labels": ["positive", "negative", "neutral"]}
    for ok in ("positive", " Positive.", '"NEUTRAL"', "negative\n"):
        assert check(spec, ok) is None, ok
    failed = check(spec, "mostly positive")
    assert failed is not None and "not one of" in failed
    with pytest.raises(ConfigError):
        build_evaluator({"kind": "labels", "labels": []})


def test_non_empty_and_length_evaluators() -> None:
    for empty in (None, "", "   ", [], {}):
        assert check("non_empty", empty) == "non_empty: output is empty"
    assert check("non_empty", "x") is None
    bounds = {"kind": "length", "min_chars": 3, "max_chars": 5}
    assert check(bounds, "abcd") is None
    assert check(bounds, "ab") == "length: output has 2 characters, fewer than 3"
    assert check(bounds, "abcdef") == "length: output has 6 characters, more than 5"


def test_callables_by_registration_and_by_path() -> None:
    register_evaluator("short", lambda output, ctx: len(str(output)) < 4)
    assert check("short", "abc") is None
    assert check("short", "abcd") == "short: rejected"
    path = "tests.routing.test_cascade:hard_fails_on_mini"
    assert check(path, "x", EvalContext("c", "gpt-4o-mini", "a hard one")) is not None
    assert check(path, "x", EvalContext("c", "gpt-4o", "a hard one")) is None
    assert check({"kind": "callable", "path": path}, "x", CTX) is None
    with pytest.raises(ConfigError):
        build_evaluator("no_such_evaluator")
    with pytest.raises(ConfigError):
        build_evaluator("tests.routing.test_cascade:missing")


def test_a_raising_evaluator_fails_the_output() -> None:
    def broken(output: Any, ctx: EvalContext) -> bool:
        raise RuntimeError("boom")

    register_evaluator("broken", broken)
    assert check("broken", "x") == "broken: evaluator raised RuntimeError: boom"


def write_jobs(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def packed_prompts(body: dict[str, Any]) -> list[str]:
    content = body["messages"][-1]["content"]
    return list(orjson.loads(content).values())


async def test_only_failing_items_of_a_packed_batch_escalate(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    spec = CascadeSpec(evaluators=("non_empty", "tests.routing.test_cascade:hard_fails_on_mini"))
    # escalated items linger like new ones, so the batch's failures go up in one call
    settings = make_settings(redis_url, fake, cascades={"classification": spec}, linger_ms=300)
    prompts = [f"{'hard' if i % 3 == 0 else 'easy'} ticket {i}" for i in range(10)]
    lines = [
        # quality 0.95 would route to the best tier; the cascade starts cheap regardless
        {"id": f"c{i}", "task_type": "classification", "quality": 0.95, "prompt": p}
        for i, p in enumerate(prompts)
    ]
    path = write_jobs(tmp_path / "jobs.jsonl", lines)
    async with pipeline_client(settings) as client, running_worker(settings):
        submission = await client.submit_file(path)
        await client.wait(submission.run_id, timeout_s=20)
        results = {r.id: r async for r in client.results(submission.run_id)}
        stats = await client.pipeline.redis.hgetall(
            client.pipeline.keys.cascade_stats("classification")
        )

    hard = {f"c{i}" for i, p in enumerate(prompts) if p.startswith("hard")}
    assert len(hard) == 4
    calls = fake.stats()["bodies"]
    assert [b["model"] for b in calls] == ["gpt-4o-mini", "gpt-4.1-mini"]
    assert sorted(packed_prompts(calls[0])) == sorted(prompts)
    assert sorted(packed_prompts(calls[1])) == sorted(p for p in prompts if p.startswith("hard"))
    for i, prompt in enumerate(prompts):
        result = results[f"c{i}"]
        assert result.status == "ok"
        assert result.output == expected_output(prompt)
        assert result.model == ("gpt-4.1-mini" if result.id in hard else "gpt-4o-mini")
    # an escalated task carries the cost of both attempts
    cheapest_hard = min(results[i].cost_usd or 0 for i in hard)
    dearest_easy = max(results[i].cost_usd or 0 for i in results if i not in hard)
    assert cheapest_hard > dearest_easy
    assert stats == {
        b"passed:gpt-4o-mini": b"6",
        b"escalated:gpt-4o-mini>gpt-4.1-mini": b"4",
        b"passed:gpt-4.1-mini": b"4",
    }


async def test_an_item_failing_at_the_top_of_the_cascade_ends_failed(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    labels = {"kind": "labels", "labels": ["billing", "shipping"]}
    spec = CascadeSpec(evaluators=(labels,), max_tier="balanced")
    settings = make_settings(redis_url, fake, cascades={"classification": spec})
    lines = [{"id": f"x{i}", "task_type": "classification", "prompt": f"t {i}"} for i in range(2)]
    path = write_jobs(tmp_path / "jobs.jsonl", lines)
    async with pipeline_client(settings) as client, running_worker(settings):
        submission = await client.submit_file(path)
        await client.wait(submission.run_id, timeout_s=20)
        results = [r async for r in client.results(submission.run_id)]
    # the fake never answers with a label: mini, then the balanced model, then out of tiers
    assert [b["model"] for b in fake.stats()["bodies"]] == ["gpt-4o-mini", "gpt-4.1-mini"]
    assert [r.status for r in results] == ["failed", "failed"]
    for result in results:
        assert result.error is not None and result.error.code == "evaluation_failed"
        assert "gpt-4.1-mini" in result.error.message and "not one of" in result.error.message
        assert result.cost_usd and result.cost_usd > 0


async def test_on_exhausted_answer_gives_the_last_output(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    labels = {"kind": "labels", "labels": ["billing"]}
    spec = CascadeSpec(evaluators=(labels,), max_tier="fast_cheap", on_exhausted="answer")
    settings = make_settings(redis_url, fake, cascades={"classification": spec})
    path = write_jobs(
        tmp_path / "jobs.jsonl", [{"id": "x", "task_type": "classification", "prompt": "t"}]
    )
    async with pipeline_client(settings) as client, running_worker(settings):
        submission = await client.submit_file(path)
        await client.wait(submission.run_id, timeout_s=20)
        (result,) = [r async for r in client.results(submission.run_id)]
    assert result.status == "ok" and result.output == expected_output("t")
    assert fake.stats()["requests"] == 1


async def test_a_rerun_batch_never_escalates_or_charges_twice(redis_url: str) -> None:
    spec = CascadeSpec(evaluators=("tests.routing.test_cascade:hard_fails_on_mini",))
    settings = make_settings(redis_url, cascades={"classification": spec})  # simulated provider
    tasks = [{"id": f"c{i}", "task_type": "classification", "prompt": f"hard {i}"} for i in (1, 2)]
    tasks.append({"id": "c3", "task_type": "classification", "prompt": "easy 3"})
    async with pipeline_client(settings) as client:
        p = client.pipeline
        run_id = await client.submit(tasks, complete=True)
        (first,) = await p.packer.flush()
        assert await p.executor.run(first) == []
        # a worker died before the batch was marked done: the job runs it again
        await p.redis.hset(p.keys.batch(first), "status", "open")
        assert await p.executor.run(first) == []
        await asyncio.sleep(settings.linger_ms / 1000 + 0.05)  # escalations linger
        escalated = await p.packer.flush()
        assert len(escalated) == 1
        for batch_id in escalated:
            await p.executor.run(batch_id)
        await client.wait(run_id, timeout_s=5)
        results = {r.id: r async for r in client.results(run_id)}
        records = [r async for r in p.ledger.records()]
    assert [r.batch_size for r in records] == [3, 2]
    assert {i: r.model for i, r in results.items()} == {
        "c1": "gpt-4.1-mini",
        "c2": "gpt-4.1-mini",
        "c3": "gpt-4o-mini",
    }
    total = sum(float(r.cost_usd or 0) for r in records)
    assert abs(sum(r.cost_usd or 0 for r in results.values()) - total) < 1e-9


async def test_an_escalation_joins_the_same_request_already_pending_upstairs(
    redis_url: str,
) -> None:
    spec = CascadeSpec(evaluators=("tests.routing.test_cascade:hard_fails_on_mini",))
    # long linger: escalated items wait until the test flushes them
    settings = make_settings(redis_url, cascades={"classification": spec}, linger_ms=60_000)
    task = {"task_type": "classification", "prompt": "hard one"}
    async with pipeline_client(settings) as client:
        p = client.pipeline
        run_a = await client.submit([{**task, "id": "a"}], complete=True)
        for batch_id in await p.packer.flush():
            await p.executor.run(batch_id)  # fails on mini, waits upstairs
        run_b = await client.submit([{**task, "id": "b"}], complete=True)
        for batch_id in await p.packer.flush():
            await p.executor.run(batch_id)  # fails on mini, joins run a's pending item
        pending = [g.decode() for g in await p.redis.zrange(p.keys.groups(), 0, -1)]
        assert len(pending) == 1
        await p.packer.mark_due(pending)
        upstairs = await p.packer.flush()
        assert len(upstairs) == 1
        await p.executor.run(upstairs[0])
        await client.wait(run_a, timeout_s=5)
        await client.wait(run_b, timeout_s=5)
        a = await client.result("a", run_a)
        b = await client.result("b", run_b)
        records = [r async for r in p.ledger.records()]
    assert a is not None and b is not None
    assert a.status == b.status == "ok" and a.model == b.model == "gpt-4.1-mini"
    assert a.output == b.output
    assert [r.model for r in records] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4.1-mini"]
    total = sum(float(r.cost_usd or 0) for r in records)
    assert abs((a.cost_usd or 0) + (b.cost_usd or 0) - total) < 1e-9


async def test_an_escalated_answer_is_cached_so_a_repeat_costs_nothing(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    spec = CascadeSpec(evaluators=("tests.routing.test_cascade:hard_fails_on_mini",))
    settings = make_settings(redis_url, fake, cascades={"classification": spec})
    lines = [{"id": f"c{i}", "task_type": "classification", "prompt": f"hard {i}"} for i in (1, 2)]
    path = write_jobs(tmp_path / "jobs.jsonl", lines)
    async with pipeline_client(settings) as client, running_worker(settings):
        runs, summaries = [], []
        for _ in range(2):
            submission = await client.submit_file(path)
            await client.wait(submission.run_id, timeout_s=20)
            runs.append({r.id: r async for r in client.results(submission.run_id)})
            summaries.append(await client.summary(submission.run_id))
    first, repeat = runs
    assert [b["model"] for b in fake.stats()["bodies"]] == ["gpt-4o-mini", "gpt-4.1-mini"]
    # both calls count, though no task was answered by the first
    assert [s.provider_calls for s in summaries] == [2, 0]
    assert {r.model for r in first.values()} == {"gpt-4.1-mini"}
    for task_id, result in repeat.items():
        assert result.cache == "exact"
        assert (result.output, result.model) == (first[task_id].output, first[task_id].model)
        assert result.cost_usd == 0
