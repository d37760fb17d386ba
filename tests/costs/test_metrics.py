"""Prometheus metrics served by a worker over HTTP."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pipeline.testing import FakeProvider, make_settings
from tests.costs.test_ledger import patient
from workers.testing import pipeline_client, running_worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _scrape(port: int, *, wait_s: float = 10.0) -> dict[str, float]:
    """Every sample, keyed `name` and `name{label=value}`, summed over the other labels.
    Waits for the worker to start serving."""
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient() as http:
        while True:
            try:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
            for label, value in sample.labels.items():
                key = f"{sample.name}{{{label}={value}}}"
                out[key] = out.get(key, 0.0) + sample.value
    return out


async def test_worker_serves_calls_tokens_cost_latency_and_tasks(
    redis_url: str, fake: FakeProvider
) -> None:
    port = _free_port()
    settings = patient(make_settings(redis_url, fake, metrics_port=port, metrics_host="127.0.0.1"))
    tasks = [{"id": f"t{i}", "task_type": "faq", "prompt": f"question {i}"} for i in range(12)]
    async with pipeline_client(settings) as client, running_worker(settings):
        before = await _scrape(port)
        run_id = await client.submit(tasks, complete=True)
        await client.wait(run_id, timeout_s=20)
        after = await _scrape(port)

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew("batchwise_provider_calls_total{status=ok}") == 2  # 12 faq tasks: 10 + 2
    assert grew("batchwise_tasks_total{outcome=answered}") == 12
    assert grew("batchwise_batches_total") == 2
    assert grew("batchwise_tokens_total{kind=output}") > 0
    assert grew("batchwise_cost_usd_total{model=gpt-4o-mini}") > 0
    assert grew("batchwise_provider_latency_seconds_count") == 2
    assert grew("batchwise_batch_size_sum") == 12
    assert "batchwise_cache_hit_rate" in after


async def test_metrics_are_off_by_default(redis_url: str) -> None:
    assert make_settings(redis_url).metrics_port == 0
