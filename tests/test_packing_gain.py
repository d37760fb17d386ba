"""Packing only where it pays: the saved system prompts against the JSON scaffolding."""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.packing_gain import packing_gain_usd, packing_pays
from pipeline.prices import PriceTable
from tests.conftest import make_settings, pipeline_client, running_worker
from tests.fake_provider import FakeProvider

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
