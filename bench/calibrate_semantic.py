"""Calibrate the semantic-cache threshold of each embedder on the labelled pairs.

    python bench/calibrate_semantic.py                       # every local embedder
    python bench/calibrate_semantic.py --embedder minilm     # one of: minilm e5 hashing openai
    OPENAI_API_KEY=... python bench/calibrate_semantic.py --embedder openai \
        --base-url https://api.openai.com/v1 --model text-embedding-3-small --dim 1536

For every pair of tests/data/semantic_pairs.jsonl it embeds both prompts, takes their cosine
similarity and asks pipeline.semantic_guard whether a hit would be refused. A pair is a *hit* at
threshold t when similarity >= t and the guard lets it through. For a sweep of t it prints the
paraphrase hit rate and the near-miss false-hit rate (with and without the guard), plus the hit
rate on unrelated prompts (pairs of prompts from different rows, same language), and picks the
lowest t whose near-miss false hits are <= 1% and unrelated hits are 0. That t is what belongs
in the embedder class's `threshold` default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.embedders import (  # noqa: E402
    Embedder,
    HashingEmbedder,
    LocalE5,
    LocalMiniLM,
    OpenAIEmbeddings,
)
from pipeline.semantic_guard import blocks_semantic_hit  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "semantic_pairs.jsonl"
MAX_FALSE_HIT_RATE = 0.01


@dataclass(frozen=True)
class Scored:
    """One labelled pair with its similarity and the guard's verdict."""

    label: str
    kind: str
    lang: str
    similarity: float
    blocked: bool


def load_pairs(path: Path = DATA) -> list[dict[str, str]]:
    """The labelled pairs, one dict per JSONL line."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


async def score_pairs(embedder: Embedder, pairs: list[dict[str, str]]) -> list[Scored]:
    """Embed every distinct prompt once and score each pair."""
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    vectors = await embedder.embed(texts)
    index = {t: i for i, t in enumerate(texts)}
    return [
        Scored(p["label"], p["kind"], p["lang"],
               float(vectors[index[p["a"]]] @ vectors[index[p["b"]]]),
               blocks_semantic_hit(p["a"], p["b"]) is not None)
        for p in pairs
    ]


async def score_unrelated(embedder: Embedder, pairs: list[dict[str, str]],
                          per_row: int = 8, seed: int = 4) -> list[Scored]:
    """Prompts of different rows (same language, no shared text): none of these should hit."""
    rng = random.Random(seed)
    out: list[tuple[str, str, str]] = []
    for i, row in enumerate(pairs):
        others = [p for j, p in enumerate(pairs) if j != i and p["lang"] == row["lang"]
                  and not {p["a"], p["b"]} & {row["a"], row["b"]}]
        out += [(row["a"], rng.choice(others)[rng.choice("ab")], row["lang"])
                for _ in range(per_row)]
    texts = sorted({a for a, _, _ in out} | {b for _, b, _ in out})
    vectors = await embedder.embed(texts)
    index = {t: i for i, t in enumerate(texts)}
    return [Scored("unrelated", "unrelated", lang,
                   float(vectors[index[a]] @ vectors[index[b]]),
                   blocks_semantic_hit(a, b) is not None) for a, b, lang in out]


def hit_rate(rows: list[Scored], threshold: float, *, guard: bool = True) -> float:
    """Share of `rows` that would be served from the cache at `threshold`."""
    if not rows:
        return 0.0
    hits = sum(r.similarity >= threshold and not (guard and r.blocked) for r in rows)
    return hits / len(rows)


def choose_threshold(scored: list[Scored], unrelated: list[Scored]) -> float:
    """Lowest threshold (0.005 steps) with near-miss false hits <= 1% and no unrelated hit."""
    near = [r for r in scored if r.label == "near_miss"]
    for t in np.arange(0.30, 1.0001, 0.005):
        if hit_rate(near, t) <= MAX_FALSE_HIT_RATE and hit_rate(unrelated, t) == 0.0:
            return round(float(t), 3)
    return 1.0


def report(name: str, scored: list[Scored], unrelated: list[Scored]) -> float:
    """Print the sweep and the per-language figures at the chosen threshold; return it."""
    para = [r for r in scored if r.label == "paraphrase"]
    near = [r for r in scored if r.label == "near_miss"]
    chosen = choose_threshold(scored, unrelated)
    print(f"\n== {name}: {len(para)} paraphrases, {len(near)} near-misses, "
          f"{len(unrelated)} unrelated pairs")
    print(f"guard alone refuses {sum(r.blocked for r in near) / len(near):.1%} of near-misses "
          f"and {sum(r.blocked for r in para) / len(para):.1%} of paraphrases")
    print("threshold  para-hit  near-false  near-false(no guard)  unrelated-hit")
    sweep = sorted({round(float(t), 3) for t in np.arange(0.50, 1.0, 0.025)} | {chosen})
    for t in sweep:
        mark = "  <- chosen" if t == chosen else ""
        print(f"  {t:7.3f}   {hit_rate(para, t):6.1%}    {hit_rate(near, t):6.1%}"
              f"        {hit_rate(near, t, guard=False):6.1%}            "
              f"{hit_rate(unrelated, t):6.1%}{mark}")
    for lang in ("all", "en", "ja"):
        sel = [r for r in scored if lang == "all" or r.lang == lang]
        p = [r for r in sel if r.label == "paraphrase"]
        n = [r for r in sel if r.label == "near_miss"]
        print(f"  at {chosen:.3f} [{lang}] paraphrase hits {hit_rate(p, chosen):.1%} "
              f"({sum(r.similarity >= chosen and not r.blocked for r in p)}/{len(p)}), "
              f"near-miss false hits {hit_rate(n, chosen):.1%} "
              f"({sum(r.similarity >= chosen and not r.blocked for r in n)}/{len(n)})")
    return chosen


def make_embedder(kind: str, args: argparse.Namespace) -> Embedder:
    """Build the embedder named on the command line."""
    if kind == "minilm":
        return LocalMiniLM()
    if kind == "e5":
        return LocalE5()
    if kind == "hashing":
        return HashingEmbedder()
    key = os.environ.get(args.api_key_env, "")
    if not key:
        raise SystemExit(f"set {args.api_key_env} to calibrate an OpenAI-compatible endpoint")
    return OpenAIEmbeddings(base_url=args.base_url, api_key=key, model=args.model, dim=args.dim)


async def main() -> None:
    """Calibrate the embedders named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", choices=["minilm", "e5", "hashing", "openai", "local"],
                        default="local", help="'local' = minilm, e5 and hashing")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--base-url", default="https://api.openai.com/v1")
    parser.add_argument("--model", default="text-embedding-3-small")
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    args = parser.parse_args()
    pairs = load_pairs(args.data)
    kinds = ["minilm", "e5", "hashing"] if args.embedder == "local" else [args.embedder]
    chosen = {}
    for kind in kinds:
        embedder = make_embedder(kind, args)
        started = time.perf_counter()
        scored = await score_pairs(embedder, pairs)
        unrelated = await score_unrelated(embedder, pairs)
        elapsed_s = time.perf_counter() - started
        chosen[embedder.name] = report(f"{embedder.name} ({elapsed_s:.1f}s incl. load)",
                                       scored, unrelated)
        if isinstance(embedder, OpenAIEmbeddings):
            await embedder.aclose()
    print("\nchosen thresholds:", json.dumps(chosen))


if __name__ == "__main__":
    asyncio.run(main())
