"""2,000 tasks against a provider allowing 600 requests/min: the shared limiter vs a naive client.

Both clients run in this process against the same fake provider (its own process, rate-limited
in fixed windows like a real provider) with the same number of workers and calls in flight:

- naive: each worker sends at once and, on a 429, sleeps for the Retry-After and tries again
  (what a well-behaved SDK does; no limiter shared between workers);
- batchwise: each worker is a `ProviderChain` with its own Redis connection, sharing the Redis
  rate limiter (requests per window, Lua, atomic) and the 429 blocks.
- per-process (`--per-process`): the same limiter, but each worker counts only its own calls,
  as gateways that enforce limits per replica do.

Time is scaled down so the run takes about two minutes: the fake's window is `--window-s`
(default 20 s) standing for one minute, and the limiter is configured with the same window. Every
task is sent as its own request (packing off), to put the whole load on the limit. A much shorter
window makes this client the bottleneck on a small machine, and then neither side meets the limit.

    python -m bench.ratelimit_storm [--tasks 2000] [--rpm 600] [--window-s 3] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.config.settings import Settings
from pipeline.errors import RateLimited
from pipeline.models import Message
from pipeline.providers.base import ChatRequest, ChatResponse
from pipeline.providers.chain import ProviderChain
from pipeline.providers.openai import OpenAICompatible
from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing import FakeProcess, expected_output

KEY = "bench-key"
MODEL = "gpt-4o-mini"


@dataclass
class Outcome:
    name: str
    seconds: float
    rate_limited: int
    requests: int
    answered: int
    max_per_window: int


def ask(i: int) -> ChatRequest:
    return ChatRequest(
        model=MODEL,
        system="",
        messages=(Message(role="user", content=f"task {i}"),),
        max_tokens=20,
    )


def provider_config(url: str, rpm: int | None, in_flight: int) -> ProviderConfig:
    return ProviderConfig(
        name="fake",
        kind="openai",
        base_url=f"{url}/v1",
        api_key=KEY,
        models=("gpt-*",),
        max_in_flight=in_flight,
        read_timeout_s=30.0,
        rpm=rpm,
    )


async def run_workers(
    n_tasks: int, workers: int, in_flight: int, call: Any, clients: list[Any]
) -> list[ChatResponse]:
    """`n_tasks` requests spread over `workers` clients, `in_flight` at a time each."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n_tasks):
        queue.put_nowait(i)
    answers: list[ChatResponse] = []

    async def lane(client: Any) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            response = await call(client, ask(i))
            assert response.text == expected_output(f"task {i}")
            answers.append(response)

    await asyncio.gather(*(lane(clients[w % workers]) for w in range(workers * in_flight)))
    return answers


async def naive_call(client: OpenAICompatible, request: ChatRequest) -> ChatResponse:
    while True:
        try:
            return await client.complete(request)
        except RateLimited as exc:
            await asyncio.sleep(exc.retry_after_s if exc.retry_after_s is not None else 1.0)


async def limited_call(chain: ProviderChain, request: ChatRequest) -> ChatResponse:
    return await chain.complete(request)


async def wait_for_window_start(window_s: float) -> None:
    """Start each phase at a window boundary, so neither client gets a half-used window."""
    now = time.time()
    await asyncio.sleep(window_s - now % window_s + 0.01)


async def phase(
    name: str, fake: FakeProcess, args: argparse.Namespace, settings: Settings, redis_url: str
) -> Outcome:
    fake.control("reset")
    limited = name != "naive"
    config = provider_config(fake.url, args.rpm if limited else None, args.in_flight)
    redis_clients: list[Redis] = []
    clients: list[Any] = []
    for w in range(args.workers):
        if limited:
            redis = Redis.from_url(redis_url)
            redis_clients.append(redis)
            # per-process: the same limiter, but each worker keeps its own count (own key prefix)
            prefix = f"bench-{name}-{w}" if name == "per-process" else f"bench-{name}"
            with_config = settings.model_copy(update={"providers": (config,), "key_prefix": prefix})
            clients.append(ProviderChain([OpenAICompatible(config)], with_config, redis=redis))
        else:
            clients.append(OpenAICompatible(config))
    await wait_for_window_start(args.window_s)
    started = time.monotonic()
    call = limited_call if limited else naive_call
    answers = await run_workers(args.tasks, args.workers, args.in_flight, call, clients)
    seconds = time.monotonic() - started
    for client in clients:
        providers = client.providers if limited else [client]
        for provider in providers:
            await provider.aclose()
    for redis in redis_clients:
        await redis.aclose()
    stats = fake.stats()
    return Outcome(
        name=name,
        seconds=seconds,
        rate_limited=stats["rate_limited"],
        requests=stats["requests"],
        answered=len(answers),
        max_per_window=max((count for _, count in stats["windows"]), default=0),
    )


async def main(args: argparse.Namespace) -> None:
    scale = 60.0 / args.window_s
    print(
        f"{args.tasks} tasks, one request each; the fake allows {args.rpm} requests per "
        f"{args.window_s:g} s window, standing for {args.rpm}/min (time scaled down {scale:g}x); "
        f"{args.workers} workers x {args.in_flight} calls in flight"
    )
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        redis_url = server.start()
        fake = FakeProcess("--key", KEY, "--rpm", str(args.rpm), "--window-s", str(args.window_s))
        try:
            settings = load_settings(
                env={},
                redis_url=redis_url,
                key_prefix="bench",
                rate_window_s=args.window_s,
                # the guard is for real transmission delay, which does not scale with the window
                rate_guard_s=args.guard_s,
                provider_retries=50,
                backoff_cap_s=args.window_s,
            )
            names = ["naive", "batchwise"] + (["per-process"] if args.per_process else [])
            outcomes = [await phase(name, fake, args, settings, redis_url) for name in names]
        finally:
            fake.stop()
            server.stop()
    floor_s = math.floor((args.tasks - 1) / args.rpm) * args.window_s
    print(
        f"{'client':<11} {'429s':>6} {'requests':>9} {'answered':>9} {'max/window':>11} {'time':>9}"
    )
    for o in outcomes:
        print(
            f"{o.name:<11} {o.rate_limited:>6} {o.requests:>9} {o.answered:>9} "
            f"{o.max_per_window:>11} {o.seconds:>8.1f}s"
        )
    naive, ours = outcomes[:2]
    print(
        f"429s: {naive.rate_limited} naive vs {ours.rate_limited} batchwise; time: "
        f"{naive.seconds:.1f}s vs {ours.seconds:.1f}s (ratio {naive.seconds / ours.seconds:.2f}x; "
        f"no client can finish before {floor_s:g}s, the start of the last window needed)"
    )
    print(
        f"in real minutes: naive {naive.seconds * scale / 60:.1f} min, "
        f"batchwise {ours.seconds * scale / 60:.1f} min"
    )


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rpm", type=int, default=600, help="requests per window")
    parser.add_argument(
        "--window-s", type=float, default=20.0, help="the window standing for 1 min"
    )
    parser.add_argument("--guard-s", type=float, default=0.5, help="the limiter's rate_guard_s")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--per-process",
        action="store_true",
        help="also run the limiter with a separate count per worker (limits enforced per process)",
    )
    parser.add_argument("--in-flight", type=int, default=16, help="calls in flight per worker")
    asyncio.run(main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(cli())
