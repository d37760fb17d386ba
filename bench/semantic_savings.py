"""Does the semantic cache pay? A paraphrase-heavy FAQ workload through the whole pipeline, run
with the shipped defaults (the exact cache only), with the semantic cache on and with grey-zone
verification on too, in one process run.

    python bench/semantic_savings.py [--latency-s 0.3] [--ms-per-token 5] [--repeat-share 0.2]
                                     [--warm-model] [--repeat N]

Workload (tests/data/semantic_pairs.jsonl, English and Japanese): wave 1 asks every distinct
first prompt of the labelled pairs (plus a share of them again, word for word); once it is
answered, wave 2 asks every pair's second prompt: paraphrases of wave 1 (a semantic hit is right)
and near-misses (a semantic hit is a WRONG answer). Both waves run through `BatchwiseClient`, an
in-process worker and the fake provider over HTTP, which answers every call after
`--latency-s` plus `--ms-per-token` per output token (a model's shape; 0 for a fixed latency).
The worker loads the embedding model at its start, in the background; `--warm-model` waits for
that load before timing (a long-lived worker), else it overlaps the first wave. Each served
semantic hit is judged by the prompt whose answer it got: a labelled paraphrase pair is right, a
labelled near-miss pair is wrong, anything else unjudged. Printed per configuration: provider
calls and items, dollars (the ledger's prices, verification included), wall time (and per
wave), hits, wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing import FakeProvider, expected_output
from workers.testing import pipeline_client, running_worker

PAIRS = Path(__file__).resolve().parents[1] / "tests" / "data" / "semantic_pairs.jsonl"
KEY = "bench-key"
SYSTEM = "You are the support assistant of an online shop. Answer in one or two sentences."


def workload(repeat_share: float) -> tuple[list[str], list[str], dict[frozenset[str], str]]:
    """Wave 1 prompts, wave 2 prompts, and the label of each labelled pair."""
    rows = [orjson.loads(line) for line in PAIRS.read_bytes().splitlines() if line.strip()]
    firsts = list(dict.fromkeys(r["a"] for r in rows))
    wave1 = firsts + firsts[: int(len(firsts) * repeat_share)]
    wave2 = [r["b"] for r in rows]
    labels = {frozenset((r["a"], r["b"])): r["label"] for r in rows}
    return wave1, wave2, labels


async def run_wave(client: Any, prompts: list[str], wave: int) -> list[Any]:
    tasks = [
        {"id": f"w{wave}-{i}", "task_type": "faq", "system": SYSTEM, "prompt": p}
        for i, p in enumerate(prompts)
    ]
    run_id = await client.submit(tasks, complete=True)
    await client.wait(run_id, timeout_s=900)
    results = [r async for r in client.results(run_id)]
    summary = await client.summary(run_id)
    return [results, summary]


async def configuration(
    redis_url: str,
    fake: FakeProvider,
    waves: list[list[str]],
    *,
    semantic: bool,
    verify: bool = True,
    labels: dict[frozenset[str], str],
    warm_model: bool = False,
) -> dict[str, Any]:
    settings = load_settings(
        env={},
        cache_semantic=semantic,
        cache_semantic_verify=verify,
        redis_url=redis_url,
        key_prefix=f"savings{time.time_ns()}",
        queue_name=f"savings{time.time_ns()}:q",
        linger_ms=50,
        providers=(
            ProviderConfig(
                name="fake",
                kind="openai",
                base_url=fake.openai_base_url,
                api_key=KEY,
                models=("gpt-*",),
            ),
        ),
    )
    fake.reset()
    # grey-zone verification answered from the labels: a small model that is always right
    fake.verdict = lambda a, b: "yes" if labels.get(frozenset((a, b))) == "paraphrase" else "no"
    fake.latency_s, fake.latency_per_token_s = LATENCY_S
    fake.set_rate_limit(RATE_LIMIT[0], RATE_LIMIT[1])  # None: no limit
    out: dict[str, Any] = {"cost": Decimal(0), "results": []}
    async with pipeline_client(settings) as client, running_worker(settings) as worker:
        while "flusher" not in worker.ctx:  # the worker has started (as its model load has)
            await asyncio.sleep(0.01)
        if warm_model:  # a long-lived worker loaded it long ago
            await worker.ctx["warm"]
        started = time.perf_counter()
        out["waves_s"] = []
        for wave, prompts in enumerate(waves, 1):
            wave_started = time.perf_counter()
            results, summary = await run_wave(client, prompts, wave)
            out["waves_s"].append(time.perf_counter() - wave_started)
            out["results"].append(results)
            out["cost"] += summary.cost_usd
        out["wall_s"] = time.perf_counter() - started
    stats = fake.stats(bodies=False)
    out["calls"], out["items"] = stats["requests"], stats["items"]
    return out


LATENCY_S = [0.3, 0.005]  # per call, per output token
RATE_LIMIT: list[Any] = [None, 60.0]  # the provider's requests per window, the window in seconds
CONFIGURATIONS = (  # label, semantic cache, grey-zone verification
    ("exact only (default)", False, False),
    ("semantic", True, False),
    ("semantic + grey", True, True),
)


def judge(
    wave2: list[str], results: list[Any], labels: dict[frozenset[str], str], answers: dict[str, str]
) -> dict[str, int]:
    """Semantic hits of wave 2 by what the served answer was written for."""
    counts = {"semantic": 0, "exact": 0, "right": 0, "wrong": 0, "unjudged": 0}
    for prompt, result in zip(wave2, results, strict=True):
        if result.cache in ("exact", "semantic"):
            counts[result.cache] += 1
        if result.cache != "semantic":
            continue
        source = answers.get(result.output or "")
        label = labels.get(frozenset((prompt, source or "")))
        key = {"paraphrase": "right", "near_miss": "wrong"}.get(label or "", "unjudged")
        counts[key] += 1
    return counts


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-s", type=float, default=0.3, help="per provider call")
    parser.add_argument("--ms-per-token", type=float, default=5.0, help="per output token")
    parser.add_argument("--repeat-share", type=float, default=0.2)
    parser.add_argument(
        "--warm-model", action="store_true", help="load the embedding model before timing"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (median)")
    parser.add_argument(
        "--rpm", type=int, help="the provider allows this many requests per minute (429 beyond)"
    )
    parser.add_argument(
        "--window-s", type=float, default=60.0, help="with --rpm: the limit's window (rpm scaled)"
    )
    args = parser.parse_args()
    LATENCY_S[:] = [args.latency_s, args.ms_per_token / 1000]
    if args.rpm:
        RATE_LIMIT[:] = [max(1, round(args.rpm * args.window_s / 60)), args.window_s]
    wave1, wave2, labels = workload(args.repeat_share)
    answers = {expected_output(p): p for p in wave1}
    with tempfile.TemporaryDirectory() as tmp, FakeProvider(key=KEY) as fake:
        server = EmbeddedRedis(Path(tmp))
        url = server.start()
        try:
            tries: dict[str, list[dict[str, Any]]] = {}
            for _ in range(args.repeat):  # alternating, so a busy spell on the host hits all
                for label, semantic, verify in CONFIGURATIONS:
                    run = await configuration(
                        url,
                        fake,
                        [wave1, wave2],
                        semantic=semantic,
                        verify=verify,
                        labels=labels,
                        warm_model=args.warm_model,
                    )
                    tries.setdefault(label, []).append(run)
            runs = {  # the median run by wall time
                label: sorted(r, key=lambda run: run["wall_s"])[len(r) // 2]
                for label, r in tries.items()
            }
        finally:
            server.stop()
    print(
        f"{len(wave1) + len(wave2)} FAQ tasks: wave 1 {len(wave1)} (incl. word-for-word repeats), "
        f"wave 2 {len(wave2)} (paraphrases and near-misses of wave 1); gpt-4o-mini via the fake "
        f"provider, {args.latency_s * 1000:.0f} ms per call + {args.ms_per_token:g} ms per output "
        "token; grey-zone verification answered "
        "from the labels (a verification model that is always right); embedding model "
        + ("loaded before timing" if args.warm_model else "loaded within the first timed run")
        + (f"; the median of {args.repeat} alternating runs" if args.repeat > 1 else "")
        + (f"; the provider allows {args.rpm} requests a minute" if args.rpm else "")
    )
    print(
        f"{'':18}{'calls':>7}{'items':>7}{'cost $':>11}{'wall s':>8}{'wave 1':>8}{'wave 2':>8}"
        f"{'exact':>7}{'semantic':>9}{'right':>7}{'wrong':>7}{'unjudged':>9}"
    )
    for label, r in runs.items():
        c = judge(wave2, r["results"][1], labels, answers)
        print(
            f"{label:18}{r['calls']:>7}{r['items']:>7}{r['cost']:>11.5f}{r['wall_s']:>8.2f}"
            f"{r['waves_s'][0]:>8.2f}{r['waves_s'][1]:>8.2f}"
            f"{c['exact']:>7}{c['semantic']:>9}{c['right']:>7}{c['wrong']:>7}{c['unjudged']:>9}"
        )
    base = runs["exact only (default)"]
    for label in ("semantic", "semantic + grey"):
        sem = runs[label]
        print(
            f"{label} vs exact only: provider items {sem['items'] / max(base['items'], 1):.2f}x, "
            f"cost {float(sem['cost'] / base['cost']) if base['cost'] else 0:.2f}x, "
            f"wall time {sem['wall_s'] / base['wall_s']:.2f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
