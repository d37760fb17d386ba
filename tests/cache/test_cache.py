"""The response cache on a real Redis: key stability, tenant isolation, no_cache, TTLs, semantic
hits and their guard, analytics, and end to end through workers and the fake provider."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from pipeline.cache import ResponseCache
from pipeline.cache.embedders import HashingEmbedder
from pipeline.cli.cache import cmd_cache_clear, cmd_cache_stats
from pipeline.config.settings import Settings
from pipeline.core.intake import validate
from pipeline.errors import TransientError
from pipeline.fingerprint import item_key
from pipeline.keys import Keys
from pipeline.models import Task
from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker

MODEL = "gpt-4o-mini"


def task(**fields: Any) -> Task:
    """A shaped task from a job-line dict (model and max_tokens set as the router would)."""
    if "messages" not in fields:
        fields.setdefault("prompt", "What is the capital of France?")
    checked = validate(fields, 1, set(), source="test")
    assert isinstance(checked, Task), checked
    return checked.model_copy(
        update={"model": fields.get("model", MODEL), "max_tokens": fields.get("max_tokens", 150)}
    )


@contextlib.asynccontextmanager
async def cache_on(settings: Settings, **kwargs: Any) -> AsyncIterator[ResponseCache]:
    redis = Redis.from_url(settings.redis_url or "")
    try:
        yield ResponseCache(redis, settings, Keys(settings.key_prefix), **kwargs)
    finally:
        await redis.aclose()


async def answer(cache: ResponseCache, t: Task, output: str, cost_nusd: int = 1000) -> bool:
    """What a submit then an answered item do: look up, leave the intent, store the answer."""
    found = await cache.lookup([t])
    assert found.misses == [t]
    async with cache.redis.pipeline(transaction=False) as pipe:
        cache.remember(pipe, found)
        await pipe.execute()
    outcome = {
        "status": "ok",
        "output": output,
        "provider": "fake-openai",
        "cost_nusd": cost_nusd,
        "input_tokens": 20,
        "output_tokens": 5,
        "naive_input_tokens": 30,
        "naive_output_tokens": 5,
    }
    return await cache.store(item_key(t), outcome)


async def served(cache: ResponseCache, t: Task) -> dict[str, Any] | None:
    """What a submit does: look up, then write what the lookup queued (counters, hits' TTL)."""
    found = await cache.lookup([t])
    async with cache.redis.pipeline(transaction=False) as pipe:
        cache.remember(pipe, found)
        await pipe.execute()
    return found.hits[0] if found.hits else None


# keys


async def test_key_order_and_whitespace_give_the_same_entry(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with cache_on(settings) as cache:
        first = task(
            messages=[
                {"role": "system", "content": "Answer  briefly."},
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What is 2+2?"},
            ],
            response_schema={"type": "object", "properties": {"a": {"type": "integer"}}},
        )
        assert await answer(cache, first, "4")
        same = task(
            response_schema={"properties": {"a": {"type": "integer"}}, "type": "object"},
            messages=[
                {"content": " Answer briefly. ", "role": "system"},
                {"content": "Hi\n there", "role": "user"},
                {"content": "Hello!", "role": "assistant"},
                {"content": "What is 2+2?  ", "role": "user"},
            ],
        )
        assert cache.cache_key(same) == cache.cache_key(first)
        hit = await served(cache, same)
        assert hit is not None and hit["output"] == "4" and hit["cache"] == "exact"


@pytest.mark.parametrize(
    "change",
    [
        {"earlier_turn": "Hi, I am Bob"},
        {"temperature": 0.7},
        {"max_tokens": 151},
        {"system": "Answer in French."},
        {"model": "gpt-4.1-mini"},
        {"response_schema": {"type": "string"}},
        {"prompt_tail": "What is 2+3?"},
    ],
)
async def test_anything_that_changes_the_answer_changes_the_key(
    redis_url: str, change: dict[str, Any]
) -> None:
    def conversation(**over: Any) -> Task:
        messages = [
            {"role": "system", "content": over.pop("system", "Answer briefly.")},
            {"role": "user", "content": over.pop("earlier_turn", "Hi there")},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": over.pop("prompt_tail", "What is 2+2?")},
        ]
        return task(messages=messages, **over)

    settings = make_settings(redis_url)
    async with cache_on(settings) as cache:
        base = conversation()
        assert await answer(cache, base, "4")
        assert await served(cache, conversation()) is not None
        other = conversation(**dict(change))
        assert cache.cache_key(other) != cache.cache_key(base)
        assert await served(cache, other) is None


# tenants and scopes


async def test_two_tenants_never_share_an_entry(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with cache_on(settings) as cache:
        assert await answer(cache, task(tenant="acme"), "Paris (acme)")
        assert await served(cache, task(tenant="globex")) is None
        hit = await served(cache, task(tenant="acme"))
        assert hit is not None and hit["output"] == "Paris (acme)"
        assert await answer(cache, task(tenant="globex"), "Paris (globex)")
        hit = await served(cache, task(tenant="globex"))
        assert hit is not None and hit["output"] == "Paris (globex)"


async def test_tenants_share_only_when_both_opt_into_the_same_scope(redis_url: str) -> None:
    settings = make_settings(
        redis_url, cache_shared_scopes={"acme": "public-faq", "globex": "public-faq"}
    )
    async with cache_on(settings) as cache:
        assert await answer(cache, task(tenant="acme"), "Paris")
        hit = await served(cache, task(tenant="globex"))
        assert hit is not None and hit["output"] == "Paris"
        assert await served(cache, task(tenant="initech")) is None  # did not opt in


# no_cache and TTLs


async def test_no_cache_is_never_read_or_written(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with cache_on(settings) as cache:
        assert await answer(cache, task(), "Paris")
        fresh = task(ttl_class="no_cache")
        found = await cache.lookup([fresh])
        assert found.hits == [] and found.intents == {}  # not served though the answer exists
        assert not await cache.store(item_key(fresh), {"status": "ok", "output": "x"})
        zero_ttl = task(prompt="Another question", ttl_s=0)
        assert (await cache.lookup([zero_ttl])).intents == {}


async def test_entries_expire_with_their_ttl(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with cache_on(settings) as cache:
        short = task(ttl_s=1)
        assert await answer(cache, short, "Paris")
        assert await served(cache, short) is not None
        await asyncio.sleep(1.2)
        assert await served(cache, short) is None


async def test_ttl_follows_the_class_and_grows_with_hits_within_its_bounds(
    redis_url: str,
) -> None:
    settings = make_settings(redis_url)
    async with cache_on(settings) as cache:
        live = task(prompt="Score of the match right now?", ttl_class="real_time")
        weekly = task(prompt="Opening hours of the shop?", ttl_class="semi_static")
        for t in (live, weekly):
            assert await answer(cache, t, "x")
        ttl = cache.redis.ttl
        assert 295 <= await ttl(cache.keys.cache_entry(cache.cache_key(live))) <= 300
        week = 7 * 86400
        assert week - 5 <= await ttl(cache.keys.cache_entry(cache.cache_key(weekly))) <= week
        assert await served(cache, weekly) is not None
        one_hit = await ttl(cache.keys.cache_entry(cache.cache_key(weekly)))
        assert 1.5 * week - 5 <= one_hit <= 1.5 * week  # each hit adds half the class TTL
        for _ in range(3):
            assert await served(cache, live) is not None
            assert await served(cache, weekly) is not None
        assert await ttl(cache.keys.cache_entry(cache.cache_key(live))) <= 300  # real_time: fixed
        capped = await ttl(cache.keys.cache_entry(cache.cache_key(weekly)))
        assert 2 * week - 5 <= capped <= 2 * week  # semi_static lives 14 days at most


# semantic


async def vector_owners(cache: ResponseCache) -> set[str]:
    """The tenants whose prompts are in the semantic index in Redis (either index kind)."""
    owners = set()
    async for stream in cache.redis.scan_iter(cache.keys.cache_vectors("*")):
        owners |= {f[b"o"].decode() for _i, f in await cache.redis.xrange(stream)}
    async for ages in cache.redis.scan_iter(cache.keys.cache_vset_ages("*")):
        vset = cache.keys.cache_vset(ages.decode().rsplit(":", 1)[1])
        for member, _ in await cache.redis.zrange(ages, 0, -1, withscores=True):
            attributes = await cache.redis.execute_command("VGETATTR", vset, member)
            owners.add(orjson.loads(attributes)["o"])
    return owners


def semantic_settings(
    redis_url: str, fake: FakeProvider | None = None, **overrides: Any
) -> Settings:
    return make_settings(
        redis_url, fake, cache_semantic=True, cache_embedder="hashing", **overrides
    )


async def test_semantic_hit_for_the_same_question_worded_a_little_differently(
    redis_url: str,
) -> None:
    settings = semantic_settings(redis_url)
    async with cache_on(settings) as cache:
        assert cache.semantic is not None
        assert await answer(cache, task(prompt="How do I reset my password?", task_type="faq"), "A")
        hit = await served(cache, task(prompt="how do i reset my password", task_type="faq"))
        assert hit is not None and hit["cache"] == "semantic" and hit["output"] == "A"
        stats = {(r.tenant, r.model): r for r in await cache.stats()}
        assert stats[("default", MODEL)].semantic_hits == 1


QUESTION = "How do I reset the password of my online banking account from the mobile app?"


@pytest.mark.parametrize(
    "near_miss",
    [
        QUESTION.replace("do I reset", "do I not reset"),  # a negation
        QUESTION.replace("?", " 2 times?"),  # a number
        QUESTION.replace("?", " on 2024-05-01?"),  # a date
        QUESTION.replace("account", "account A1234"),  # an id
        QUESTION.replace("mobile", "desktop"),  # another subject
    ],
)
async def test_the_guard_blocks_near_misses_above_the_threshold(
    redis_url: str, near_miss: str
) -> None:
    settings = semantic_settings(redis_url)
    async with cache_on(settings) as cache:
        assert cache.semantic is not None
        assert await answer(cache, task(prompt=QUESTION, task_type="faq"), "A")
        vectors = await cache.semantic.embed([QUESTION, near_miss])
        threshold = cache.semantic.threshold_for(near_miss)
        assert float(vectors[0] @ vectors[1]) >= threshold  # so the guard decides
        assert await served(cache, task(prompt=near_miss, task_type="faq")) is None
        assert cache.semantic.blocked == 1


async def test_semantic_scope_is_tenant_model_system_and_parameters(redis_url: str) -> None:
    settings = semantic_settings(redis_url)
    async with cache_on(settings) as cache:
        assert await answer(cache, task(prompt="How do I reset my password?", task_type="faq"), "A")
        near = {"prompt": "how do i reset my password", "task_type": "faq"}
        for other in (
            {"tenant": "globex"},
            {"system": "Reply in French."},
            {"temperature": 0.5},
            {"model": "gpt-4.1-mini"},
            {"task_type": "classification"},  # not a semantic task type by default
            {"ttl_class": "real_time"},  # not a semantic TTL class by default
        ):
            assert await served(cache, task(**{**near, **other})) is None, other
        assert await served(cache, task(**near)) is not None


@pytest.mark.parametrize("opted_in", [False, True])
async def test_batch_api_tasks_skip_the_semantic_cache_unless_opted_in(
    redis_url: str, opted_in: bool
) -> None:
    settings = semantic_settings(redis_url, cache_semantic_batch_api=opted_in)
    async with cache_on(settings) as cache:
        assert await answer(cache, task(prompt="How do I reset my password?", task_type="faq"), "A")
        bulk = task(prompt="how do i reset my password", task_type="faq").model_copy(
            update={"batch_api": True}
        )
        hit = await served(cache, bulk)
        assert (hit is not None) is opted_in
        exact = task(prompt="How do I reset my password?", task_type="faq")
        assert await served(cache, exact.model_copy(update={"batch_api": True})) is not None


async def test_semantic_entries_are_shared_by_every_process(redis_url: str) -> None:
    settings = semantic_settings(redis_url)
    async with cache_on(settings) as writer, cache_on(settings) as reader:
        assert await served(reader, task(prompt="Where is my parcel?", task_type="faq")) is None
        assert await answer(writer, task(prompt="Where is my parcel?", task_type="faq"), "B")
        hit = await served(reader, task(prompt="where is my parcel", task_type="faq"))
        assert hit is not None and hit["output"] == "B" and hit["cache"] == "semantic"


async def test_an_expired_semantic_entry_is_not_served(redis_url: str) -> None:
    settings = semantic_settings(redis_url)
    async with cache_on(settings) as cache:
        assert await answer(
            cache, task(prompt="Where is my parcel?", task_type="faq", ttl_s=1), "B"
        )
        await asyncio.sleep(1.2)
        assert await served(cache, task(prompt="where is my parcel", task_type="faq")) is None


class Counting(HashingEmbedder):
    """The test embedder, counting the texts it was asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    async def embed(self, texts: Any) -> Any:
        self.texts += list(texts)
        return await super().embed(texts)


class Down(HashingEmbedder):
    """The test embedder's name and scope, but every call fails like an endpoint outage."""

    async def embed(self, texts: Any) -> Any:
        raise TransientError("embedding endpoint down", provider="emb")


async def test_prompts_are_embedded_once_at_submit_and_never_by_the_store(
    redis_url: str,
) -> None:
    settings = semantic_settings(redis_url)
    embedder = Counting()
    async with cache_on(settings, embedder=embedder) as cache:
        first = task(prompt="Where is my parcel?", task_type="faq")
        assert await answer(cache, first, "B")  # lookup embeds; store uses that vector
        assert embedder.texts == ["Where is my parcel?"]
        assert await served(cache, first) is not None  # an exact hit embeds nothing
        assert embedder.texts == ["Where is my parcel?"]
        hit = await served(cache, task(prompt="where is my parcel", task_type="faq"))
        assert hit is not None and hit["cache"] == "semantic"


async def test_a_failing_embedder_costs_savings_not_answers(redis_url: str) -> None:
    settings = semantic_settings(redis_url)
    parcel = task(prompt="Where is my parcel?", task_type="faq")
    async with cache_on(settings) as working, cache_on(settings, embedder=Down()) as broken:
        assert await answer(working, parcel, "B")
        found = await broken.lookup([task(prompt="where is my parcel", task_type="faq")])
        assert found.hits == [] and len(found.intents) == 1  # a miss, still cached exactly
        hit = await served(broken, parcel)
        assert hit is not None and hit["cache"] == "exact"
        other = task(prompt="Do you ship abroad?", task_type="faq")
        assert await answer(broken, other, "D")  # cached exactly, without a vector
        assert await served(working, other) is not None
        assert await served(working, task(prompt="do you ship abroad", task_type="faq")) is None


# analytics


async def test_stats_count_entries_hits_and_savings_per_tenant_and_model(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with cache_on(settings) as cache:
        assert await answer(cache, task(tenant="acme"), "Paris", cost_nusd=2500)
        for _ in range(3):
            assert await served(cache, task(tenant="acme")) is not None
        assert await served(cache, task(tenant="acme", prompt="Something else")) is None
        rows = {(r.tenant, r.model): r for r in await cache.stats()}
        acme = rows[("acme", MODEL)]
        assert (acme.entries, acme.lookups, acme.exact_hits, acme.stores) == (1, 5, 3, 1)
        assert acme.saved_nusd == 7500 and acme.saved_input_tokens == 60
        assert acme.exact_hit_rate == pytest.approx(3 / 5)
        assert await cache.stats(tenant="globex") == []


async def test_cache_stats_command_prints_json_rows(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    settings = make_settings(redis_url)
    async with cache_on(settings) as cache:
        assert await answer(cache, task(tenant="acme"), "Paris")
        assert await served(cache, task(tenant="acme")) is not None
    args = argparse.Namespace(tenant=None, json=True)
    assert await cmd_cache_stats(args, settings) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["tenant"] == "acme" and lines[0]["exact_hits"] == 1
    assert lines[-1]["tenant"] == "*" and lines[-1]["entries"] == 1


async def test_clear_deletes_one_tenants_answers_and_prompts_only(redis_url: str) -> None:
    import argparse

    settings = semantic_settings(redis_url)
    async with cache_on(settings) as cache:
        for tenant in ("acme", "globex"):
            assert await answer(cache, task(prompt=QUESTION, task_type="faq", tenant=tenant), "A")
        args = argparse.Namespace(tenant="acme", all=False)
        assert await cmd_cache_clear(args, settings) == 0
        near = {"prompt": QUESTION.lower(), "task_type": "faq"}
        assert await served(cache, task(prompt=QUESTION, task_type="faq", tenant="acme")) is None
        assert await served(cache, task(**near, tenant="acme")) is None
        assert await served(cache, task(**near, tenant="globex")) is not None
        assert await vector_owners(cache) == {"globex"}  # acme's prompt is gone from Redis too
        assert await cache.clear() == 1
        assert await served(cache, task(prompt=QUESTION, task_type="faq", tenant="globex")) is None


# end to end: workers, the fake provider, job files


def write_jobs(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


async def test_repeated_tasks_reach_the_provider_once_per_tenant(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, submit_chunk=3, linger_ms=0)
    lines = [
        {"id": f"{tenant}-{i}", "tenant": tenant, "task_type": "faq", "prompt": "Refund policy?"}
        for i in range(7)
        for tenant in ("acme", "globex")
    ]
    path = write_jobs(tmp_path / "jobs.jsonl", lines)
    async with pipeline_client(settings) as client, running_worker(settings):
        first = await client.submit_file(path)
        await client.wait(first.run_id, timeout_s=20)
        assert fake.stats()["requests"] == 2  # once per tenant, though asked 14 times
        second = await client.submit_file(path)
        await client.wait(second.run_id, timeout_s=20)
        results = [r async for r in client.results(second.run_id)]
        stats = await client.pipeline.cache.stats()
    assert fake.stats()["requests"] == 2  # the second run came from the cache alone
    assert [r.id for r in results] == [line["id"] for line in lines]
    assert {r.cache for r in results} == {"exact"}
    assert all(r.output == expected_output("Refund policy?") for r in results)
    assert all(r.cost_usd == 0 and r.status == "ok" for r in results)
    assert {r.tenant for r in stats} == {"acme", "globex"}
    assert all(r.exact_hits >= 7 and r.entries == 1 for r in stats)


async def test_no_cache_tasks_leave_nothing_in_redis_and_always_call(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, linger_ms=0)
    lines = [{"id": "n1", "ttl_class": "no_cache", "prompt": "Fresh number please"}]
    path = write_jobs(tmp_path / "jobs.jsonl", lines)
    async with pipeline_client(settings) as client, running_worker(settings):
        for _ in range(2):
            run = await client.submit_file(path)
            await client.wait(run.run_id, timeout_s=20)
            [result] = [r async for r in client.results(run.run_id)]
            assert result.cache == "miss" and result.status == "ok"
        redis = client.pipeline.redis
        cache_keys = [k async for k in redis.scan_iter(f"{settings.key_prefix}:cache:*")]
    assert fake.stats()["items"] == 2
    assert cache_keys == []


async def test_a_paraphrase_in_a_later_run_is_answered_from_the_semantic_cache(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = semantic_settings(redis_url, fake, linger_ms=0)
    negated = QUESTION.replace("do I reset", "do I not reset")
    first = write_jobs(tmp_path / "a.jsonl", [{"id": "a", "task_type": "faq", "prompt": QUESTION}])
    second = write_jobs(
        tmp_path / "b.jsonl",
        [
            {"id": "b", "task_type": "faq", "prompt": QUESTION.lower().rstrip("?")},
            {"id": "c", "task_type": "faq", "prompt": negated},
        ],
    )
    async with pipeline_client(settings) as client, running_worker(settings):
        run = await client.submit_file(first)
        await client.wait(run.run_id, timeout_s=20)
        run = await client.submit_file(second)
        await client.wait(run.run_id, timeout_s=20)
        results = {r.id: r async for r in client.results(run.run_id)}
    assert results["b"].cache == "semantic"
    assert results["b"].output == expected_output(QUESTION)
    assert results["c"].cache == "miss"  # the negation is blocked: it got its own answer
    assert results["c"].output == expected_output(negated)
    assert fake.stats()["items"] == 2
