"""Packing only where it pays: the saved system prompts against the JSON scaffolding."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from pipeline.costs.prices import PriceTable
from pipeline.keys import Keys
from pipeline.packing.gain import (
    Expected,
    GainSettings,
    expected,
    observe_outputs,
    packing_gain_usd,
    packing_pays,
)
from pipeline.packing.wire import ITEM_OVERHEAD_TOKENS
from pipeline.testing import FakeProvider, make_settings
from workers.testing import pipeline_client, running_worker

PRICES = PriceTable({"cheap": {"input": "0.15", "output": "0.60"}})
LONG = "Answer using only the policies below. " + "Returns within 30 days of delivery. " * 40
SHORT = "Be brief."


def meta(system: str, model: str = "cheap") -> dict[str, object]:
    return {"system": system, "model": model, "response_schema": None}


def test_a_long_shared_system_prompt_pays_for_packing() -> None:
    gain = packing_gain_usd(meta(LONG), 10, PRICES)
    assert gain is not None and gain > 0
    assert packing_pays(meta(LONG), 10, PRICES)


def test_a_short_system_prompt_does_not() -> None:
    gain = packing_gain_usd(meta(SHORT), 10, PRICES)
    assert gain is not None and gain < 0
    assert not packing_pays(meta(SHORT), 25, PRICES)


def test_gain_grows_with_the_batch_and_single_items_never_pack() -> None:
    gains = [packing_gain_usd(meta(LONG), n, PRICES) for n in (2, 5, 10)]
    assert gains[0] is not None and gains[0] < gains[1] < gains[2]  # type: ignore[operator]
    assert not packing_pays(meta(LONG), 1, PRICES)


def test_an_unpriced_model_packs() -> None:
    assert packing_gain_usd(meta(SHORT, "mystery-model"), 10, PRICES) is None
    assert packing_pays(meta(SHORT, "mystery-model"), 10, PRICES)


async def test_the_packer_sends_unprofitable_groups_alone(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, pack_only_when_cheaper=True)
    lines = [
        {"id": f"{tag}{i}", "task_type": "faq", "system": system, "prompt": f"question {i}"}
        for tag, system in (("long", LONG), ("short", SHORT))
        for i in range(10)
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    async with pipeline_client(settings) as client, running_worker(settings):
        submission = await client.submit_file(path)
        await client.wait(submission.run_id, timeout_s=20)
        results = [r async for r in client.results(submission.run_id)]
    assert all(r.status == "ok" for r in results)
    sizes = {r.id: r.batch_size for r in results}
    assert {sizes[f"long{i}"] for i in range(10)} == {10}
    assert {sizes[f"short{i}"] for i in range(10)} == {1}
    assert fake.stats()["requests"] == 11


CACHED = PriceTable({"cached": {"input": "2.50", "output": "10.00", "cached_input": "1.25"}})


def test_a_provider_prompt_cache_on_the_repeated_prefix_lowers_the_gain() -> None:
    no_cache = GainSettings(prompt_cache_min_tokens=100_000)
    cache = GainSettings(prompt_cache_min_tokens=100)
    without = packing_gain_usd(meta(LONG, "cached"), 8, CACHED, gain=no_cache)
    with_cache = packing_gain_usd(meta(LONG, "cached"), 8, CACHED, gain=cache)
    assert without is not None and with_cache is not None
    assert 0 < with_cache < without
    # the system prompts the cache would serve at half price are what packing saves
    assert float(without - with_cache) == pytest.approx(float(without) / 2, rel=0.2)


def test_the_audit_costs_packing_its_alone_reruns_sized_by_the_expected_answer() -> None:
    audited = GainSettings(audit_share=0.1)
    free = packing_gain_usd(meta(LONG), 8, PRICES)
    short = packing_gain_usd(meta(LONG), 8, PRICES, Expected(20, 5), audited)
    long = packing_gain_usd(meta(LONG), 8, PRICES, Expected(20, 800), audited)
    assert free is not None and short is not None and long is not None
    assert long < short < free
    assert not packing_pays(meta(LONG), 8, PRICES, Expected(20, 800), audited)


async def test_observed_answer_sizes_replace_max_tokens(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    keys = Keys(f"t{uuid.uuid4().hex[:8]}")
    group = {"task_type": "faq", "model": "cheap"}
    o = ITEM_OVERHEAD_TOKENS  # pending entries: key|own input + o|max_tokens + o
    entries = [f"k1|{20 + o}|{400 + o}".encode(), f"k2|{30 + o}|{200 + o}".encode()]
    try:
        assert await expected(redis, keys, group, entries) == Expected(25, 300)
        await observe_outputs(redis, keys, "faq", "cheap", [30, 50, 40])
        await observe_outputs(redis, keys, "faq", "other-model", [900])
        assert await expected(redis, keys, group, entries) == Expected(25, 40)
    finally:
        await redis.aclose()


async def test_the_packer_sizes_the_audit_by_the_answers_it_has_seen(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    """max_tokens 1,000 makes the audit's alone re-runs look dear, so the first batch goes
    alone; its answers are a few tokens, so the next batch of the same type and model packs."""
    settings = make_settings(
        redis_url,
        fake,
        pack_only_when_cheaper=True,
        audit_share=0.2,
        prices={"gpt-4o-mini": {"input": "0.15", "output": "0.60"}},
    )
    sizes = []
    async with pipeline_client(settings) as client, running_worker(settings):
        for run in range(2):
            lines = [
                {
                    "id": f"{run}-{i}",
                    "task_type": "faq",
                    "model": "gpt-4o-mini",
                    "system": LONG,
                    "prompt": f"question {run} {i}",
                    "max_tokens": 1000,
                }
                for i in range(8)
            ]
            path = tmp_path / f"jobs{run}.jsonl"
            path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
            submission = await client.submit_file(path)
            await client.wait(submission.run_id, timeout_s=20)
            sizes.append({r.batch_size async for r in client.results(submission.run_id)})
    assert sizes == [{1}, {8}]
