"""`batchwise plan`: the lever table, and its estimate against what a run records."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from pipeline.cli.main import main
from pipeline.routing.estimate import by_type, plan_file
from pipeline.testing import make_settings
from workers.testing import pipeline_client, running_worker

EXAMPLE = Path(__file__).resolve().parents[2] / "jobs.example.jsonl"


@pytest.mark.parametrize("only_when_cheaper", [True, False])
async def test_plan_estimate_is_within_ten_percent_of_the_run(
    tmp_path: Path, redis_url: str, only_when_cheaper: bool
) -> None:
    path = Path(shutil.copy(EXAMPLE, tmp_path / "jobs.jsonl"))
    # no provider configured: the simulated one answers; a third of packed items are audited
    settings = make_settings(redis_url, audit_share=0.3, pack_only_when_cheaper=only_when_cheaper)
    plan = await plan_file(path, settings)
    packing = plan.lever("packing")
    if only_when_cheaper:  # the example's system prompts are too short for packing to pay
        assert len(packing.calls) == len(plan.lever("routing").calls)
        assert plan.run_estimate_usd == packing.cost_usd
    else:
        assert len(packing.calls) < len(plan.lever("routing").calls)
        assert plan.run_estimate_usd > packing.cost_usd  # the audit's re-runs
    async with pipeline_client(settings) as client, running_worker(settings):
        submission = await client.submit_file(path)
        await client.wait(submission.run_id, timeout_s=30)
        summary = await client.summary(submission.run_id)
        records = [r async for r in client.pipeline.ledger.records()]
    assert summary.simulated and summary.ok == plan.tasks - plan.invalid - plan.rejected
    assert summary.cost_usd > 0
    assert abs(plan.run_estimate_usd - summary.cost_usd) <= Decimal("0.10") * summary.cost_usd
    assert summary.provider_calls == len(records)  # the audit's alone re-runs count too
    # the packed calls are the ones the plan foresaw (which items an audit samples is not
    # foreseeable: a no_cache task's item key is its own)
    assert len(packing.calls) == sum(".audit." not in r.id for r in records)


async def test_levers_are_cumulative_and_each_one_is_measured(tmp_path: Path) -> None:
    settings = make_settings("redis://unused")
    plan = await plan_file(EXAMPLE, settings)
    names = [lever.name for lever in plan.levers]
    assert names[:4] == ["naive", "duplicates", "routing", "packing"]
    assert names[-1] == "batch API"
    naive, dupes, routing, packing = (plan.lever(n) for n in names[:4])
    assert len(naive.calls) == plan.tasks  # every line of the example is valid
    assert {c.model for c in naive.calls} == {"gpt-4o"}
    # the example repeats questions: fewer calls, lower cost, on the same model
    assert len(dupes.calls) < len(naive.calls) and dupes.cost_usd < naive.cost_usd
    # routing moves tasks to cheaper models without changing the token counts much
    assert routing.cost_usd < dupes.cost_usd / 5
    assert "gpt-4o-mini" in {c.model for c in routing.calls}
    # packing shares calls
    assert len(packing.calls) < len(routing.calls)
    assert plan.lever("batch API").cost_usd == pytest.approx(
        plan.levers[-2].cost_usd / 2, rel=Decimal("0.01")
    )


def test_cli_prints_the_lever_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLE)]) == 0
    shown = capsys.readouterr().out
    for lever in ("naive", "duplicates", "routing", "packing", "batch API"):
        assert lever in shown
    assert "expected cost of `batchwise run`" in shown


async def test_prompt_cache_reads_of_repeated_system_blocks_are_estimated(
    tmp_path: Path,
) -> None:
    system = "Answer from the policy: returns within 30 days, refunds in 5 days. " * 6
    lines = [{"task_type": "faq", "system": system, "prompt": f"question {i}"} for i in range(25)]
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    plan = await plan_file(path, make_settings("redis://unused", prompt_cache_min_tokens=50))
    calls = plan.lever("packing").calls
    assert [c.items for c in calls] == [10, 10, 5]
    # the second and third calls read the group's system block from the provider's cache
    assert plan.prompt_cache_tokens > 2 * 50
    assert plan.prompt_cache_saving_usd > 0
    never = await plan_file(path, make_settings("redis://unused", prompt_cache_min_tokens=10**6))
    assert never.prompt_cache_tokens == 0


async def test_by_type_splits_the_routing_and_packing_rows() -> None:
    plan = await plan_file(EXAMPLE, make_settings("redis://unused"))
    rows = by_type(plan)
    assert sum(r["items"] for r in rows.values()) == len(plan.lever("routing").calls)
    for name in ("routing", "packing"):
        total = sum(r[f"{name}_usd"] for r in rows.values())
        assert abs(total - plan.lever(name).cost_usd) < Decimal("1e-12")
    assert rows["faq"]["packing_calls"] < rows["faq"]["routing_calls"]
