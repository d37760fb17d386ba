"""What each lever saves on a realistic workload, measured through the whole pipeline.

    python bench/savings.py [--tasks 2000] [--seed 7]

A generated workload (three tenants; FAQ questions repeated with a Zipf-like skew, reviews,
ticket routing, extraction with a schema, summaries, translations, a few articles and analyses;
support-sized system prompts) is run through intake, routing, packing, workers and the ledger on
the simulated provider, on an embedded Redis with an in-process worker, once per configuration.
Levers are switched on one after another, so each row is measured with every lever above it:

    naive        every task alone on gpt-4o (explicit model, no_cache, batches of one)
    duplicates   identical tasks answered once (single-flight)
    routing      each task on its routed model
    compression  shorter instructions for every task type
    packing      tasks packed into shared calls where packing pays (pack_only_when_cheaper)
    audit        2% of packed items also run alone (the quality guard's cost)
    cascade      summaries, translations and analyses start on the cheap tier; a stand-in
                 judge fails 20% of the cheap model's answers, which escalate a tier
    batch API    the last run's calls priced at batch-API rates (priced, not run)

The `batchwise plan` estimate of the packing row is printed beside the measured figure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from arq.connections import RedisSettings, create_pool

from pipeline.config.loading import load_settings
from pipeline.config.records import CascadeSpec
from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.models import TASK_TYPES
from pipeline.routing.cascade import EvalContext, register_evaluator
from pipeline.routing.estimate import plan_file
from pipeline.state.embedded import EmbeddedRedis
from workers.lifecycle import in_process_worker, running

POLICIES = [
    "Returns are accepted within 30 days of delivery for unused items in their original packaging.",
    "Shipping is free on orders over $50 within the contiguous United States; otherwise $6.95.",
    "Refunds go to the original payment method within 5 business days of the return arriving.",
    "Orders can be changed or cancelled until they are packed, usually within two hours.",
    "We ship to Canada, the UK, the EU, Japan and Australia; duties are collected at checkout.",
    "Gift cards never expire and can be combined with one promotional code per order.",
    "Tents, packs and sleeping bags carry a two-year warranty against manufacturing defects.",
    "Members of the outfitters club earn 5% back in store credit on full-price purchases.",
    "Damaged deliveries must be reported with photos within 7 days to qualify for a replacement.",
    "Price adjustments are given once within 14 days if an item is reduced on our own site.",
]
FAQ_SYSTEM = (
    "You are the customer support assistant of {shop}, an online store for outdoor gear. "
    "Please answer the customer's question in two or three friendly sentences. It is very "
    "important that you only state facts from the policies below; if the policies do not "
    "cover the question, kindly say that a member of the team will reply by email. "
    "Do not invent order details, and make sure to never ask for payment information.\n"
    "Policies:\n- " + "\n- ".join(POLICIES)
)
QUESTIONS = [
    "How long do I have to return an item?",
    "Do you ship for free?",
    "How long does a refund take?",
    "Can I change my delivery address after ordering?",
    "Do you ship to Canada?",
    "What payment methods do you accept?",
    "Is there a warranty on tents?",
    "Do gift cards expire?",
    "My parcel arrived damaged, what should I do?",
    "Can I combine two discount codes?",
    "How do I join the outfitters club?",
    "The jacket I bought last week is now cheaper, can I get the difference?",
    "Can I cancel my order?",
    "Do you charge customs duties for Japan?",
    "How do I return a sleeping bag I used once?",
]
REVIEW_BITS = [
    "The tent kept us dry through two nights of heavy rain",
    "Zipper broke on the first day",
    "It arrived on time",
    "Best hiking boots I have owned",
    "The jacket runs small",
    "Okay stove, a bit heavy for ultralight trips",
    "Customer service replaced my damaged poles within a week",
    "Colour is slightly different from the photos",
    "The sleeping bag smells of chemicals",
    "Great value for the price",
    "Straps dig into my shoulders after an hour",
    "Packs down really small",
]
TICKET_BITS = [
    "I was charged twice for order {n}",
    "Where is my parcel? Tracking for order {n} has not moved in a week",
    "The boots from order {n} are too big, I want a smaller size",
    "Can you tell me if the Alpine fleece comes in green?",
    "My account page shows an error when I try to log in",
    "The discount code SPRING{n} does not work at checkout",
]
WORDS = (
    "warehouse scanner checkout page inventory sync marketplace payment provider carrier "
    "customer order refund delay timeout error retry nightly report dashboard latency "
    "outage database replica backup queue worker deploy rollback incident region cache"
).split()
LABELS = ["billing", "shipping", "returns", "product", "account", "promotions"]
SCHEMA = {
    "type": "object",
    "properties": {"order": {"type": "string"}, "product": {"type": "string"}},
    "required": ["order", "product"],
}
CLASSIFY_SYSTEM = (
    "You route customer support tickets. Could you please read the ticket and reply with "
    f"exactly one queue name from: {', '.join(LABELS)}. Reply with the name only.\n"
    "billing: charges, refunds of payments, invoices, double charges.\n"
    "shipping: parcels, tracking, delivery dates, addresses, customs.\n"
    "returns: sending items back, exchanges, sizes that do not fit.\n"
    "product: questions about colours, materials, availability, care.\n"
    "account: logins, passwords, profile and newsletter settings.\n"
    "promotions: discount codes, gift cards, club points, price matches.\n"
    "Examples:\nTicket: I was charged twice for my order. Queue: billing\n"
    "Ticket: My parcel is stuck in customs. Queue: shipping\n"
    "Ticket: These boots are too big, can I swap them? Queue: returns\n"
    "Ticket: My code SPRING10 is rejected. Queue: promotions"
)
MIX = [  # (task type, share)
    ("faq", 0.32),
    ("sentiment", 0.18),
    ("classification", 0.14),
    ("extraction", 0.08),
    ("short_answer", 0.07),
    ("summary", 0.10),
    ("translation", 0.06),
    ("article", 0.02),
    ("analysis", 0.03),
]
CASCADED = ("summary", "translation", "analysis")
ESCALATION_RATE = 0.2


def stand_in_judge(output: Any, ctx: EvalContext) -> str | None:
    """Fails a stable 20% of the cheap tier's answers, as a real quality check might."""
    if ctx.model != "gpt-4o-mini":
        return None
    digest = hashlib.sha256(ctx.prompt.encode()).digest()
    return "judged too weak" if digest[0] < 256 * ESCALATION_RATE else None


def zipf_pick(rng: random.Random, pool: list[str], s: float = 1.1) -> str:
    weights = [1 / (rank + 1) ** s for rank in range(len(pool))]
    return rng.choices(pool, weights)[0]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def generate(n: int, seed: int) -> list[dict[str, Any]]:
    """A workload of `n` job lines with realistic repeats and task mix."""
    rng = random.Random(seed)
    shops = {"northwind": "Northwind Outfitters", "acme": "Acme Trail Co.", "kite": "Kite & Pine"}
    lines: list[dict[str, Any]] = []
    kinds, shares = zip(*MIX, strict=True)
    for i in range(n):
        tenant = rng.choices(list(shops), [0.5, 0.3, 0.2])[0]
        kind = rng.choices(kinds, shares)[0]
        line: dict[str, Any] = {"id": f"t{i}", "task_type": kind, "tenant": tenant}
        if kind == "faq":
            line["system"] = FAQ_SYSTEM.format(shop=shops[tenant])
            line["prompt"] = zipf_pick(rng, QUESTIONS)
        elif kind == "sentiment":
            line["system"] = (
                "Please classify the sentiment of the product review as positive, negative or "
                "neutral. Reply with the label only."
            )
            bits = rng.sample(REVIEW_BITS, rng.choice([1, 1, 1, 2]))
            line["prompt"] = ". ".join(bits) + "."
        elif kind == "classification":
            line["system"] = CLASSIFY_SYSTEM
            line["prompt"] = rng.choice(TICKET_BITS).format(n=rng.randint(10000, 10400))
        elif kind == "extraction":
            line["system"] = "Extract the order number and the product from the message."
            line["prompt"] = (
                f"Hi, order {rng.randint(50000, 59999)} had the wrong size of the "
                f"{rng.choice(['Alpine Fleece', 'Ridge Pack 40', 'Summit Boots', 'Cirrus Tent'])}."
            )
            line["response_schema"] = SCHEMA
        elif kind == "short_answer":
            line["prompt"] = rng.choice(
                [
                    "Suggest a name for a new lightweight trail-running shoe.",
                    "Suggest a tagline for a waterproof hiking jacket.",
                    "What is a good packing list item for a winter overnight hike?",
                ]
            )
            line["budget_sensitive"] = True
        elif kind == "summary":
            line["system"] = "Summarise the incident report for the operations channel."
            line["prompt"] = " ".join(sentence(rng, rng.randint(12, 20)) for _ in range(6))
        elif kind == "translation":
            line["system"] = "Please translate the customer message into Japanese."
            line["prompt"] = rng.choice(REVIEW_BITS) + ". " + rng.choice(QUESTIONS)
        elif kind == "article":
            line["system"] = "Write a helpful blog article for hikers."
            line["prompt"] = f"Write about {rng.choice(['layering', 'water filters', 'tents'])}."
        else:
            line["system"] = "Analyse the weekly operations metrics and name the main risks."
            line["prompt"] = " ".join(sentence(rng, 16) for _ in range(8))
            line["quality"] = 0.8
        lines.append(line)
    return lines


@dataclass
class Measured:
    lever: str
    calls: int
    cost_usd: Decimal
    ok: int
    elapsed_s: float
    escalated: int = 0


async def run_config(
    url: str, path: Path, tag: str, overrides: dict[str, Any]
) -> tuple[Measured, Settings, Decimal]:
    """Run the job file through a fresh key space with these settings; return what it cost."""
    values: dict[str, Any] = {
        "redis_url": url,
        "key_prefix": f"bench-{tag}-{int(time.time() * 1000)}",
        "queue_name": f"bench-{tag}:queue",
        "worker_max_jobs": 64,
        "audit_share": 0.0,
    }
    values.update(overrides)
    settings = load_settings(env={}, **values)
    redis = await create_pool(RedisSettings.from_dsn(url))
    pipeline = Pipeline(settings, redis)
    client = BatchwiseClient(pipeline)
    worker = in_process_worker(settings, redis, poll_delay=0.02)
    started = time.monotonic()
    try:
        async with running(worker, grace_s=5):
            submission = await client.submit_file(path)
            await client.wait(submission.run_id, timeout_s=600)
            summary = await client.summary(submission.run_id)
            batch_api = Decimal(0)
            calls = 0
            async for record in pipeline.ledger.records():  # every call, audits and escalations too
                calls += 1
                batch_api += pipeline.prices.price(record.model, record.usage, batch_api=True) or 0
            escalated = 0
            for task_type in CASCADED:
                stats = await redis.hgetall(pipeline.keys.cascade_stats(task_type))
                escalated += sum(int(v) for k, v in stats.items() if k.startswith(b"escalated:"))
    finally:
        await pipeline.aclose()
    elapsed = time.monotonic() - started
    measured = Measured(tag, calls, summary.cost_usd, summary.ok, elapsed, escalated)
    return measured, settings, batch_api


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bw-bench-") as tmp:
        workdir = Path(tmp)
        lines = generate(args.tasks, args.seed)
        path = workdir / "jobs.jsonl"
        path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        naive_lines = [{**line, "model": "gpt-4o", "ttl_class": "no_cache"} for line in lines]
        naive_path = workdir / "naive.jsonl"
        naive_path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in naive_lines))
        unique = len({(ln["tenant"], ln.get("system"), ln["prompt"]) for ln in lines})
        print(f"workload: {len(lines)} tasks, {unique} distinct, seed {args.seed}", flush=True)

        server = EmbeddedRedis(workdir / "redis")
        url = server.start()
        alone = dict.fromkeys(TASK_TYPES, 1)
        every_type = tuple(TASK_TYPES)
        register_evaluator("stand_in_judge", stand_in_judge)
        cascades = {t: CascadeSpec(evaluators=("non_empty", "stand_in_judge")) for t in CASCADED}
        squeeze: dict[str, Any] = {"compress_task_types": every_type}
        steps: list[tuple[str, Path, dict[str, Any]]] = [
            ("naive", naive_path, {"max_items": alone}),
            ("duplicates", naive_path, {"max_items": alone}),  # replaced below: own file
            ("routing", path, {"max_items": alone}),
            ("compression", path, {"max_items": alone, **squeeze}),
            ("packing", path, {**squeeze, "pack_only_when_cheaper": True}),
            ("audit", path, {**squeeze, "pack_only_when_cheaper": True, "audit_share": 0.02}),
            (
                "cascade",
                path,
                {
                    **squeeze,
                    "pack_only_when_cheaper": True,
                    "audit_share": 0.02,
                    "cascades": cascades,
                },
            ),
        ]
        dup_lines = [{**line, "model": "gpt-4o"} for line in lines]
        dup_path = workdir / "dupes.jsonl"
        dup_path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in dup_lines))
        steps[1] = ("duplicates", dup_path, {"max_items": alone})

        rows: list[Measured] = []
        batch_api = Decimal(0)
        plan_estimate = Decimal(0)
        try:
            for name, job_path, overrides in steps:
                measured, settings, batch_api = await run_config(url, job_path, name, overrides)
                rows.append(measured)
                print(
                    f"  {name:<12} {measured.calls:>6} calls  ${measured.cost_usd:.4f}  "
                    f"({measured.elapsed_s:.1f}s)"
                    + (f"  {measured.escalated} escalated" if measured.escalated else ""),
                    flush=True,
                )
                if name == "packing":
                    plan = await plan_file(path, settings)
                    plan_estimate = plan.run_estimate_usd
        finally:
            server.stop()

    naive = rows[0].cost_usd
    print()
    print("| lever | provider calls | cost (USD) | vs naive | this lever |")
    print("|---|---:|---:|---:|---:|")
    previous: Decimal | None = None
    for row in rows:
        step = f"{row.cost_usd / previous - 1:+.1%}" if previous else ""
        print(
            f"| {row.lever} | {row.calls:,} | {row.cost_usd:.4f} | "
            f"{row.cost_usd / naive - 1:+.1%} | {step} |"
        )
        previous = row.cost_usd
    print(
        f"| batch API (priced) | {rows[-1].calls:,} | {batch_api:.4f} | "
        f"{batch_api / naive - 1:+.1%} | {batch_api / rows[-1].cost_usd - 1:+.1%} |"
    )
    packing = next(r for r in rows if r.lever == "packing")
    print()
    print(
        f"all levers run in the pipeline: ${rows[-1].cost_usd:.4f} against naive ${naive:.4f}: "
        f"{naive / rows[-1].cost_usd:.1f}x cheaper ({1 - rows[-1].cost_usd / naive:.1%} saved); "
        f"with the batch API {naive / batch_api:.1f}x ({1 - batch_api / naive:.1%})"
    )
    print(
        f"`batchwise plan` estimate of the packing row: ${plan_estimate:.4f}, measured "
        f"${packing.cost_usd:.4f} ({plan_estimate / packing.cost_usd - 1:+.1%})"
    )
    print("simulated provider: costs are what the named models would have cost")
    assert all(r.ok == len(lines) for r in rows), "every task must end ok"
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
