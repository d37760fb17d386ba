"""Redis commands per task (from INFO commandstats, which counts the commands a Lua script runs as
well as the script call itself), and the tasks/s one Redis primary would carry at 100k ops/s.

Files go through the whole pipeline (submit -> worker -> results, exact cache on, semantic cache
off) against the in-process fake provider: the mixed example file (jobs.example.jsonl, repeated
with unique prompts) with the shipped defaults (packing only where it pays), with every group
packed, packed at most 2 per call and sent one task per call, and a file that packs 25 tasks per
call. The worker runs as `batchwise worker` does (its shipped queue poll), and each file is
counted after a small warm-up file, so what is counted is the steady state: not the one-time
loading of Lua scripts and opening of pooled connections. Then an idle worker is watched for a
few seconds: what it costs doing nothing.

    python bench/redis_ops.py [--tasks 2000] [--idle-s 5] [--by-key 30]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
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
WARM_UP = 200  # tasks run before counting: scripts loaded, connections open


def mixed_tasks(n: int, tag: str = "") -> list[dict[str, Any]]:
    """jobs.example.jsonl repeated to `n` tasks, each prompt made unique (no cache hits)."""
    lines = [orjson.loads(line) for line in (ROOT / "jobs.example.jsonl").read_bytes().splitlines()]
    tasks = []
    for i in range(n):
        task = orjson.loads(orjson.dumps(lines[i % len(lines)]))  # a deep copy
        if "custom_id" in task:  # an OpenAI Batch API line
            task["custom_id"] = f"{tag}t{i}"
            body = task["body"]
        else:
            body = task
            task["id"] = f"{tag}t{i}"
        if "prompt" in body:
            body["prompt"] = f"{body['prompt']} (case {tag}{i})"
        else:
            body["messages"][-1]["content"] += f" (case {tag}{i})"
        tasks.append(task)
    return tasks


def faq_tasks(n: int, tag: str = "") -> list[dict[str, Any]]:
    return [
        {
            "id": f"{tag}f{i}",
            "task_type": "faq",
            "system": "Be brief.",
            "prompt": f"question {tag}{i}?",
        }
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


def family(line: str, prefix: str) -> str:
    """A MONITOR line's command and key, ids and numbers blanked: `HSETNX {p}:run:N:results`."""
    words = [w.strip('"') for w in line.split()]
    at = 3 if words[0].upper() in ("EVALSHA", "EVAL") else 1
    key = words[at] if len(words) > at else ""
    key = re.sub(r"\d+", "N", re.sub(r"[0-9a-f]{12,}", "H", key.replace(prefix, "{p}")))
    return f"{words[0].upper()} {key[:60]}"


async def watch(url: str, prefix: str, into: Counter[str]) -> None:
    """Count every command the server runs (a script's too) by `family` until cancelled."""
    async with Redis.from_url(url).monitor() as monitor:
        async for event in monitor.listen():
            source = "lua " if event.get("client_type") == "lua" else ""
            if event["command"] and not event["command"].upper().startswith(("INFO", "CONFIG")):
                into[source + family(event["command"], prefix)] += 1


async def measure(
    url: str,
    fake: FakeProvider,
    tasks: list[dict[str, Any]],
    warm_up: list[dict[str, Any]],
    by_key: Counter[str] | None = None,
    **overrides: Any,
) -> tuple[float, float, Counter[str]]:
    """(commands per task, tasks per call, commands by name) for one run of `tasks`; with
    `by_key`, every command of the run counted there by command and key too (MONITOR)."""
    settings = bench_settings(url, fake, **overrides)
    probe = Redis.from_url(url)
    watching: asyncio.Task[None] | None = None
    try:
        async with pipeline_client(settings) as client, running_worker(settings, poll_delay=None):
            await client.wait(await client.submit(warm_up, complete=True), timeout=600)
            if by_key is not None:
                watching = asyncio.create_task(watch(url, settings.key_prefix, by_key))
                await asyncio.sleep(0.2)  # MONITOR is on before the run starts
            await probe.config_resetstat()
            run_id = await client.submit(tasks, complete=True)
            await client.wait(run_id, timeout=600)
            counts = await command_counts(probe)
            summary = await client.summary(run_id)
    finally:
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        await probe.aclose()
    per_call = len(tasks) / max(1, summary.provider_calls)
    return sum(counts.values()) / len(tasks), per_call, counts


async def idle_rate(url: str, fake: FakeProvider, idle_s: float) -> float:
    """Commands per second of one worker with nothing to do."""
    settings = bench_settings(url, fake)
    probe = Redis.from_url(url)
    try:
        async with running_worker(settings, poll_delay=None):
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
    parser.add_argument(
        "--by-key", type=int, default=0, help="list this many commands by key on the mixed file"
    )
    args = parser.parse_args()
    by_key: Counter[str] = Counter()
    always: dict[str, Any] = {"pack_only_when_cheaper": False}  # pack every group: fixed shapes
    runs: tuple[tuple[str, Callable[..., list[dict[str, Any]]], dict[str, Any]], ...] = (
        ("mixed file (defaults)", mixed_tasks, {}),
        ("mixed file, packing all", mixed_tasks, always),
        ("mixed file, <= 2 per call", mixed_tasks, always | {"max_items": at_most(2)}),
        ("mixed file, 1 task per call", mixed_tasks, {"max_items": at_most(1)}),
        ("25 tasks per call", faq_tasks, always | {"max_items": {"faq": 25}}),
    )
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bw-ops-")))
    with FakeProvider(key=KEY) as fake:
        url = server.start()
        try:
            measured = [
                (
                    label,
                    *await measure(
                        url,
                        fake,
                        make(args.tasks),
                        make(WARM_UP, "w"),
                        by_key if args.by_key and i == 0 else None,
                        **o,
                    ),
                )
                for i, (label, make, o) in enumerate(runs)
            ]
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
    if args.by_key:
        print("mixed file, commands per task by key (MONITOR; `lua`: run by a script):")
        for name, count in by_key.most_common(args.by_key):
            print(f"  {count / args.tasks:5.2f}  {name}")


if __name__ == "__main__":
    asyncio.run(main())
