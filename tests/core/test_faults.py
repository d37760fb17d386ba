"""Provider faults over real HTTP: every task still ends with exactly one result, and no task
ever receives an output produced for another."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pipeline.models import Result
from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker

PROMPTS = [f"support question number {i}" for i in range(12)]


async def run_tasks(redis_url: str, fake: FakeProvider, **overrides: Any) -> list[Result]:
    settings = make_settings(redis_url, fake, max_items={"faq": 6}, **overrides)
    tasks = [{"id": f"t{i}", "task_type": "faq", "prompt": p} for i, p in enumerate(PROMPTS)]
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(tasks, complete=True)
        await client.wait(run_id, timeout_s=30)
        return [r async for r in client.results(run_id)]


def assert_exactly_once_and_never_misattributed(results: list[Result]) -> None:
    assert [r.id for r in results] == [f"t{i}" for i in range(len(PROMPTS))]
    for result, prompt in zip(results, PROMPTS, strict=True):
        if result.status == "ok":
            assert result.output == expected_output(prompt), result
        else:
            assert result.error is not None and result.error.message


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "429", "retry_after": 0.05, "times": 2},
        {"kind": "500", "times": 2},
        {"kind": "fenced"},
        {"kind": "prose"},
        {"kind": "bare_array"},
        {"kind": "reorder"},
        {"kind": "duplicate_same"},
        {"kind": "truncated"},
        {"kind": "malformed"},
        {"kind": "drop", "times": 2},
        {"kind": "duplicate_conflict"},
        {"kind": "unknown_id"},
    ],
    ids=lambda f: f["kind"],
)
async def test_recoverable_faults_end_with_every_task_ok(
    redis_url: str, fake: FakeProvider, fault: dict[str, Any]
) -> None:
    fake.add_faults(fault)
    results = await run_tasks(redis_url, fake)
    assert_exactly_once_and_never_misattributed(results)
    assert all(r.status == "ok" for r in results), [r.error for r in results if r.error]


async def test_timeout_is_retried(redis_url: str, fake: FakeProvider) -> None:
    fake.add_faults({"kind": "timeout", "delay_s": 3})
    results = await run_tasks(redis_url, fake)
    assert_exactly_once_and_never_misattributed(results)
    assert all(r.status == "ok" for r in results)
    assert fake.stats()["requests"] >= 3


async def test_retry_after_is_honoured(redis_url: str, fake: FakeProvider) -> None:
    fake.add_faults({"kind": "429", "retry_after": 0.6, "times": 1})
    started = time.monotonic()
    results = await run_tasks(redis_url, fake, backoff_cap_s=5.0)  # the cap must not cut it
    assert all(r.status == "ok" for r in results)
    assert fake.stats()["by_status"].get("429") == 1
    assert time.monotonic() - started >= 0.6  # the rate-limited batch waited Retry-After


async def test_items_without_a_valid_answer_end_failed_with_the_reason(
    redis_url: str, fake: FakeProvider
) -> None:
    # The fake answers plain text, so a task that needs JSON never gets a valid answer.
    settings = make_settings(redis_url, fake, max_items={"extraction": 4})
    schema = {"type": "object", "properties": {"order": {"type": "string"}}}
    tasks = [
        {"id": f"t{i}", "task_type": "extraction", "prompt": p, "response_schema": schema}
        for i, p in enumerate(PROMPTS[:4])
    ]
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(tasks, complete=True)
        await client.wait(run_id, timeout_s=30)
        results = [r async for r in client.results(run_id)]
    assert [r.id for r in results] == ["t0", "t1", "t2", "t3"]
    assert all(
        r.status == "failed" and r.error and r.error.code == "no_valid_output" for r in results
    )
    # packed once, halves, then each alone twice: bounded, and every paid call is attributed
    assert fake.stats()["requests"] == 1 + 2 + 4 * 2
    assert all(r.cost_usd and r.cost_usd > 0 for r in results)


async def test_permanent_refusal_fails_tasks_with_the_provider_named(
    redis_url: str, fake: FakeProvider
) -> None:
    fake.add_faults({"kind": "400", "times": 1000, "message": "bad request"})
    results = await run_tasks(redis_url, fake)
    assert_exactly_once_and_never_misattributed(results)
    assert all(r.status == "failed" for r in results)
    assert all(r.error is not None and "fake-openai" in r.error.message for r in results)
    assert all(FAKE_KEY_FRAGMENT not in r.model_dump_json() for r in results)


FAKE_KEY_FRAGMENT = "test-key"
