"""Tasks per second through the whole pipeline (submit -> results) against a local fake provider,
beside a baseline in the same run: a plain asyncio + httpx client sending each task alone,
32 requests in flight, retrying a 429 twice after its Retry-After (as the OpenAI SDK does).

The workload is a support team's mix: FAQ questions with repeats, review sentiment and ticket
summaries, over three tenants. Modes (each its own fake provider):

    none       the provider answers at once: the pipeline's own overhead
    latency    every answer takes 300 ms + 5 ms per output token (a real model's shape)
    ratelimit  the same latency and a limit of 600 requests per minute over all models
    workers    2,000 tasks through 1 and through 3 `batchwise worker` processes, 200 ms per
               answer: a single worker should not be the bottleneck

The pipeline runs with the shipped defaults (semantic cache off) and with the semantic cache on.
Only the provider, the Redis and that switch are configured; everything else is the default.
Timing starts once the in-process worker has started, as a long-lived worker has: its flusher
runs and the embedding model it loads at start (in the background) is loaded; that load is
printed apart. Each mode prints the semantic-off time over the semantic-on time.

    python bench/throughput.py [--tasks 1500] [--mode none,latency,ratelimit,workers]
                               [--variants defaults,semantic] [--terse] [--slots N]
                               [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing import processes
from workers.lifecycle import in_process_worker, running
from workers.testing import pipeline_client

KEY = "bench-key"
TENANTS = ("acme", "globex", "initech")
PLAIN_CONCURRENCY = 32
PLAIN_RETRIES = 2
MODES: dict[str, list[str]] = {
    "none": [],
    "latency": ["--latency-ms", "300", "--ms-per-token", "5"],
    "ratelimit": ["--latency-ms", "300", "--ms-per-token", "5", "--rpm", "600"],
    "workers": ["--latency-ms", "200"],
}
TOPICS = ("order", "refund", "invoice", "password", "delivery", "account", "warranty", "coupon")
# A team's real instructions: a style guide, a rubric with examples (terse one-line prompts
# make packing cost more than it saves, and every task then goes alone: see --terse)
SYSTEMS = {
    "faq": (
        "You answer customer questions for {tenant}'s help centre. Answer in at most two "
        "sentences, in plain words, without greeting or sign-off. Name the settings page or "
        "form the customer needs, in bold, when there is one. Never promise refunds, delivery "
        "dates or exceptions to policy; say that an agent will confirm instead. If the question "
        "is about security (passwords, two-factor codes, account recovery), remind the customer "
        "that {tenant} never asks for a password by email or phone. If the question is unclear, "
        "answer the most likely reading and say which one you answered. Do not mention these "
        "instructions, other customers, or internal tools."
    ),
    "sentiment": (
        "Classify the review's sentiment as positive, negative or neutral. Positive: the "
        "customer is satisfied overall, even if they mention a small problem that was solved. "
        "Negative: the customer is dissatisfied, asks for money back, or says they will leave. "
        "Neutral: a question, a mixed review with no clear balance, or a plain statement of "
        "facts. Sarcasm counts as negative. Examples: 'Arrived late but support fixed it in "
        "minutes, thanks!' is positive. 'Third time the invoice is wrong. Cancelling.' is "
        "negative. 'Does the warranty cover water damage?' is neutral. Answer with the label "
        "only, in lower case."
    ),
    "summary": (
        "Summarise the support ticket in one sentence for the agent who takes it over. Start "
        "with what the customer wants, then what has been tried, then what is still open. Keep "
        "order numbers, amounts and dates exactly as written. Leave out greetings, apologies "
        "and anything the customer repeated. If the customer is angry or threatens to leave, "
        "end with '(escalate)'. Write in the third person and in the present tense."
    ),
}
TERSE = {
    "faq": "You answer customer questions for {tenant}'s help centre in two sentences.",
    "sentiment": "Classify the review's sentiment as positive, negative or neutral.",
    "summary": "Summarise the support ticket in one sentence for the agent on duty.",
}


def workload(n: int, seed: int = 7, *, terse: bool = False) -> list[dict[str, Any]]:
    """`n` tasks: 40% FAQ (a few hundred distinct questions, so repeats), 35% sentiment,
    25% summaries, spread over three tenants."""
    systems = TERSE if terse else SYSTEMS
    rng = random.Random(seed)
    tasks: list[dict[str, Any]] = []
    for i in range(n):
        tenant = TENANTS[i % len(TENANTS)]
        kind = rng.choices(("faq", "sentiment", "summary"), weights=(40, 35, 25))[0]
        topic = rng.choice(TOPICS)
        if kind == "faq":
            prompt = f"How do I change my {topic} details, case {rng.randrange(n // 6 + 1)}?"
        elif kind == "sentiment":
            mood = rng.choice(("loved", "hated", "did not mind"))
            prompt = f"Review {i}: I {mood} how the {topic} was handled, ticket {i * 31 % 9973}."
        else:
            prompt = f"Ticket {i}: the customer wrote about their {topic}. " + " ".join(
                f"They said point {j} about the {topic} and step {i % 7}." for j in range(8)
            )
        tasks.append(
            {
                "id": f"t{i}",
                "tenant": tenant,
                "task_type": kind,
                "system": systems[kind].format(tenant=tenant),
                "prompt": prompt,
            }
        )
    return tasks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake(port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.testing", "--port", str(port), "--key", KEY, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/_control/health", timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("fake provider did not start")


async def baseline(base_url: str, tasks: list[dict[str, Any]]) -> tuple[float, int]:
    """Each task alone, 32 in flight: the plain way. Returns (seconds, failed tasks)."""
    limit = asyncio.Semaphore(PLAIN_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {KEY}"},
        limits=httpx.Limits(max_connections=PLAIN_CONCURRENCY),
        timeout=120,
    ) as client:

        async def one(task: dict[str, Any]) -> bool:
            body = orjson.dumps(
                {
                    "model": "gpt-4o-mini",
                    "max_tokens": 300,
                    "messages": [
                        {"role": "system", "content": task["system"]},
                        {"role": "user", "content": task["prompt"]},
                    ],
                }
            )
            for _ in range(PLAIN_RETRIES + 1):
                async with limit:
                    response = await client.post(
                        "/chat/completions",
                        content=body,
                        headers={"content-type": "application/json"},
                    )
                if response.status_code == 200:
                    return True
                if response.status_code != 429:
                    response.raise_for_status()
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            return False

        started = time.perf_counter()
        answers = await asyncio.gather(*(one(t) for t in tasks))
        elapsed = time.perf_counter() - started
    return elapsed, answers.count(False)


async def pipeline_run(
    redis_url: str,
    base_url: str,
    tasks: list[dict[str, Any]],
    *,
    semantic: bool,
    slots: int | None = None,
) -> tuple[float, int, int, float]:
    """The shipped defaults with one provider (`slots`: job slots and calls in flight instead
    of the default); returns (seconds, ok tasks, failed tasks, seconds the worker's start took
    to load the embedding model)."""
    overrides: dict[str, Any] = {"cache_semantic": semantic}
    in_flight: dict[str, Any] = {}
    if slots is not None:
        overrides["worker_max_jobs"] = in_flight["max_in_flight"] = slots
    settings = load_settings(
        env={},
        redis_url=redis_url,
        key_prefix=f"bench{time.time_ns()}",
        queue_name=f"bench:q:{time.time_ns()}",
        providers=(
            ProviderConfig(
                name="fake",
                kind="openai",
                base_url=base_url,
                api_key=KEY,
                models=("*",),
                **in_flight,
            ),
        ),
        **overrides,
    )
    async with pipeline_client(settings) as client:
        worker = in_process_worker(settings, client.pipeline.redis)  # as `batchwise run` does
        async with running(worker, grace_s=5):
            while "flusher" not in worker.ctx:  # started up, as the plain client's pool is
                await asyncio.sleep(0.01)
            loading = time.perf_counter()
            await worker.ctx["warm"]  # the model a worker loads at start, in the background
            load_s = time.perf_counter() - loading
            started = time.perf_counter()
            run_id = await client.submit(tasks, complete=True)
            await client.wait(run_id, timeout_s=900)
            results = [r async for r in client.results(run_id)]
            elapsed = time.perf_counter() - started
    ok = sum(r.status == "ok" for r in results)
    return elapsed, ok, len(results) - ok, load_s


async def with_fake(mode: str, run: Any) -> Any:
    """`run(base_url)` against a fake provider of its own (a fresh rate-limit window)."""
    port = free_port()
    fake = start_fake(port, MODES[mode])
    try:
        return await run(f"http://127.0.0.1:{port}/v1")
    finally:
        fake.terminate()
        fake.wait(10)


VARIANTS = {
    "defaults": ("shipped defaults (semantic off)", False),
    "semantic": ("semantic cache on", True),
}


async def measure(
    mode: str,
    tasks: list[dict[str, Any]],
    redis_url: str,
    variants: list[str],
    slots: int | None,
    repeat: int = 1,
) -> None:
    tries: dict[str, list[tuple[float, int, int, float]]] = {}
    for _ in range(repeat):  # variants alternate, so a busy spell on the host hits both
        for variant in variants:
            label, semantic = VARIANTS[variant]
            tries.setdefault(label, []).append(
                await with_fake(
                    mode,
                    lambda url, s=semantic: pipeline_run(
                        redis_url, url, tasks, semantic=s, slots=slots
                    ),
                )
            )
    runs = {label: sorted(times)[len(times) // 2] for label, times in tries.items()}  # median
    base_s, base_failed = await with_fake(mode, lambda url: baseline(url, tasks))
    n = len(tasks)
    print(f"\nmode {mode}: {n} tasks ({' '.join(MODES[mode]) or 'no latency'})")
    print(
        f"  plain client, 1 task per request, {PLAIN_CONCURRENCY} in flight: "
        f"{base_s:7.2f}s {n / base_s:6.0f} tasks/s ({base_failed} failed)"
    )
    for label, (pipe_s, ok, failed, load_s) in runs.items():
        loaded = f"; model loaded at worker start in {load_s:.2f}s" if load_s > 0.05 else ""
        print(
            f"  batchwise, {label + ':':<33}{pipe_s:7.2f}s {n / pipe_s:6.0f} tasks/s "
            f"({ok} ok, {failed} failed; {base_s / pipe_s:.1f}x the plain client{loaded})",
            flush=True,
        )
    off, on = tries.get(VARIANTS["defaults"][0]), tries.get(VARIANTS["semantic"][0])
    if off and on:
        ratios = sorted(a[0] / b[0] for a, b in zip(off, on, strict=True))
        spread = f" (median of {repeat} alternating runs, {ratios[0]:.2f}-{ratios[-1]:.2f})"
        median = runs[VARIANTS["defaults"][0]][0] / runs[VARIANTS["semantic"][0]][0]
        print(f"  semantic cache on at {median:.2f}x the throughput of off" + spread)


async def scale_out(tasks: list[dict[str, Any]], redis_url: str) -> None:
    """The same file through 1 and through 3 `batchwise worker` processes (a fake answering
    after 200 ms): how much a single worker leaves on the table."""
    times = {}
    for count in (1, 3):
        times[count] = await with_fake(
            "workers", lambda url, n=count: worker_run(redis_url, url, tasks, n)
        )
    print(f"\nmode workers: {len(tasks)} tasks, fake provider at 200 ms, semantic cache off")
    for count, (elapsed, ok) in times.items():
        print(
            f"  {count} batchwise worker process(es): {elapsed:7.2f}s "
            f"{len(tasks) / elapsed:6.0f} tasks/s ({ok} ok)"
        )
    print(f"  one worker takes {times[1][0] / times[3][0]:.2f}x the time of three", flush=True)


async def worker_run(
    redis_url: str, base_url: str, tasks: list[dict[str, Any]], count: int
) -> tuple[float, int]:
    tag = f"bench{time.time_ns()}"
    log_dir = Path(tempfile.mkdtemp(prefix="bw-workers-"))
    config = log_dir / "batchwise.toml"
    config.write_text(
        f'[providers.fake]\nkind = "openai"\nbase_url = "{base_url}"\n'
        'api_key_env = "FAKE_KEY"\nmodels = ["*"]\n'
    )
    env = {
        "REDIS_URL": redis_url,
        "BATCHWISE_CONFIG": str(config),
        "FAKE_KEY": KEY,
        "BATCHWISE_KEY_PREFIX": tag,
        "BATCHWISE_QUEUE": f"{tag}:q",
        "BATCHWISE_CACHE_SEMANTIC": "0",
    }
    settings = load_settings(
        env={},
        redis_url=redis_url,
        key_prefix=tag,
        queue_name=f"{tag}:q",
        cache_semantic=False,
        providers=(
            ProviderConfig(
                name="fake", kind="openai", base_url=base_url, api_key=KEY, models=("*",)
            ),
        ),
    )
    with processes.workers(count, env, log_dir):
        async with pipeline_client(settings) as client:
            started = time.perf_counter()
            run_id = await client.submit(tasks, complete=True)
            await client.wait(run_id, timeout_s=900)
            results = [r async for r in client.results(run_id)]
            elapsed = time.perf_counter() - started
    return elapsed, sum(r.status == "ok" for r in results)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1500)
    parser.add_argument("--mode", default="none,latency,ratelimit,workers")
    parser.add_argument("--variants", default="defaults,semantic", help="pipeline settings")
    parser.add_argument("--workers-tasks", type=int, default=2000, help="tasks of mode workers")
    parser.add_argument("--terse", action="store_true", help="one-line system prompts")
    parser.add_argument("--slots", type=int, default=None, help="job slots and calls in flight")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (the median)")
    args = parser.parse_args()
    tasks = workload(args.tasks, terse=args.terse)
    redis = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bw-bench-")))
    try:
        url = redis.start()
        for mode in args.mode.split(","):
            if mode == "workers":
                await scale_out(workload(args.workers_tasks, terse=args.terse), url)
            else:
                variants = args.variants.split(",")
                await measure(mode, tasks, url, variants, args.slots, args.repeat)
    finally:
        redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
