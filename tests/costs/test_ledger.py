"""The ledger: costs against hand-computed values, attribution, savings, idempotency, export."""

from __future__ import annotations

import csv
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config.settings import Settings
from pipeline.core.wiring import Pipeline
from pipeline.costs import metrics
from pipeline.costs.export import export
from pipeline.costs.prices import PriceTable
from pipeline.costs.reports import build_report
from pipeline.costs.savings import Answered, call_savings
from pipeline.costs.usage import from_anthropic, from_openai
from pipeline.models import Batch, CallRecord, Item, Message, Saving, TTLClass
from pipeline.providers.base import ChatResponse
from pipeline.testing import FakeProvider, make_settings
from workers.testing import pipeline_client, running_worker

NANO = 1_000_000_000


def patient(settings: Settings) -> Settings:
    """The fake provider with a long read timeout: on a loaded machine a slow answer must not
    turn into a retried call, which these tests count."""
    providers = tuple(p.model_copy(update={"read_timeout_s": 30.0}) for p in settings.providers)
    return settings.model_copy(update={"providers": providers})


def _items(n: int, users: list[str], endpoints: list[str], tokens: int = 100) -> list[Item]:
    return [
        Item(
            key=f"item{i}",
            group="g",
            prompt=f"p{i}",
            messages=(Message(role="user", content=f"p{i}"),),
            max_tokens=50,
            input_tokens=tokens,
            user_id=users[i % len(users)],
            endpoint=endpoints[i % len(endpoints)],
        )
        for i in range(n)
    ]


def _batch(batch_id: str, model: str, items: list[Item], tenant: str = "acme") -> Batch:
    return Batch(
        id=batch_id,
        group="g",
        tenant=tenant,
        model=model,
        system="",
        temperature=0.0,
        ttl_class=TTLClass.semi_static,
        item_keys=tuple(i.key for i in items),
    )


async def _record_call(
    pipeline: Pipeline,
    batch: Batch,
    items: list[Item],
    usage_block: Any,
    *,
    batch_api: bool = False,
) -> CallRecord:
    response = ChatResponse(
        text="{}",
        usage=usage_block,
        truncated=False,
        provider="p",
        model=batch.model,
        latency_ms=120,
    )
    outputs = {str(i + 1): f"answer {i}" for i in range(len(items))}
    await pipeline.executor.book.record(batch, items, response, outputs, batch_api=batch_api)
    records = [r async for r in pipeline.ledger.records()]
    return next(r for r in records if r.id == batch.id)


async def _day_totals(pipeline: Pipeline) -> dict[str, int]:
    await pipeline.ledger.journal.fold(drain=True)  # as every reader of the rollups does
    out: dict[str, int] = {}
    for key in await pipeline.redis.keys(pipeline.keys.ledger_day("*")):
        for name, value in (await pipeline.redis.hgetall(key)).items():
            out[name.decode()] = out.get(name.decode(), 0) + int(value)
    return out


async def test_openai_cached_tokens_inside_prompt_tokens_cost_by_hand(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with pipeline_client(settings) as client:
        p = client.pipeline
        items = _items(3, ["u1", "u2"], ["/chat"])
        usage = from_openai(
            {
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 1024},
            }
        )
        record = await _record_call(p, _batch("b-openai", "gpt-4o-mini", items), items, usage)
        # 176 uncached x $0.15 + 1024 cached x $0.075 + 300 out x $0.60, per million
        assert record.cost_usd == Decimal("0.0002832")
        assert record.usage.cached_input_tokens == 1024
        assert sum(s.cost_nusd or 0 for s in record.shares) == 283_200
        assert {s.user_id: s.items for s in record.shares} == {"u1": 2, "u2": 1}
        assert record.attempt == 1 and record.status == "ok" and record.tenant == "acme"
        totals = await _day_totals(p)
        assert totals["cost"] == 283_200
        assert totals["cached_in"] == 1024
        assert totals["cost\x1fu\x1fu1"] + totals["cost\x1fu\x1fu2"] == 283_200
        assert totals["cost\x1fe\x1f/chat\x1ft\x1facme"] == 283_200


async def test_anthropic_cache_read_and_write_apart_cost_by_hand(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with pipeline_client(settings) as client:
        p = client.pipeline
        items = _items(2, ["u1"], ["/a", "/b"])
        usage = from_anthropic(
            {
                "input_tokens": 50,
                "cache_creation_input_tokens": 1000,
                "cache_read_input_tokens": 2000,
                "output_tokens": 200,
            }
        )
        batch = _batch("b-anthropic", "claude-sonnet-4-0", items)
        record = await _record_call(p, batch, items, usage)
        # 50 x $3 + 1000 written x $3.75 + 2000 read x $0.30 + 200 out x $15, per million
        assert record.cost_usd == Decimal("0.0075")
        assert (record.usage.cached_input_tokens, record.usage.cache_write_tokens) == (2000, 1000)
        assert {s.endpoint for s in record.shares} == {"/a", "/b"}
        report = await build_report(p.redis, p.keys, anomalies=False)
        assert report.cost_usd == Decimal("0.0075")
        assert sum(r.cost_usd for r in report.by_endpoint) == Decimal("0.0075")
        assert report.by_model[0].name == "claude-sonnet-4-0"


async def test_batch_api_call_priced_at_batch_rates_and_saving_recorded(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with pipeline_client(settings) as client:
        p = client.pipeline
        items = _items(1, ["u1"], ["/x"])
        usage = from_openai(
            {
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 1024},
            }
        )
        batch = _batch("b-batchapi", "gpt-4o-mini", items)
        record = await _record_call(p, batch, items, usage, batch_api=True)  # a provider batch
        # batch table: (176 + 1024) x $0.075 + 300 x $0.30 per million; standard is 0.0002832
        assert record.batch_api is True
        assert record.cost_usd == Decimal("0.00018")
        report = await build_report(p.redis, p.keys, anomalies=False)
        saved = {s.lever: s.saved_usd for s in report.savings}
        assert saved["batch_api"] == Decimal("0.0001032")
        assert report.cost_usd == Decimal("0.00018")
        assert report.naive_cost_usd == Decimal("0.0002832")


async def test_unknown_model_is_recorded_unpriced_not_free(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with pipeline_client(settings) as client:
        p = client.pipeline
        items = _items(2, ["u1"], ["/x"])
        usage = from_openai({"prompt_tokens": 100, "completion_tokens": 10})
        record = await _record_call(p, _batch("b-unknown", "acme-9", items), items, usage)
        assert record.cost_usd is None
        assert all(s.cost_nusd is None for s in record.shares)
        report = await build_report(p.redis, p.keys, anomalies=False)
        assert report.unpriced_calls == 1 and report.calls == 1
        assert report.cost_usd == 0


async def test_recording_the_same_call_twice_adds_nothing(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with pipeline_client(settings) as client:
        p = client.pipeline
        items = _items(2, ["u1"], ["/x"])
        usage = from_openai({"prompt_tokens": 1000, "completion_tokens": 100})
        batch = _batch("b-twice", "gpt-4o-mini", items)
        await _record_call(p, batch, items, usage)
        before = await _day_totals(p)
        costs = [await p.redis.hgetall(p.keys.item_cost(i.key)) for i in items]
        await _record_call(p, batch, items, usage)
        assert await p.redis.xlen(p.keys.ledger()) == 1
        assert await _day_totals(p) == before
        assert [await p.redis.hgetall(p.keys.item_cost(i.key)) for i in items] == costs
        saving = Saving(id="hit-1", at=1.0e9, lever="cache", saved_nusd=500, tasks=1)
        assert await p.ledger.record_saving(saving) is True
        assert await p.ledger.record_saving(saving) is False
        with pytest.raises(ValueError, match="unknown lever"):
            Saving(id="x", at=0, lever="magic", saved_nusd=1)


class CrashOnce:
    """A run store whose first answer write dies, as a worker killed after the ledger write."""

    def __init__(self, runs: Any) -> None:
        self.runs = runs
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runs, name)

    async def finish_items(self, outcomes: list[tuple[str, dict[str, Any]]]) -> list[int]:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("worker killed")
        result: list[int] = await self.runs.finish_items(outcomes)
        return result


async def test_rerun_batch_adds_no_record_no_cost_and_no_saving(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = patient(make_settings(redis_url, fake))
    tasks = [
        {"id": f"t{i}", "task_type": "faq", "prompt": f"question {i}", "user_id": "u1"}
        for i in range(4)
    ]
    async with pipeline_client(settings) as client:
        p = client.pipeline
        run_id = await client.submit(tasks, complete=True)
        batch_ids = await p.packer.flush()
        assert len(batch_ids) == 1
        real_runs = p.executor.runs
        p.executor.runs = CrashOnce(real_runs)  # type: ignore[assignment]
        with pytest.raises(RuntimeError, match="worker killed"):
            await p.executor.run(batch_ids[0])
        p.executor.runs = real_runs
        first = await _day_totals(p)
        await p.executor.run(batch_ids[0], attempt=2)  # arq runs the job again
        await client.wait(run_id, timeout_s=5)
        results = [r async for r in client.results(run_id)]
        calls = [r async for r in p.ledger.records()]
        after = await _day_totals(p)
    assert fake.stats()["requests"] == 1
    assert len(calls) == 1 and calls[0].attempt == 1
    assert after["calls"] == 1 and after["cost"] == first["cost"]
    assert sum(round((r.cost_usd or 0) * NANO) for r in results) == after["cost"]
    assert all(r.status == "ok" for r in results)
    # the item whose answer died with the worker was answered by the re-run, once
    assert after["tasks\x1fpacking"] == 4


async def test_job_file_attributes_cost_to_users_and_endpoints_and_records_savings(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = patient(make_settings(redis_url, fake))
    system = "You answer questions about our product catalogue. " * 40  # shared by the batch
    lines = [
        {
            "id": f"q{i}",
            "task_type": "faq",
            "system": system,
            "prompt": f"question number {i}",
            "user_id": f"user{i % 3}",
            "endpoint": "/faq" if i % 2 else "/help",
            "tenant": "acme",
        }
        for i in range(20)
    ] + [
        # the same question twice: one item, two tasks (single-flight)
        {"id": "dup1", "task_type": "faq", "system": system, "prompt": "same"},
        {"id": "dup2", "task_type": "faq", "system": system, "prompt": "same"},
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    async with pipeline_client(settings) as client:
        p = client.pipeline
        async with running_worker(settings):
            submission = await client.submit_file(path)
            await client.wait(submission.run_id, timeout_s=20)
        # the worker has drained: a batch writes its savings after its tasks have their answers
        summary = await client.summary(submission.run_id)
        report = await build_report(p.redis, p.keys, revenue_usd=Decimal(1), anomalies=False)
        entries = [e async for e in p.ledger.entries()]
        jsonl = await export(p.ledger, tmp_path / "ledger.jsonl", fmt="jsonl")
        rows_written = await export(p.ledger, tmp_path / "ledger.csv", fmt="csv")
    calls = [e for e in entries if isinstance(e, CallRecord)]
    savings = [e for e in entries if isinstance(e, Saving)]
    assert report.calls - report.errors == summary.provider_calls
    assert report.calls == len(calls)
    assert report.cost_usd == summary.cost_usd
    assert sum(r.cost_usd for r in report.by_user) == report.cost_usd
    assert {r.name for r in report.by_user} == {"user0", "user1", "user2", "(none)"}
    assert {r.name for r in report.by_endpoint} == {"/faq", "/help", "(none)"}
    assert report.by_tenant[0].name == "acme"
    levers = {s.lever: s for s in report.savings}
    assert levers["packing"].tasks == 22  # every task answered by a provider call
    assert levers["single_flight"].tasks == 1
    assert levers["packing"].saved_usd > 0
    # the ledger's baselines are the run summary's: every task alone on gpt-4o (the tasks
    # name no model), and every task alone on the model that answered it
    assert report.naive_cost_usd == summary.baseline_cost_usd
    assert report.same_models_cost_usd == summary.naive_cost_usd
    assert report.tasks == 22 and report.unit_cost_usd == report.cost_usd / 22
    assert report.gross_margin == pytest.approx(float(1 - report.cost_usd))
    assert {s.lever for s in savings} == {"packing", "single_flight", "routing"}
    # exports: every entry once; the CSV's cost column adds up to the spend exactly
    assert jsonl == rows_written == len(entries)
    lines_out = (tmp_path / "ledger.jsonl").read_bytes().splitlines()
    assert {orjson.loads(line)["type"] for line in lines_out} == {"call", "saving"}
    with (tmp_path / "ledger.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    spent = sum(Decimal(r["cost_usd"]) for r in rows if r["type"] == "call")
    assert spent == report.cost_usd
    assert {r["user_id"] for r in rows if r["type"] == "call"} >= {"user0", "user1", "user2"}


async def test_failed_provider_call_is_recorded_as_an_error(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, provider_retries=0)
    fake.add_faults({"kind": "400", "times": 5})
    errors = metrics.ERRORS.labels("fake-openai", "http_400")
    errors_before = errors._value.get()
    async with pipeline_client(settings) as client:
        p = client.pipeline
        run_id = await client.submit([{"id": "a", "prompt": "hi"}], complete=True)
        for batch_id in await p.packer.flush():
            await p.executor.run(batch_id, attempt=3)
        await client.wait(run_id, timeout_s=5)
        calls = [r async for r in p.ledger.records(errors=True)]
        billed = [r async for r in p.ledger.records()]
        report = await build_report(p.redis, p.keys, anomalies=False)
    assert len(calls) == 1 and billed == []
    assert calls[0].status == "error" and calls[0].attempt == 3
    assert calls[0].error is not None and calls[0].error.startswith("http_400")
    assert calls[0].cost_usd == 0
    assert report.errors == 1 and report.cost_usd == 0
    assert errors._value.get() == errors_before + 1  # and Prometheus counted it


def test_routing_saving_against_the_model_the_task_asked_for() -> None:
    prices = PriceTable()
    item = _items(1, ["u1"], ["/x"])[0].model_copy(update={"requested_model": "gpt-4o"})
    batch = _batch("b-routed", "gpt-4o-mini", [item])
    answered = Answered(
        item, tasks=2, spent_nusd=150_000, naive_input_tokens=1000, naive_output_tokens=0
    )
    savings = {s.lever: s for s in call_savings(prices, batch, [answered], at=1.0)}
    # alone on gpt-4o-mini: 1000 x $0.15 per million = 150,000 nano-dollars, all spent
    assert savings["packing"].saved_nusd == 0 and savings["packing"].tasks == 2
    # asked for gpt-4o at $2.50: 2,500,000 per task, two tasks
    assert savings["routing"].saved_nusd == 2 * (2_500_000 - 150_000)
    assert savings["single_flight"].saved_nusd == 150_000


async def test_entries_page_through_the_stream_without_loss_or_repeats(redis_url: str) -> None:
    from redis.asyncio import Redis

    from pipeline.costs.ledger import Ledger
    from pipeline.keys import Keys
    from pipeline.models import CallRecord

    keys = Keys(f"page{time.time_ns()}")
    redis = Redis.from_url(redis_url)
    try:
        for i in range(7):
            record = CallRecord(
                id=f"c{i}", at=0.0, batch_id=f"c{i}", provider="p", model="m", status="ok"
            )
            await redis.xadd(keys.ledger(), {"r": record.model_dump_json()})
        ledger = Ledger(redis, keys)
        for chunk in (1, 2, 3, 7, 100):
            ids = [r.id async for r in ledger.entries(chunk=chunk)]  # type: ignore[union-attr]
            assert ids == [f"c{i}" for i in range(7)], chunk
    finally:
        await redis.aclose()
