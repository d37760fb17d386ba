"""Tasks per second through the whole pipeline (submit -> results) against a local fake provider
with no latency, beside a baseline in the same run: a plain asyncio + httpx client sending one
request per task to the same server.

The pipeline runs twice: with the semantic cache off (the pipeline's own overhead) and with the
shipped defaults, where every faq prompt that misses the exact cache is embedded at submit time
by the local models (the semantic cache's price on this CPU).

    python bench/throughput.py [--tasks 2000] [--batch 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import ProviderConfig, load_settings
from pipeline.embedded import EmbeddedRedis
from tests.conftest import pipeline_client, running_worker

KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_provider", "--port", str(port), "--key", KEY],
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


async def baseline(base_url: str, prompts: list[str], concurrency: int) -> float:
    """One request per task, `concurrency` in flight: the plain way."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {KEY}"},
        limits=httpx.Limits(max_connections=concurrency),
    ) as client:

        async def one(prompt: str) -> str:
            async with limit:
                body = {
                    "model": "gpt-4o-mini",
                    "max_tokens": 150,
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": prompt},
                    ],
                }
                response = await client.post(
                    "/chat/completions",
                    content=orjson.dumps(body),
                    headers={"content-type": "application/json"},
                )
                response.raise_for_status()
                return str(response.json()["choices"][0]["message"]["content"])

        started = time.perf_counter()
        answers = await asyncio.gather(*(one(p) for p in prompts))
        elapsed = time.perf_counter() - started
    assert len(answers) == len(prompts)
    return elapsed


async def pipeline_run(
    redis_url: str,
    base_url: str,
    prompts: list[str],
    batch: int,
    concurrency: int,
    *,
    semantic: bool,
) -> tuple[float, int]:
    settings = load_settings(
        env={},
        cache_semantic=semantic,
        redis_url=redis_url,
        key_prefix=f"bench{time.time_ns()}",
        queue_name="bench:q",
        max_items={"faq": batch},
        worker_max_jobs=concurrency,
        linger_ms=50,
        providers=(
            ProviderConfig(
                name="fake",
                kind="openai",
                base_url=base_url,
                api_key=KEY,
                models=("gpt-*",),
                max_in_flight=concurrency,
            ),
        ),
    )
    tasks = [
        {"id": str(i), "task_type": "faq", "system": "Be brief.", "prompt": p}
        for i, p in enumerate(prompts)
    ]
    async with pipeline_client(settings) as client, running_worker(settings):
        started = time.perf_counter()
        run_id = await client.submit(tasks, complete=True)
        await client.wait(run_id, timeout_s=600)
        results = [r async for r in client.results(run_id)]
        elapsed = time.perf_counter() - started
    ok = sum(r.status == "ok" for r in results)
    return elapsed, ok


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    prompts = [f"customer question {i}: where is my order?" for i in range(args.tasks)]
    port = free_port()
    fake = start_fake(port)
    redis = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bw-bench-")))
    try:
        url = redis.start()
        base_url = f"http://127.0.0.1:{port}/v1"
        base_s = await baseline(base_url, prompts, args.concurrency)
        runs = {
            label: await pipeline_run(
                url, base_url, prompts, args.batch, args.concurrency, semantic=semantic
            )
            for label, semantic in (("semantic cache off", False), ("shipped defaults", True))
        }
    finally:
        fake.terminate()
        redis.stop()
    base_tps = args.tasks / base_s
    print(f"tasks: {args.tasks}, batch size: {args.batch}, concurrency: {args.concurrency}")
    print(f"baseline, one request per task:      {base_s:7.2f}s {base_tps:7.0f} tasks/s")
    for label, (pipe_s, ok) in runs.items():
        pipe_tps = args.tasks / pipe_s
        print(
            f"pipeline, {label + ':':<26}{pipe_s:7.2f}s {pipe_tps:7.0f} tasks/s "
            f"({ok} ok; {pipe_tps / base_tps:.2f}x the baseline)"
        )


if __name__ == "__main__":
    asyncio.run(main())
