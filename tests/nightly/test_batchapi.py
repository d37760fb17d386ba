"""The batch-API route on a real Redis, real arq workers and the fake provider's batch endpoints."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from pipeline.config.records import ProviderConfig
from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.models import CallRecord, Message
from pipeline.nightly.batch_api import BatchApi
from pipeline.nightly.submissions import Entry, chunk_entries
from pipeline.providers.base import ChatRequest
from pipeline.providers.batches import AnthropicBatches, OpenAIBatches, build_batch_provider
from pipeline.testing import FAKE_KEY, FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker

FAST = {"batch_api_poll_s": 1, "batch_api_linger_s": 0.2, "batch_api": True}


def faq(n: int, prefix: str = "question") -> list[dict[str, Any]]:
    return [
        {"id": f"q{i}", "task_type": "faq", "system": "Be brief.", "prompt": f"{prefix} {i}"}
        for i in range(n)
    ]


async def ledger(client: BatchwiseClient) -> list[CallRecord]:
    return [r async for r in client.pipeline.ledger.records()]


async def run_tasks(
    settings: Settings, tasks: list[dict[str, Any]], timeout_s: float = 20
) -> tuple[list[Any], list[CallRecord], BatchwiseClient]:
    async with pipeline_client(settings) as client, running_worker(settings):
        run_id = await client.submit(tasks, complete=True)
        await client.wait(run_id, timeout_s=timeout_s)
        results = [r async for r in client.results(run_id)]
        records = await ledger(client)
    return results, records, client


def request(text: str) -> ChatRequest:
    return ChatRequest(
        model="gpt-4o-mini",
        system="",
        messages=(Message(role="user", content=text),),
        max_tokens=50,
    )


def config(fake: FakeProvider, kind: str) -> ProviderConfig:
    base = fake.openai_base_url if kind == "openai" else fake.anthropic_base_url
    return ProviderConfig(
        name=f"fake-{kind}", kind=kind, base_url=base, api_key=FAKE_KEY, models=("*",)
    )


# ---- provider clients against the fake --------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_batch_client_joins_results_on_custom_id(fake: FakeProvider, kind: str) -> None:
    api = (OpenAIBatches if kind == "openai" else AnthropicBatches)(config(fake, kind))
    try:
        texts = {f"b{i}": f"prompt {i}" for i in range(4)}
        fake.batch_api.configure(hold=True)
        batch_id = await api.submit(
            [api.entry(cid, request(t)) for cid, t in texts.items()], tag="t1"
        )
        assert (await api.status(batch_id)).state == "in_progress"
        fake.batch_api.configure(hold=False)
        assert (await api.status(batch_id)).state == "ended"
        outcomes = await api.results(batch_id)
    finally:
        await api.aclose()
    assert [o.custom_id for o in outcomes] == list(reversed(texts))  # the fake reverses order
    for outcome in outcomes:
        assert outcome.response is not None
        assert outcome.response.text == expected_output(texts[outcome.custom_id])
        assert outcome.response.usage.output_tokens > 0


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_batch_client_reports_expired_and_errored_requests(
    fake: FakeProvider, kind: str
) -> None:
    api = (OpenAIBatches if kind == "openai" else AnthropicBatches)(config(fake, kind))
    try:
        fake.add_faults({"kind": "400", "message": "bad request"})  # the first request errors
        fake.batch_api.configure(outcome="expired", answered=2)
        batch_id = await api.submit(
            [api.entry(f"b{i}", request(f"prompt {i}")) for i in range(4)], tag="t2"
        )
        assert (await api.status(batch_id)).state == "ended"
        outcomes = {o.custom_id: o for o in await api.results(batch_id)}
    finally:
        await api.aclose()
    assert outcomes["b0"].response is None and "400" in outcomes["b0"].error_code + "400"
    assert outcomes["b1"].response is not None
    assert {outcomes["b2"].error_code, outcomes["b3"].error_code} <= {"batch_expired", "expired"}


async def test_openai_find_recovers_a_lost_batch_id(fake: FakeProvider) -> None:
    api = OpenAIBatches(config(fake, "openai"))
    try:
        made = await api.submit([api.entry("b0", request("x"))], tag="sub-42")
        now_ms = int(time.time() * 1000)
        assert await api.find("sub-42", created_ms=now_ms, requests=1) == [made]
        assert await api.find("sub-43", created_ms=now_ms, requests=1) == []
    finally:
        await api.aclose()


def test_chunks_respect_request_and_byte_limits() -> None:
    entries = [Entry(f"b{i}", b"x" * 9) for i in range(7)]  # 10 bytes each with the newline
    assert [len(c) for c in chunk_entries(entries, 3, 10_000)] == [3, 3, 1]
    assert [len(c) for c in chunk_entries(entries, 100, 25)] == [2, 2, 2, 1]
    assert [len(c) for c in chunk_entries([Entry("big", b"y" * 99)], 100, 25)] == [1]


# ---- the route through workers ---------------------------------------------------------------


async def test_packed_batches_go_through_the_batch_api_at_batch_prices(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, **FAST)
    results, records, client = await run_tasks(settings, faq(25))
    assert [r.status for r in results] == ["ok"] * 25
    assert all(r.output == expected_output(f"question {i}") for i, r in enumerate(results))
    stats = fake.batch_api.stats()
    assert stats["created"] == 1  # three packed batches in one provider batch
    assert stats["requests"] == 3
    assert fake.stats()["requests"] == 3  # no synchronous call besides the batch's own
    assert len(records) == 3 and all(r.batch_api for r in records)
    prices = client.pipeline.prices
    for record in records:
        assert record.cost_usd == prices.price(record.model, record.usage, batch_api=True)
        standard = prices.price(record.model, record.usage)
        assert standard is not None and record.cost_usd is not None
        assert record.cost_usd < standard
    total = sum((Decimal(str(r.cost_usd)) for r in results), Decimal(0))
    assert abs(total - sum(r.cost_usd or 0 for r in records)) < Decimal("1e-9")


async def test_expired_and_errored_requests_rerun_synchronously(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, **FAST)
    fake.batch_api.configure(outcome="expired", answered=2)
    fake.add_faults({"kind": "500"})  # the first request in the provider batch errors
    results, records, _ = await run_tasks(settings, faq(25))
    assert [r.status for r in results] == ["ok"] * 25
    assert all(r.output == expected_output(f"question {i}") for i, r in enumerate(results))
    by_id = {r.id: r for r in records}
    assert len(by_id) == len(records)  # no call recorded twice
    batch_api = [r for r in records if r.batch_api]
    sync = [r for r in records if not r.batch_api]
    assert len(batch_api) == 1  # one answered; one errored, one expired
    assert len(sync) == 2 and all(r.id.endswith(".s") for r in sync)
    assert {r.id.removesuffix(".s") for r in sync}.isdisjoint({batch_api[0].id})


async def test_failed_provider_batch_falls_back_to_synchronous(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, **FAST)
    fake.batch_api.configure(outcome="failed")
    results, records, _ = await run_tasks(settings, faq(12))
    assert [r.status for r in results] == ["ok"] * 12
    assert records and not any(r.batch_api for r in records)


async def test_settling_twice_records_cost_once(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake, **FAST)
    async with pipeline_client(settings) as client:
        p = client.pipeline
        route = BatchApi(p.redis, settings, p.keys, p.executor)
        try:
            run_id = await client.submit(faq(12), complete=True)
            batch_ids = await p.packer.flush()
            assert len(batch_ids) == 2
            assert all([await route.divert(b) for b in batch_ids])
            assert await route.divert(batch_ids[0])  # handing over twice is a no-op
            created, _ = await route.submit_pending(force=True)
            assert created == 1
            sub = (await route.open_submissions())[0]
            # a worker dies after reading the results but before marking them settled
            await p.redis.hset(p.keys.bapi_sub(sub["id"]), "state", "submitted")
            assert await route.poll() == []
            await p.redis.hset(p.keys.bapi_sub(sub["id"]), "state", "submitted")
            await p.redis.zadd(p.keys.bapi_subs(), {sub["id"]: 1})
            assert await route.poll() == []
            await client.wait(run_id, timeout_s=5)
            records = await ledger(client)
            results = [r async for r in client.results(run_id)]
        finally:
            await route.aclose()
    assert sorted(r.id for r in records) == sorted(batch_ids)
    assert all(r.batch_api for r in records)
    assert fake.batch_api.stats()["downloads"] == 2  # read twice, charged once
    assert [r.status for r in results] == ["ok"] * 12
    assert sum(r.cost_usd or 0 for r in results) == pytest.approx(
        float(sum(r.cost_usd or 0 for r in records)), abs=1e-9
    )


async def test_tasks_without_the_flag_stay_synchronous(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake, **{**FAST, "batch_api": False})
    results, records, _ = await run_tasks(settings, faq(5))
    assert [r.status for r in results] == ["ok"] * 5
    assert fake.batch_api.stats()["created"] == 0
    assert not any(r.batch_api for r in records)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("created_before_crash", [True, False])
async def test_interrupted_submission_is_adopted_or_made_once(
    redis_url: str, fake: FakeProvider, created_before_crash: bool, kind: str
) -> None:
    settings = make_settings(redis_url, fake, **FAST)
    provider_config = config(fake, kind)
    provider = build_batch_provider(provider_config)
    assert provider is not None
    providers = {provider_config.name: provider}
    route_settings = settings.model_copy(update={"providers": (provider_config,)})
    async with pipeline_client(settings) as client:
        p = client.pipeline
        route = BatchApi(p.redis, route_settings, p.keys, p.executor, providers)
        try:
            # other provider batches in the same minutes: one of another size, and one of the
            # same size that a live submission already owns; neither may be adopted
            await provider.submit([provider.entry("other-0", request("x"))], tag="other-1")
            twin = [provider.entry(f"twin-{i}", request("x")) for i in range(2)]
            owned = await provider.submit(twin, tag="other-2")
            await p.redis.set(p.keys.bapi_owner(owned), "other-2")
            run_id = await client.submit(faq(12), complete=True)
            batch_ids = await p.packer.flush()
            assert len(batch_ids) == 2
            for batch_id in batch_ids:
                assert await route.divert(batch_id)
            # a worker records its intent, then dies before it stores the provider's batch id
            sub_id = "crashed-sub"
            k = p.keys
            await route._claim(
                keys=[k.bapi_pending(), k.bapi_subs(), k.bapi_sub(sub_id)],
                args=[sub_id, int(time.time() * 1000), provider.name, "gpt-4o-mini", *batch_ids],
            )
            assert await p.redis.zcard(k.bapi_pending()) == 0
            if created_before_crash:
                lines = []
                for batch_id in batch_ids:
                    loaded = await p.executor.load(batch_id)
                    assert loaded is not None
                    lines.append(provider.entry(batch_id, p.executor.request_for(*loaded)[0]))
                await provider.submit(lines, tag=sub_id)
            assert await route.poll() == []  # adopts, or submits now
            assert await route.poll() == []  # settles
            await client.wait(run_id, timeout_s=5)
            results = [r async for r in client.results(run_id)]
            records = await ledger(client)
        finally:
            await route.aclose()
    assert fake.batch_api.stats()["created"] == 3  # the two others, and ours once
    assert [r.status for r in results] == ["ok"] * 12
    assert sorted(r.id for r in records) == sorted(batch_ids)


async def test_anthropic_find_pages_back_to_the_intent(fake: FakeProvider) -> None:
    api = AnthropicBatches(config(fake, "anthropic"))
    try:
        made = [await api.submit([api.entry(f"b{i}", request("x"))], tag="t") for i in range(5)]
        since_ms = int(time.time() * 1000)
        assert await api.find("t", created_ms=since_ms, requests=1) == made[::-1]
        assert await api.find("t", created_ms=since_ms, requests=2) == []
        # an intent recorded long after those batches were made matches none of them
        later_ms = since_ms + 3_600_000
        assert await api.find("t", created_ms=later_ms, requests=1) == []
    finally:
        await api.aclose()


async def test_provider_limits_split_into_several_provider_batches(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, **FAST, batch_api_max_requests=2)
    results, records, _ = await run_tasks(settings, faq(25))
    assert [r.status for r in results] == ["ok"] * 25
    assert fake.batch_api.stats()["created"] == 2  # three packed batches, two per provider batch
    assert len(records) == 3 and all(r.batch_api for r in records)


async def test_anthropic_message_batches_route_with_expiry(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, **FAST)
    anthropic = config(fake, "anthropic")
    # the synchronous side stays on the fake's OpenAI endpoint; the batch route uses Anthropic
    route_settings = settings.model_copy(update={"providers": (anthropic,)})
    fake.batch_api.configure(outcome="expired", answered=1)
    async with pipeline_client(settings) as client:
        p = client.pipeline
        route = BatchApi(
            p.redis,
            route_settings,
            p.keys,
            p.executor,
            {anthropic.name: AnthropicBatches(anthropic)},
        )
        try:
            run_id = await client.submit(faq(12), complete=True)
            batch_ids = await p.packer.flush()
            assert all([await route.divert(b) for b in batch_ids])
            assert (await route.submit_pending(force=True))[0] == 1
            children = await route.poll()
            (child,) = children  # one answered, the other expired and goes synchronous
            assert child.removesuffix(".s") in batch_ids
            assert await p.executor.run(child) == []
            await client.wait(run_id, timeout_s=5)
            results = [r async for r in client.results(run_id)]
            records = [r async for r in p.ledger.records()]
        finally:
            await route.aclose()
    assert [r.status for r in results] == ["ok"] * 12
    assert all(r.output == expected_output(f"question {i}") for i, r in enumerate(results))
    assert sorted((r.batch_api, r.id.endswith(".s")) for r in records) == [
        (False, True),
        (True, False),
    ]
    assert fake.stats()["by_path"] == {"anthropic": 1, "openai": 1}


async def test_budget_holds_the_batch_until_it_settles_at_batch_prices(
    redis_url: str, fake: FakeProvider
) -> None:
    from pipeline.budgets.pace import month_bounds
    from pipeline.costs.money import to_nano

    settings = make_settings(redis_url, fake, **FAST)
    fake.batch_api.configure(hold=True)
    async with pipeline_client(settings) as client, running_worker(settings):
        p = client.pipeline
        run_id = await client.submit(faq(12), complete=True)
        for _ in range(200):
            if fake.batch_api.stats()["created"]:
                break
            await asyncio.sleep(0.05)
        (sub,) = await BatchApi(p.redis, settings, p.keys, p.executor, {}).open_submissions()
        batch_ids = sub["ids"].split(",")
        held = [await p.redis.hget(p.keys.reservation(b), "state") for b in batch_ids]
        assert held == [b"held", b"held"]  # the open provider batch counts against the budget
        fake.batch_api.configure(hold=False)
        await client.wait(run_id, timeout_s=15)
        records = await ledger(client)
        month = month_bounds(time.time())[0]
        spent = int(await p.redis.get(p.keys.month_spend(month)) or 0)
        states = [await p.redis.hget(p.keys.reservation(b), "state") for b in batch_ids]
    assert states == [b"settled", b"settled"]
    assert spent == sum(to_nano(r.cost_usd or Decimal(0)) for r in records)
    assert all(r.batch_api for r in records)
