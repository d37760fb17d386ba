"""Several worker processes race for one cost cap: the recorded spend never passes it, the open
breaker holds the remaining work, and once an operator lifts the cap every task ends with one
result. Everything runs as real processes: `python -m pipeline.testing` and
`python -m pipeline.cli.main worker` on the shared Redis, configured by a TOML file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.budgets.pace import month_bounds
from pipeline.config.loading import load_settings
from pipeline.costs.money import NANO
from pipeline.testing import expected_output, worker_process
from workers.testing import pipeline_client

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
TASKS = 60
CAP_USD = Decimal("0.40")
# the worst case of one call: ~11 input tokens at $1000/M (with the margin) and 20 output at $2000/M
WORST_CASE_USD = Decimal("0.06")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def processes(tmp_path: Path, redis_url: str, config: Path, port: int) -> Iterator[None]:
    fake = subprocess.Popen(
        [sys.executable, "-m", "pipeline.testing", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        assert fake.stdout is not None and "listening" in fake.stdout.readline()
        env = {"REDIS_URL": redis_url, "BATCHWISE_CONFIG": str(config), "FAKE_KEY": "test-key"}
        workers = [worker_process(tmp_path / f"worker{i}.log", env) for i in range(WORKERS)]
        yield
    finally:
        for proc in [*workers, fake]:
            proc.terminate()
        for proc in [*workers, fake]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if fake.stdout is not None:
            fake.stdout.close()


def write_config(path: Path, port: int, tag: str) -> Path:
    path.write_text(
        f"""
[batchwise]
key_prefix = "race{tag}"
queue_name = "race{tag}:queue"
linger_ms = 20
backoff_base_s = 0.01
backoff_cap_s = 0.2
worker_max_jobs = 8
breaker_policy = "wait"
breaker_recheck_s = 0.2

[batchwise.max_items]
general = 1

[batchwise.prices."gpt-*"]
input = 1000
output = 2000

[batchwise.breaker_limits.global]
hourly_usd = {CAP_USD}

[batchwise.providers.fake]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
api_key_env = "FAKE_KEY"
models = ["gpt-*"]
"""
    )
    return path


@pytest.mark.slow
async def test_worker_processes_racing_never_pass_the_cap_and_lose_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    config = write_config(tmp_path / "batchwise.toml", port, str(os.getpid()) + str(port))
    settings = load_settings(
        env={"REDIS_URL": redis_url, "FAKE_KEY": "test-key"}, config_file=config
    )
    jobs = [{"id": f"t{i}", "prompt": f"question {i}", "max_tokens": 20} for i in range(TASKS)]
    with processes(tmp_path, redis_url, config, port):
        async with pipeline_client(settings) as client:
            p = client.pipeline
            run_id = await client.submit(jobs, complete=True)

            # phase 1: the cap is reached and the breaker holds the rest
            deadline = time.monotonic() + 60
            while not await p.budgets.open_breakers():
                assert time.monotonic() < deadline, "the breaker never opened"
                await asyncio.sleep(0.1)
            while await held_reservations(client.pipeline.redis, p.keys.prefix):
                await asyncio.sleep(0.1)  # calls already reserved finish and settle
            await asyncio.sleep(0.5)
            spent = sum([r.cost_usd or Decimal(0) async for r in p.ledger.records()], Decimal(0))
            calls = len([r async for r in p.ledger.records()])
            month, _, _ = month_bounds(time.time())
            counter = Decimal(int(await p.redis.get(p.keys.month_spend(month)) or 0)) / NANO
            done, _, _ = await p.runs.progress(run_id)
            # the breaker opens only when what calls actually cost leaves no room for one more
            assert CAP_USD - WORST_CASE_USD < spent <= CAP_USD
            assert counter == spent  # settled once per call, exactly the ledger's cost
            assert 0 < done < TASKS and calls == done  # the rest are waiting, not lost
            print(f"\ncap ${CAP_USD}: {calls} calls racing on {WORKERS} workers spent ${spent}")

            # phase 2: the operator lifts the cap; every waiting task completes
            await p.budgets.set_limit("global", "hourly", None)
            await p.budgets.close_breaker("global")
            await client.wait(run_id, timeout_s=60)
            results = [r async for r in client.results(run_id)]
            total_calls = len([r async for r in p.ledger.records()])
    assert [r.id for r in results] == [j["id"] for j in jobs]
    assert all(r.status == "ok" for r in results)
    assert [r.output for r in results] == [expected_output(j["prompt"]) for j in jobs]
    assert total_calls == TASKS  # one call per task: nothing ran twice


async def held_reservations(redis: object, prefix: str) -> int:
    held = 0
    async for key in redis.scan_iter(match=f"{prefix}:breaker:res:*"):  # type: ignore[attr-defined]
        if await redis.hget(key, "state") == b"held":  # type: ignore[attr-defined]
            held += 1
    return held
