"""Every lever that is on pays, against the baseline model, and the ledger agrees with the run.

Runs use the simulated provider (no provider configured), the shipped packing default, and the
workloads bench/levers.py measures.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bench.levers import short_prompt_workload
from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.summary import Summary
from pipeline.costs.dashboard import render_html
from pipeline.costs.reports import Report, build_report
from pipeline.models import TASK_TYPES
from pipeline.testing import FakeProvider, make_settings
from workers.testing import pipeline_client, running_worker

EXAMPLE = Path(__file__).resolve().parents[2] / "jobs.example.jsonl"


def shipped(redis_url: str) -> Settings:
    return make_settings(redis_url, pack_only_when_cheaper=Settings().pack_only_when_cheaper)


async def run_file(client: BatchwiseClient, path: Path) -> tuple[Summary, dict[str, Any]]:
    submission = await client.submit_file(path)
    await client.wait(submission.run_id, timeout_s=60)
    results = {r.id: r async for r in client.results(submission.run_id)}
    return await client.summary(submission.run_id), results


async def report_of(client: BatchwiseClient, settings: Settings) -> Report:
    p = client.pipeline
    return await build_report(
        p.redis, p.keys, anomalies=False, baseline_model=settings.baseline_model
    )


def assert_no_lever_costs_money(summary: Summary, report: Report) -> None:
    assert summary.ok > 0 and summary.cost_usd > 0
    assert summary.saving >= 0 and summary.baseline_saving > 0
    assert summary.baseline_cost_usd >= summary.naive_cost_usd
    assert all(saved >= 0 for saved in summary.saved_by.values()), summary.saved_by
    assert all(s.saved_usd >= 0 for s in report.savings), report.savings
    assert report.saved_usd > 0


def test_packing_only_where_it_pays_and_gpt_4o_are_the_defaults() -> None:
    settings = Settings()
    assert settings.pack_only_when_cheaper and settings.baseline_model == "gpt-4o"


async def test_every_lever_pays_on_the_example(tmp_path: Path, redis_url: str) -> None:
    settings = shipped(redis_url)
    path = Path(shutil.copy(EXAMPLE, tmp_path / "jobs.jsonl"))
    async with pipeline_client(settings) as client, running_worker(settings):
        summary, _ = await run_file(client, path)
        report = await report_of(client, settings)
    assert_no_lever_costs_money(summary, report)
    # the example names no model: routing saves against gpt-4o, in the summary and the ledger
    routing = next(s for s in report.savings if s.lever == "routing")
    assert routing.saved_usd > 0 and summary.saved_by["routing"] > 0
    assert report.same_models_cost_usd < report.naive_cost_usd
    assert report.to_dict()["baseline_model"] == "gpt-4o"
    page = render_html(report)
    assert "alone on gpt-4o" in page and "alone on the same models" in page


async def test_short_system_prompts_go_alone_and_a_shared_rubric_packs(
    tmp_path: Path, redis_url: str
) -> None:
    settings = shipped(redis_url)
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in short_prompt_workload(24)))
    async with pipeline_client(settings) as client, running_worker(settings):
        summary, results = await run_file(client, path)
        report = await report_of(client, settings)
    assert summary.ok == len(results)
    sizes = {tag: {r.batch_size for i, r in results.items() if i[0] == tag} for tag in "sqr"}
    # a five-token system prompt saves less than the JSON costs: alone; a 450-token rubric
    # packs (the labels behind an 11-token prompt are close to even, and pack)
    assert sizes["q"] == {1}
    assert min(sizes["r"]) > 1
    # the tasks sent alone still leave in batches, one job each, their calls made together
    alone = [r.batch_id or "" for i, r in results.items() if i[0] == "q"]
    parents = {batch_id.rsplit(".s", 1)[0] for batch_id in alone}
    assert all(".s" in batch_id for batch_id in alone) and len(parents) < len(alone) / 4
    assert_no_lever_costs_money(summary, report)
    packing = next(s for s in report.savings if s.lever == "packing")
    assert packing.saved_usd > 0  # the rubric's packed calls


async def test_a_second_run_shows_its_cache_hits_in_the_report(
    tmp_path: Path, redis_url: str
) -> None:
    settings = shipped(redis_url)
    path = Path(shutil.copy(EXAMPLE, tmp_path / "jobs.jsonl"))
    async with pipeline_client(settings) as client, running_worker(settings):
        first, _ = await run_file(client, path)
        before = await report_of(client, settings)
        second, _ = await run_file(client, path)
        after = await report_of(client, settings)
    assert second.cache_hits > 0
    hits = after.to_dict()["cache_hits"] - before.to_dict()["cache_hits"]
    assert hits == second.cache_hits
    saved = {s.lever: s.saved_usd for s in after.savings}
    saved_before = {s.lever: s.saved_usd for s in before.savings}
    cache_usd = sum(
        (saved[lever] - saved_before[lever] for lever in ("cache", "semantic_cache")), Decimal(0)
    )
    in_summary = second.saved_by.get("cache", Decimal(0))
    in_summary += second.saved_by.get("semantic_cache", Decimal(0))
    assert cache_usd > 0 and abs(cache_usd - in_summary) < Decimal("0.000001")
    assert second.cost_usd < first.cost_usd


async def test_no_lever_costs_money_against_an_openai_compatible_server(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    """The fake server counts tokens its own way (a quarter of the bytes), as real providers
    count theirs: the baselines follow the provider's counts, not the local tokenizer's."""
    settings = make_settings(redis_url, fake, pack_only_when_cheaper=True)
    path = tmp_path / "jobs.jsonl"
    lines = short_prompt_workload(40) + [orjson.loads(x) for x in EXAMPLE.read_bytes().splitlines()]
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    async with pipeline_client(settings) as client, running_worker(settings):
        summary, _ = await run_file(client, path)
        report = await report_of(client, settings)
    assert not summary.simulated
    assert_no_lever_costs_money(summary, report)


async def test_a_task_sent_alone_is_its_own_baseline_whatever_the_provider_counts(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, max_items=dict.fromkeys(TASK_TYPES, 1))
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in short_prompt_workload(8)))
    async with pipeline_client(settings) as client, running_worker(settings):
        summary, results = await run_file(client, path)
        report = await report_of(client, settings)
    assert {r.batch_size for r in results.values()} == {1}
    packing = next(s for s in report.savings if s.lever == "packing")
    assert packing.tasks == summary.ok == len(results) and packing.saved_usd == 0
    assert summary.naive_cost_usd == summary.cost_usd


async def test_an_alone_batch_reruns_only_what_did_not_finish(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, pack_only_when_cheaper=True, provider_retries=0)
    lines = [
        {"id": f"a{i}", "task_type": "short_answer", "system": "Be brief.", "prompt": f"q {i}"}
        for i in range(6)
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    fake.add_faults({"kind": "500", "times": 1})
    async with pipeline_client(settings) as client, running_worker(settings):
        summary, results = await run_file(client, path)
        parents = {(r.batch_id or "").rsplit(".s", 1)[0] for r in results.values()}
        requests = fake.stats()["requests"]
        p = client.pipeline
        for parent in parents:  # a job that runs again finds every call done
            await p.redis.hset(p.keys.batch(parent), "status", "open")  # as if it never closed
            assert await p.executor.run(parent) == []
        records = [r async for r in client.pipeline.ledger.records()]
    assert summary.ok == 6 and len(parents) == 1
    assert {r.batch_size for r in results.values()} == {1}
    assert requests == 7 and fake.stats()["requests"] == 7  # the failed call once more, only
    assert len(records) == 6
