"""No wrong semantic hits: the guard's relations and actions through the cache, and the grey zone
verified on a cheap model (fake provider and simulated provider)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.cache import ResponseCache
from pipeline.cache.guard import blocks_semantic_hit, prompt_facts
from pipeline.cache.verdicts import VERIFY_SYSTEM, offline_verdicts, read_verdicts, verify_prompt
from pipeline.cache.verify import PairCheck
from pipeline.config.settings import Settings
from pipeline.core.wiring import Pipeline
from pipeline.costs.ledger import Ledger
from pipeline.fingerprint import item_key
from pipeline.models import CallRecord, Message, Task, TTLClass, Usage
from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker

WITHIN_AFTER = ("Can I get a refund within 30 days?", "Is a refund possible after thirty days?")
THIRTY_30 = ("Can I get a refund within 30 days?", "Can I get a refund after thirty days?")
BOLD = ("How do I remove bold from the text?", "How do I make the text bold?")
JA_WITHIN_AFTER = ("30日以内に返金できますか？", "三十日以降に返金できますか？")
NEVER_SERVED = [WITHIN_AFTER, THIRTY_30, BOLD, JA_WITHIN_AFTER]
# (query, cached prompt) that ask the same thing: a numbers-in-words paraphrase, and a frame
# change the guard allows
SAME = [
    ("Can I get a refund within 30 days?", "Can I get a refund within thirty days?"),
    ("30日以内に返金できますか？", "三十日以内に返金できますか？"),
    ("How can I reset my password?", "How do I reset my password?"),
]


def faq(prompt: str, tenant: str = "acme", task_id: str = "t") -> Task:
    return Task(
        id=task_id,
        messages=(Message(role="user", content=prompt),),
        task_type="faq",
        model="gpt-4o-mini",
        max_tokens=150,
        ttl_class=TTLClass.semi_static,
        tenant=tenant,
    )


async def cache_answer(cache: ResponseCache, *tasks: Task) -> None:
    """Answer `tasks` (looked up together, so none is a candidate for another) into the cache."""
    found = await cache.lookup(tasks)
    assert found.misses == list(tasks)
    async with cache.redis.pipeline(transaction=False) as pipe:
        cache.remember(pipe, found)
        await pipe.execute()
    for task in tasks:
        output = {"status": "ok", "output": f"answer to {task.id}"}
        assert await cache.store(item_key(task), output)


async def served(
    cache: ResponseCache, pairs: Sequence[tuple[str, str]], tenant: str = "p"
) -> list[str | None]:
    """Cache each pair's second prompt (a tenant per pair), ask its first: the hit kinds."""
    await cache_answer(
        cache, *(faq(cached, f"{tenant}{n}", f"c{n}") for n, (_, cached) in enumerate(pairs))
    )
    found = await cache.lookup([faq(q, f"{tenant}{n}", f"q{n}") for n, (q, _) in enumerate(pairs)])
    hits = {h["id"]: h for h in found.hits}
    for n in range(len(pairs)):
        if f"q{n}" in hits:
            assert hits[f"q{n}"]["output"] == f"answer to c{n}"  # never another pair's answer
    return [hits[f"q{n}"]["cache"] if f"q{n}" in hits else None for n in range(len(pairs))]


async def served_by_worker(
    settings: Settings, pairs: Sequence[tuple[str, str]], tenant: str = "p"
) -> list[str | None]:
    """Through a client and a worker: answer each pair's second prompt (a tenant per pair),
    then ask its first; the hit kinds of the first prompts' results."""

    def wave(which: int, prefix: str) -> list[dict[str, Any]]:
        return [
            {
                "id": f"{prefix}{n}",
                "tenant": f"{tenant}{n}",
                "task_type": "faq",
                "prompt": pair[which],
            }
            for n, pair in enumerate(pairs)
        ]

    results: dict[str, Any] = {}
    async with pipeline_client(settings) as client, running_worker(settings):
        for which, prefix in ((1, "c"), (0, "q")):
            run = await client.submit(wave(which, prefix), complete=True)
            await client.wait(run, timeout_s=30)
            results |= {r.id: r async for r in client.results(run)}
    kinds: list[str | None] = []
    for n in range(len(pairs)):
        result = results[f"q{n}"]
        assert result.status == "ok"
        if result.cache == "semantic":  # never another pair's answer
            assert result.output == results[f"c{n}"].output
        kinds.append("semantic" if result.cache == "semantic" else None)
    return kinds


def asked_pairs(fake: FakeProvider) -> list[str]:
    """The user messages of the verification calls the fake provider received."""
    asked = [b["messages"][-1]["content"] for b in fake.stats()["bodies"]]
    return [a for a in asked if a.startswith('{"pairs"')]


async def ledger_records(redis: Redis, settings: Settings) -> list[CallRecord]:
    ledger = Ledger(redis, Pipeline(settings, redis).keys)
    return [e async for e in ledger.entries() if isinstance(e, CallRecord)]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def semantic(redis_url: str, fake: FakeProvider | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "cache_semantic": True,
        "cache_embedder": "hashing",
        "cache_semantic_verify": True,
    }
    return make_settings(redis_url, fake, **(values | overrides))


def grey_settings(redis_url: str, fake: FakeProvider, **overrides: Any) -> Settings:
    """Every candidate falls in the grey zone and is verified on gpt-4o-mini."""
    values: dict[str, Any] = {
        "cache_semantic_threshold": 0.999,
        "cache_semantic_verify_margin": 0.99,
        "cache_semantic_verify_model": "gpt-4o-mini",
    }
    return semantic(redis_url, fake, **(values | overrides))


@pytest.mark.parametrize("query, cached", NEVER_SERVED)
def test_guard_refuses_a_changed_relation_or_action(query: str, cached: str) -> None:
    assert blocks_semantic_hit(query, cached) is not None
    assert blocks_semantic_hit(cached, query) is not None


@pytest.mark.parametrize("query, cached", SAME)
def test_guard_lets_numbers_in_words_and_frame_changes_through(query: str, cached: str) -> None:
    assert blocks_semantic_hit(query, cached) is None


@pytest.mark.parametrize(
    "query, cached",
    [
        ("Is shipping free on orders over $50?", "Is shipping free on orders under $50?"),
        ("Do orders of at least $50 ship free?", "Do orders of at most $50 ship free?"),
        ("Can I cancel before the 14th day?", "Can I cancel after the 14th day?"),
        ("How do I apply a filter to the photo?", "How do I remove a filter from the photo?"),
        ("5000円以上の注文は送料無料ですか？", "5000円未満の注文は送料無料ですか？"),
        ("写真にフィルターを適用するには？", "写真のフィルターを解除するには？"),
        ("梅田店の営業時間は？", "天神店の営業時間は？"),
        ("How do I change my order?", "How do I cancel my order?"),
        ("Can I update my subscription online?", "Can I pause my subscription online?"),
    ],
)
def test_guard_refuses_the_other_relations_actions_and_places(query: str, cached: str) -> None:
    assert blocks_semantic_hit(query, cached) is not None


@pytest.mark.parametrize(
    "query, cached, same",
    [
        ("Start a 30-day trial", "Start a thirty-day trial", True),
        ("I need twenty five boxes", "I need 25 boxes", True),
        ("Can I order a dozen eggs?", "Can I order 12 eggs?", True),
        ("Can I order two dozen eggs?", "Can I order 24 eggs?", True),
        ("Can I order half a dozen eggs?", "Can I order 6 eggs?", True),
        ("Can I order a dozen eggs?", "Can I order 13 eggs?", False),
        ("三十日以内に返品できますか？", "30日以内に返品できますか？", True),
    ],
)
def test_numbers_are_compared_in_one_spelling(query: str, cached: str, same: bool) -> None:
    assert (blocks_semantic_hit(query, cached) is None) is same


def test_relation_words_away_from_numbers_are_no_relation() -> None:
    # "over the phone" and "the ticket below" are no amounts
    for text in ("Can I pay over the phone?", "Summarise the ticket below.", "以下の文を要約して"):
        assert prompt_facts(text).relations == frozenset()
    assert prompt_facts("Orders over thirty dollars, or below $5?").relations == {"over", "under"}


def test_verdicts_are_yes_only_when_clearly_yes() -> None:
    text = '```json\n{"1": "yes", "2": "no", "3": " YES ", "4": "yes.", "5": true}\n```'
    assert read_verdicts(text, 6) == [True, False, True, False, False, False]
    assert read_verdicts("I think so", 2) == [False, False]
    assert read_verdicts('{"1": "yes"', 1) == [False]


def test_offline_verdicts_confirm_only_the_same_words() -> None:
    prompt = verify_prompt([("How do I reset my password?", "how do I reset my password"), SAME[2]])
    assert offline_verdicts(prompt) == '{"1":"yes","2":"no"}'
    assert VERIFY_SYSTEM.startswith("You check whether two requests")


async def test_never_served_pairs_above_the_threshold(redis: Redis, redis_url: str) -> None:
    # every candidate scores above this threshold: only the guard stands between them
    settings = semantic(redis_url, cache_semantic_threshold=0.01, cache_semantic_threshold_ja=0.01)
    cache = ResponseCache(redis, settings, Pipeline(settings, redis).keys)
    kinds = await served(cache, [*NEVER_SERVED, *SAME])
    assert kinds == [None] * len(NEVER_SERVED) + ["semantic"] * len(SAME)


async def test_never_served_pairs_even_if_the_verifier_says_yes(
    redis: Redis, redis_url: str, fake: FakeProvider
) -> None:
    # every candidate falls in the grey zone and the model confirms everything it is asked
    settings = grey_settings(redis_url, fake, cache_semantic_threshold_ja=0.999)
    kinds = await served_by_worker(settings, [*NEVER_SERVED, *SAME])
    assert kinds == [None] * len(NEVER_SERVED) + ["semantic"] * len(SAME)
    assert len(asked_pairs(fake)) == 3  # the pairs the guard refused never reach the model


async def test_grey_zone_is_verified_in_one_packed_call_recorded_and_cached(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = grey_settings(redis_url, fake)
    cached = ["How do I reset my password?", "Where can I download my invoice?"]
    queries = ["How can I reset my password?", "Where could I download my invoice?"]
    waves = [cached, queries, queries]
    results = []
    async with pipeline_client(settings) as client, running_worker(settings):
        for n, prompts in enumerate(waves):
            tasks = [
                {"id": f"w{n}-{i}", "task_type": "faq", "prompt": p} for i, p in enumerate(prompts)
            ]
            run = await client.submit(tasks, complete=True)
            await client.wait(run, timeout_s=30)
            results.append([r async for r in client.results(run)])
            if n == 1:
                assert len(asked_pairs(fake)) == 1  # both pairs in one call
        records = await ledger_records(client.pipeline.redis, settings)
        stats = {(r.tenant, r.model): r for r in await client.pipeline.cache.stats()}
    answers = [r.output for r in results[0]]
    for wave in results[1:]:
        assert [r.cache for r in wave] == ["semantic", "semantic"]
        assert [r.output for r in wave] == answers
    assert len(asked_pairs(fake)) == 1  # verdicts cached per pair: no second call
    verify = [r for r in records if r.batch_id.startswith("verify-")]
    assert len(verify) == 1 and verify[0].batch_size == 2 and verify[0].tenant == "default"
    assert verify[0].cost_usd is not None and verify[0].cost_usd > 0
    assert stats[("default", "gpt-4o-mini")].semantic_verified == 4
    assert stats[("default", "gpt-4o-mini")].semantic_hits == 4


async def test_a_refused_candidate_is_answered_by_the_provider(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = grey_settings(redis_url, fake)
    fake.verdict = "no"
    pair = ("How can I change my username?", "How do I change my username?")
    assert await served_by_worker(settings, [pair]) == [None]
    assert len(asked_pairs(fake)) == 1
    answered = [b for b in fake.stats()["bodies"] if pair[0] in str(b["messages"])]
    assert len(answered) == 2  # asked about, then answered by its own call


async def test_a_failed_verification_is_a_miss_and_is_asked_again(
    redis: Redis, redis_url: str, fake: FakeProvider
) -> None:
    settings = semantic(
        redis_url,
        fake,
        cache_semantic_verify_model="gpt-4o-mini",
        provider_retries=0,
    )
    pipeline = Pipeline(settings, redis)
    assert pipeline.executor.grey is not None
    verifier = pipeline.executor.grey.verifier
    check = PairCheck(
        "acme", "scope", "How can I reset my password?", "How do I reset my password?"
    )
    fake.add_faults({"kind": "500"})
    assert await verifier.confirm([check]) == [False]
    assert await redis.get(pipeline.keys.cache_verdict(check.digest)) is None  # nothing learnt
    assert await verifier.confirm([check]) == [True]
    assert await verifier.confirm([check]) == [True]
    assert len(asked_pairs(fake)) == 2
    await pipeline.aclose()


async def test_simulated_provider_confirms_nothing_that_differs(redis_url: str) -> None:
    settings = semantic(
        redis_url, cache_semantic_threshold=0.999, cache_semantic_verify_margin=0.99
    )
    differs = [("How can I reset my password?", "How do I reset my password?"), *NEVER_SERVED]
    assert await served_by_worker(settings, differs) == [None] * len(differs)
    same_words = [("how do I reset my password", "How do I reset my password?")]
    assert await served_by_worker(settings, same_words, "s") == ["semantic"]
    redis = Redis.from_url(redis_url)
    records = await ledger_records(redis, settings)
    await redis.aclose()
    assert any(r.batch_id.startswith("verify-") for r in records)
    assert records and all(r.simulated for r in records)


def test_verification_is_off_by_default_and_then_there_is_no_grey_zone(redis_url: str) -> None:
    settings = make_settings(redis_url, cache_semantic=True, cache_embedder="hashing")
    assert not settings.cache_semantic_verify and settings.cache_semantic_verify_margin > 0
    pipeline = Pipeline(settings, Redis.from_url(redis_url))
    assert pipeline.executor.grey is None
    assert pipeline.cache.semantic is not None and pipeline.cache.semantic.grey_margin == 0


def test_the_verification_model_is_the_cheapest_one_served(
    redis_url: str, fake: FakeProvider
) -> None:
    fake_openai = semantic(redis_url, fake)  # serves gpt-* only
    pipeline = Pipeline(fake_openai, Redis.from_url(redis_url))
    assert pipeline.executor.grey is not None
    chosen = pipeline.executor.grey.verifier.model()
    served = {m for tier in fake_openai.tiers.values() for m in tier if m.startswith("gpt-")}
    typical = Usage(input_tokens=400, output_tokens=20)
    prices = {m: pipeline.prices.price(m, typical) for m in served}
    assert chosen in served
    assert prices[chosen] == min(p for p in prices.values() if p is not None)
    pinned = semantic(redis_url, cache_semantic_verify_model="gpt-4.1-nano")
    grey = Pipeline(pinned, Redis.from_url(redis_url)).executor.grey
    assert grey is not None and grey.verifier.model() == "gpt-4.1-nano"


async def test_through_client_and_worker_grey_hits_are_verified_and_paid_for(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = grey_settings(redis_url, fake, linger_ms=0, cache_semantic_threshold_ja=0.999)
    first = [
        {"id": "c0", "task_type": "faq", "prompt": "How do I reset my password?"},
        {"id": "c1", "task_type": "faq", "prompt": WITHIN_AFTER[1]},
    ]
    second = [
        {"id": "q0", "task_type": "faq", "prompt": "How can I reset my password?"},
        {"id": "q1", "task_type": "faq", "prompt": WITHIN_AFTER[0]},
    ]
    async with pipeline_client(settings) as client, running_worker(settings):
        run = await client.submit(first, complete=True)
        await client.wait(run, timeout_s=20)
        answered = {r.id: r.output async for r in client.results(run)}
        run = await client.submit(second, complete=True)
        await client.wait(run, timeout_s=20)
        results = {r.id: r async for r in client.results(run)}
        records = await ledger_records(client.pipeline.redis, settings)
    assert results["q0"].cache == "semantic" and results["q0"].output == answered["c0"]
    assert results["q1"].cache == "miss"  # the within/after pair: answered by the provider
    assert results["q1"].output == expected_output(WITHIN_AFTER[0])
    verify = [r for r in records if r.batch_id.startswith("verify-")]
    assert len(verify) == 1 and verify[0].batch_size == 1  # only the pair the guard let through
    assert verify[0].cost_usd is not None and verify[0].cost_usd > 0


async def test_a_batch_of_grey_and_other_items_runs_as_two_parts_once(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = grey_settings(redis_url, fake)
    cached = {"id": "c0", "task_type": "faq", "prompt": "How do I reset my password?"}
    grey = {"id": "q0", "task_type": "faq", "prompt": "How can I reset my password?"}
    other = {"id": "q1", "task_type": "faq", "prompt": "パスワードを忘れました"}  # nothing near
    async with pipeline_client(settings) as client, running_worker(settings):
        first = await client.submit([cached], complete=True)
        await client.wait(first, timeout_s=30)
        run = await client.submit([grey, other], complete=True)
        await client.wait(run, timeout_s=30)
        results = {r.id: r async for r in client.results(run)}
        records = await ledger_records(client.pipeline.redis, settings)
        [part] = [r.batch_id for r in records if r.batch_id.endswith(".m")]
        requests = fake.stats()["requests"]
        parent = part[: -len(".m")]  # reopened and rerun, as a retried job would: no new call
        await client.pipeline.redis.hset(client.pipeline.keys.batch(parent), "status", "open")
        assert await client.pipeline.executor.run(parent) == []
        assert fake.stats()["requests"] == requests
    assert results["q0"].cache == "semantic"
    assert results["q1"].cache == "miss" and results["q1"].output == expected_output(
        other["prompt"]
    )
    assert len(asked_pairs(fake)) == 1
