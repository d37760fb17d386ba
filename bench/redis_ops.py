"""Redis commands per task (from INFO commandstats, which counts the commands a Lua script runs as
well as the script call itself), and the tasks/s one Redis primary would carry at 100k ops/s.

Files go through the whole pipeline (submit -> worker -> results, exact cache on, semantic cache
off) against the in-process fake provider: the mixed example file (jobs.example.jsonl, repeated
with unique prompts) with the shipped defaults (packing only where it pays), with every group
packed, packed at most 2 per call and sent one task per call, and a file that packs 25 tasks per
call. Then an idle worker is watched for a few seconds: what it costs doing nothing.

    python bench/redis_ops.py [--tasks 2000] [--idle-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config.defaults import DEFAULT_MAX_ITEMS
from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.config.settings import Settings
from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing import FakeProvider
from workers.testing import pipeline_client, running_worker

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
PRIMARY_OPS_S = 100_000
TARGET = 30  # commands per task on the mixed file
BENCH_COMMANDS = {"info", "config|resetstat", "config"}  # the bench's own reads


def mixed_tasks(n: int) -> list[dict[str, Any]]:
    """jobs.example.jsonl repeated to `n` tasks, each prompt made unique (no cache hits)."""
    lines = [orjson.loads(line) for line in (ROOT / "jobs.example.jsonl").read_bytes().splitlines()]
    tasks = []
    for i in range(n):
        task = orjson.loads(orjson.dumps(lines[i % len(lines)]))  # a deep copy
        if "custom_id" in task:  # an OpenAI Batch API line
            task["custom_id"] = f"t{i}"
            body = task["body"]
        else:
            body = task
            task["id"] = f"t{i}"
        if "prompt" in body:
            body["prompt"] = f"{body['prompt']} (case {i})"
        else:
            body["messages"][-1]["content"] += f" (case {i})"
        tasks.append(task)
    return tasks


def faq_tasks(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"f{i}", "task_type": "faq", "system": "Be brief.", "prompt": f"question {i}?"}
        for i in range(n)
    ]


def at_most(n: int) -> dict[str, int]:
    return {task_type: min(n, items) for task_type, items in DEFAULT_MAX_ITEMS.items()}


def bench_settings(url: str, fake: FakeProvider, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": url,
        "key_prefix": f"ops{time.time_ns()}",
        "queue_name": f"ops{time.time_ns()}:q",
        "cache_semantic": False,
        "linger_ms": 50,
        "providers": (
            ProviderConfig(
                name="fake",
                kind="openai",
                base_url=fake.openai_base_url,
                api_key=KEY,
                models=("gpt-*", "claude-*", "gemini-*"),
            ),
        ),
    }
    values.update(overrides)
    return load_settings(env={}, **values)


async def command_counts(redis: Redis) -> Counter[str]:
    stats = await redis.info("commandstats")
    counts: Counter[str] = Counter()
    for name, row in stats.items():
        command = name.removeprefix("cmdstat_")
        if command not in BENCH_COMMANDS:
            counts[command] = int(row["calls"])
    return counts


async def measure(
    url: str, fake: FakeProvider, tasks: list[dict[str, Any]], **overrides: Any
) -> tuple[float, float, Counter[str]]:
    """(commands per task, tasks per call, commands by name) for one run of `tasks`."""
    settings = bench_settings(url, fake, **overrides)
    probe = Redis.from_url(url)
    try:
        async with pipeline_client(settings) as client, running_worker(settings):
            await probe.config_resetstat()
            run_id = await client.submit(tasks, complete=True)
            await client.wait(run_id, timeout=600)
            counts = await command_counts(probe)
            summary = await client.summary(run_id)
    finally:
        await probe.aclose()
    per_call = len(tasks) / max(1, summary.provider_calls)
    return sum(counts.values()) / len(tasks), per_call, counts


async def idle_rate(url: str, fake: FakeProvider, idle_s: float) -> float:
    """Commands per second of one worker with nothing to do."""
    settings = bench_settings(url, fake)
    probe = Redis.from_url(url)
    try:
        async with running_worker(settings):
            await asyncio.sleep(1.0)
            await probe.config_resetstat()
            await asyncio.sleep(idle_s)
            total = sum((await command_counts(probe)).values())
    finally:
        await probe.aclose()
    return total / idle_s


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=8, help="commands to list per file")
    args = parser.parse_args()
    always: dict[str, Any] = {"pack_only_when_cheaper": False}  # pack every group: fixed shapes
    runs = (
        ("mixed file (defaults)", mixed_tasks(args.tasks), {}),
        ("mixed file, packing all", mixed_tasks(args.tasks), always),
        ("mixed file, <= 2 per call", mixed_tasks(args.tasks), always | {"max_items": at_most(2)}),
        ("mixed file, 1 task per call", mixed_tasks(args.tasks), {"max_items": at_most(1)}),
        ("25 tasks per call", faq_tasks(args.tasks), always | {"max_items": {"faq": 25}}),
    )
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bw-ops-")))
    with FakeProvider(key=KEY) as fake:
        url = server.start()
        try:
            measured = [(label, *await measure(url, fake, tasks, **o)) for label, tasks, o in runs]
            idle = await idle_rate(url, fake, args.idle_s)
        finally:
            server.stop()
    print(f"tasks per file: {args.tasks}; one primary at {PRIMARY_OPS_S:,} ops/s")
    for label, per_task, per_call, counts in measured:
        print(
            f"{label + ':':<30} {per_task:6.1f} commands/task at {per_call:4.1f} tasks/call"
            f" -> {PRIMARY_OPS_S / per_task:8,.0f} tasks/s per primary"
        )
        top = ", ".join(f"{n} {c / args.tasks:.1f}" for n, c in counts.most_common(args.top))
        print(f"    per task: {top}")
    mixed = measured[0][1]
    print(f"mixed file: {mixed:.1f} commands/task, {mixed / TARGET:.2f}x the target of {TARGET}")
    print(f"idle worker: {idle:.1f} commands/s")


if __name__ == "__main__":
    asyncio.run(main())
