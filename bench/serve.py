"""Chat completions through `batchwise serve` beside the same requests sent straight to the
provider, in the same run: 200 concurrent clients, each sending its requests one after another.

Both go to one fake provider process that answers after a fixed latency plus a time per output
token (`--latency-ms 300 --ms-per-token 5`, as bench/throughput.py's latency mode). The server
runs as its own process, as deployed: shared Redis (an embedded server here), an in-process
worker with the default job slots, exact cache on (every prompt is new, so nothing hits),
semantic cache off. Prints p50/p99 latency, requests/s and provider calls of each, and what the
server adds.

    python bench/serve.py [--clients 200] [--requests 5] [--latency-ms 300] [--ms-per-token 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import free_port, start_fake  # noqa: E402
from pipeline.state.embedded import EmbeddedRedis  # noqa: E402

FAKE_KEY = "bench-key"  # bench.throughput's fake provider key
SERVER_KEY = "sk-bench-tenant"


def start_server(port: int, redis_url: str, fake_url: str, state: Path) -> subprocess.Popen[bytes]:
    config = state / "batchwise.toml"
    config.write_text(
        f'[providers.fake]\nkind = "openai"\nbase_url = "{fake_url}"\n'
        'api_key_env = "FAKE_KEY"\nmodels = ["gpt-*"]\nmax_in_flight = 64\n'
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")
    }
    env.update(
        REDIS_URL=redis_url,
        BATCHWISE_CONFIG=str(config),
        FAKE_KEY=FAKE_KEY,
        BATCHWISE_API_KEYS=f"bench={SERVER_KEY}",
        BATCHWISE_CACHE_SEMANTIC="0",
        BATCHWISE_KEY_PREFIX=f"bench{time.time_ns()}",
    )
    log = (state / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError((state / "serve.log").read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("batchwise serve did not start")


def provider_calls(fake_url: str) -> int:
    stats = httpx.get(f"{fake_url}/_control/stats", params={"bodies": "0"}).json()
    return int(stats["requests"])


async def load(
    base_url: str, key: str, fake_url: str, clients: int, per_client: int, tag: str
) -> tuple[list[float], float, int]:
    """Latencies of every request, the wall time and the provider calls they took, `clients`
    clients in parallel (after a warm-up that opens their connections)."""
    latencies: list[float] = []
    failures: list[str] = []
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
        timeout=120,
    ) as http:

        async def client(c: int, per_client: int = per_client, tag: str = tag) -> None:
            for r in range(per_client):
                body = {
                    "model": "gpt-4o-mini",
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": f"{tag} question {c}-{r}: status?"}],
                }
                started = time.perf_counter()
                try:
                    response = await http.post("/chat/completions", content=orjson.dumps(body))
                    response.raise_for_status()
                except httpx.HTTPError as exc:  # counted and shown, not fatal
                    failures.append(repr(exc))
                    continue
                latencies.append(time.perf_counter() - started)

        # open the connections in waves first: 200 connects at once overflow the fake
        # provider's listen backlog, and a dropped SYN costs a 1 s retransmit
        for wave in range(100, clients + 100, 100):
            await asyncio.gather(*(client(c, 1, "warm-" + tag) for c in range(min(wave, clients))))
        latencies.clear()
        if failures:
            print(f"{tag} warm-up: {len(failures)} failed, e.g. {failures[0]}")
            failures.clear()
        calls = provider_calls(fake_url)
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - started
        if failures:
            print(f"{tag}: {len(failures)} requests failed, e.g. {failures[0]}")
        return latencies, elapsed, provider_calls(fake_url) - calls


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=5, help="per client, one after another")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="provider: fixed part")
    parser.add_argument(
        "--ms-per-token", type=float, default=5.0, help="provider: time per output token"
    )
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bw-bench-serve-"))
    fake_port, server_port = free_port(), free_port()
    latency = ["--latency-ms", f"{args.latency_ms:g}", "--ms-per-token", f"{args.ms_per_token:g}"]
    fake = start_fake(fake_port, latency)
    redis = EmbeddedRedis(state)
    server = None
    try:
        fake_url = f"http://127.0.0.1:{fake_port}"
        server = start_server(server_port, redis.start(), f"{fake_url}/v1", state)
        n = (args.clients, args.requests)
        direct = await load(f"{fake_url}/v1", FAKE_KEY, fake_url, *n, "direct")
        served_url = f"http://127.0.0.1:{server_port}/v1"
        served = await load(served_url, SERVER_KEY, fake_url, *n, "served")
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
        fake.terminate()
        redis.stop()
    print(
        f"{args.clients} concurrent clients x {args.requests} requests, "
        f"provider latency {args.latency_ms:g} ms + {args.ms_per_token:g} ms per output token"
    )
    print(f"{'':34}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'provider calls':>16}")
    for label, (lat, wall, calls) in (
        ("straight to the provider", direct),
        ("through batchwise serve", served),
    ):
        print(f"{label:34}{pct(lat, 50):9.0f}{pct(lat, 99):9.0f}{len(lat) / wall:9.0f}{calls:16}")
    (d_lat, d_wall, _), (s_lat, s_wall, _) = direct, served
    print(
        f"added by the server: p50 {pct(s_lat, 50) - pct(d_lat, 50):+.0f} ms, "
        f"p99 {pct(s_lat, 99) - pct(d_lat, 99):+.0f} ms; "
        f"requests/s {d_wall / s_wall:.2f}x the direct rate"
    )


if __name__ == "__main__":
    asyncio.run(main())
