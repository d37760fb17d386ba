"""Packing only where it pays: cost packed, one by one and with the shipped default, per lever.

    python bench/levers.py [--tasks 300] [--repeat 1]

Two workloads run through the whole pipeline (intake, routing, packing, an in-process worker, the
ledger) on the simulated provider and an embedded Redis: the example file, and a generated one
of label and short-answer tasks behind one-line system prompts with a few-shot rubric shared by
a quarter of them (`short_prompt_workload`). Each runs three ways, in the same process:

    packed       every group packed (pack_only_when_cheaper off)
    one by one   every task alone (max_items 1)
    default      the shipped settings: groups packed only where the estimate says it pays

For each it prints the cost, the saving against the same models one by one and against the
baseline model (every task alone on gpt-4o), and the smallest lever saving `report` shows.
The default must never cost more than the cheaper of the other two by more than rounding, and no
lever may be negative. `--repeat 2` runs each file a second time in the same key space, so the
cache lever shows in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from arq.connections import RedisSettings, create_pool

from pipeline.config.loading import load_settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.costs.reports import build_report
from pipeline.models import TASK_TYPES
from pipeline.state.embedded import EmbeddedRedis
from workers.lifecycle import in_process_worker, running

EXAMPLE = Path(__file__).resolve().parent.parent / "jobs.example.jsonl"
RUBRIC = (
    "Grade the answer to a customer-support question from 1 to 5. "
    + " ".join(
        f"Example {i}: the answer 'Your refund of order {i} was issued to your card and "
        f"arrives within five business days' grades {1 + i % 5} because it is "
        + ("complete and polite." if i % 2 else "vague about the timing.")
        for i in range(12)
    )
    + " Reply with the grade only."
)


def short_prompt_workload(n: int) -> list[dict[str, Any]]:
    """Label and short-answer tasks behind one-line system prompts, and a few-shot rubric shared
    by every fourth step: about 2.25 tasks per step."""
    lines: list[dict[str, Any]] = []
    for i in range(n):
        lines.append(
            {
                "id": f"s{i}",
                "task_type": "sentiment",
                "system": "Classify the sentiment: positive, negative or neutral.",
                "prompt": f"Review {i}: the delivery took {i % 9 + 1} days and the box was fine.",
            }
        )
        lines.append(
            {
                "id": f"q{i}",
                "task_type": "short_answer",
                "system": "Answer in one sentence.",
                "prompt": f"What is the capital of country number {i}?",
            }
        )
        if i % 4 == 0:
            lines.append(
                {
                    "id": f"r{i}",
                    "task_type": "classification",
                    "system": RUBRIC,
                    "prompt": f"Question {i}: where is my parcel? Answer: it ships tomorrow.",
                    "max_tokens": 4,
                }
            )
    return lines


@dataclass
class Row:
    workload: str
    way: str
    calls: int
    cost_usd: Decimal
    same_models_usd: Decimal
    baseline_usd: Decimal
    levers: dict[str, Decimal]

    @property
    def min_lever(self) -> tuple[str, Decimal]:
        return min(self.levers.items(), key=lambda kv: kv[1])


async def run_way(
    url: str, path: Path, workload: str, way: str, overrides: dict[str, Any], repeat: int
) -> Row:
    values: dict[str, Any] = {
        "redis_url": url,
        "key_prefix": f"bench-levers-{way}-{time.monotonic_ns()}",
        "queue_name": f"bench-levers-{way}-{time.monotonic_ns()}:queue",
        "cache_semantic": False,
        **overrides,
    }
    settings = load_settings(env={}, **values)
    redis = await create_pool(RedisSettings.from_dsn(url))
    pipeline = Pipeline(settings, redis)
    client = BatchwiseClient(pipeline)
    try:
        async with running(in_process_worker(settings, redis, poll_delay=0.02), grace_s=5):
            cost = same = baseline = Decimal(0)
            for _ in range(repeat):
                submission = await client.submit_file(path)
                await client.wait(submission.run_id, timeout_s=600)
                summary = await client.summary(submission.run_id)
                cost += summary.cost_usd
                same += summary.naive_cost_usd
                baseline += summary.baseline_cost_usd
            calls = sum([1 async for _ in pipeline.ledger.records()])
            report = await build_report(
                redis, pipeline.keys, anomalies=False, baseline_model=settings.baseline_model
            )
    finally:
        await pipeline.aclose()
    levers = {s.lever: s.saved_usd for s in report.savings if s.tasks or s.saved_usd}
    return Row(workload, way, calls, cost, same, baseline, levers)


def pct(cost: Decimal, against: Decimal) -> str:
    return f"{float(1 - cost / against):>8.1%}" if against else f"{'-':>8}"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300, help="steps of the generated workload")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each file per way")
    args = parser.parse_args(argv)
    ways: dict[str, dict[str, Any]] = {
        "packed": {"pack_only_when_cheaper": False},
        "one by one": {"max_items": dict.fromkeys(TASK_TYPES, 1)},
        "default": {},
    }
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bw-levers-") as tmp:
        work = Path(tmp)
        generated = work / "short_prompts.jsonl"
        lines = short_prompt_workload(args.tasks)
        generated.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
        files = {"example": Path(shutil.copy(EXAMPLE, work / "example.jsonl"))}
        files[f"short prompts ({len(lines)})"] = generated
        server = EmbeddedRedis(work / "redis")
        url = server.start()
        try:
            for workload, path in files.items():
                for way, overrides in ways.items():
                    rows.append(await run_way(url, path, workload, way, overrides, args.repeat))
        finally:
            server.stop()
    print(f"simulated provider; baseline every task alone on gpt-4o; {args.repeat} run(s) each")
    head = f"{'workload':<22}{'way':<12}{'calls':>6}{'cost $':>12}{'vs same':>8}{'vs 4o':>8}"
    print(f"{head}  smallest lever")
    ok = True
    for row in rows:
        lever, saved = row.min_lever if row.levers else ("-", Decimal(0))
        print(
            f"{row.workload:<22}{row.way:<12}{row.calls:>6}{row.cost_usd:>12.6f}"
            f"{pct(row.cost_usd, row.same_models_usd)}{pct(row.cost_usd, row.baseline_usd)}"
            f"  {lever} {saved:+.6f}"
        )
        if row.way == "default":
            ok = ok and saved >= 0
    for workload in files:
        costs = {r.way: r.cost_usd for r in rows if r.workload == workload}
        best = min(costs["packed"], costs["one by one"])
        print(
            f"{workload}: default / cheaper of packed and one by one = "
            f"{float(costs['default'] / best):.3f}"
        )
    print("every lever >= 0 with the default:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
