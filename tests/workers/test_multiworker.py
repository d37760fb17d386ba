"""Several worker processes, one Redis, the fake provider as a process: limits and health hold
for all workers together, not per process.

One fake server and three `batchwise worker` processes serve the whole module; each test uses
its own models and providers, so rate-limit scopes and circuits never overlap between tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from arq.connections import RedisSettings, create_pool

from pipeline.config.loading import load_settings
from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.models import Result
from pipeline.testing import FakeProcess, WorkerProcesses, clean_env, expected_output, workers

KEY = "test-key"
RPM = 10  # requests per window for gpt-4.1-nano, enforced by the fake and configured for us
WINDOW_S = 2.0
COOLDOWN_S = 2.0
FAILURES = 3

CONFIG = """
worker_max_jobs = 3
linger_ms = 10
job_timeout_s = 20
provider_retries = 1
backoff_base_s = 0.01
backoff_cap_s = 0.2
health_failures = {failures}
health_cooldown_s = {cooldown}
rate_window_s = {window}
rate_guard_s = 0.4

[max_items]
faq = 2
sentiment = 1

[fallbacks]
"claude-3-5-haiku-latest" = ["gpt-4o-mini"]
"claude-3-opus-latest" = ["gpt-4o"]

[providers.gpt]
kind = "openai"
base_url = "{url}/v1"
api_key = "{key}"
models = ["gpt-*"]
read_timeout_s = 5.0
model_rpm = {{ "gpt-4.1-nano" = {rpm} }}

[providers.claude]
kind = "anthropic"
base_url = "{url}"
api_key = "{key}"
models = ["claude-3-5-*"]
read_timeout_s = 5.0

[providers.claude-bad]
kind = "anthropic"
base_url = "{url}"
api_key = "{key}"
models = ["claude-3-opus*", "claude-3-7-*"]
read_timeout_s = 5.0
"""


class Cluster:
    """The module's fake server, worker processes and the settings a producer uses."""

    def __init__(self, fake: FakeProcess, group: WorkerProcesses, settings: Settings) -> None:
        self.fake = fake
        self.workers = group
        self.settings = settings

    async def run(self, tasks: list[dict[str, Any]], timeout_s: float = 60.0) -> list[Result]:
        """Submit `tasks` as one run and return its results in input order."""
        pool = await create_pool(RedisSettings.from_dsn(self.settings.redis_url or ""))
        client = BatchwiseClient(Pipeline(self.settings, pool))
        try:
            run_id = await client.submit(tasks, complete=True)
            await client.wait(run_id, timeout_s=timeout_s)
            return [r async for r in client.results(run_id)]
        finally:
            await client.pipeline.aclose()
            await pool.aclose()


@pytest.fixture(scope="module")
def cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    fake = FakeProcess("--key", KEY)
    try:
        config = tmp / "batchwise.toml"
        config.write_text(
            CONFIG.format(
                url=fake.url,
                key=KEY,
                rpm=RPM,
                window=WINDOW_S,
                failures=FAILURES,
                cooldown=COOLDOWN_S,
            )
        )
        tag = uuid.uuid4().hex[:8]
        env = clean_env(
            REDIS_URL=redis_url,
            BATCHWISE_CONFIG=str(config),
            BATCHWISE_KEY_PREFIX=f"mw{tag}",
            BATCHWISE_QUEUE=f"mw{tag}:queue",
        )
        settings = load_settings(env=env)
        with workers(3, env, tmp) as group:
            yield Cluster(fake, group, settings)
    finally:
        fake.stop()


def tasks(model: str, n: int, prefix: str, task_type: str = "faq") -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i}", "model": model, "task_type": task_type, "prompt": f"{prefix} q{i}"}
        for i in range(n)
    ]


def assert_one_ok_result_each(results: list[Result], sent: list[dict[str, Any]]) -> None:
    assert [r.id for r in results] == [t["id"] for t in sent]
    assert [r.status for r in results] == ["ok"] * len(sent), [r.error for r in results]
    assert [r.output for r in results] == [expected_output(t["prompt"]) for t in sent]


async def test_requests_per_window_hold_across_worker_processes(cluster: Cluster) -> None:
    fake = cluster.fake
    fake.control("reset")
    fake.control("rate_limit", {"rpm": {"gpt-4.1-nano": RPM}, "window_s": WINDOW_S})
    try:
        sent = tasks("gpt-4.1-nano", 4 * RPM, "rl", task_type="sentiment")  # one call each
        results = await cluster.run(sent)
        stats = fake.stats()
    finally:
        fake.control("rate_limit", {"rpm": None})
    assert_one_ok_result_each(results, sent)
    per_window = [count for _, count in stats["windows"]]
    # The fake meters arrivals in fixed windows; a grant reaches it a moment later, so under a
    # loaded machine one request may land past a window's edge: that is the slack allowed.
    assert max(per_window) <= RPM + 1, per_window
    assert stats["rate_limited"] <= 1, per_window
    assert stats["by_model"]["gpt-4.1-nano"] == len(sent) + stats["rate_limited"]
    # the calls were spread over the processes, so the limit was shared, not per process
    busy = [log.read_text().count("process_batch(") for log in cluster.workers.logs]
    assert sum(1 for jobs in busy if jobs) >= 2, busy


async def test_failing_provider_is_skipped_reprobed_and_falls_back(cluster: Cluster) -> None:
    fake = cluster.fake
    fake.control("reset")
    fake.control("faults", {"kind": "500", "path": "anthropic", "times": 10_000})
    model = "claude-3-5-haiku-latest"

    # 1. every call to claude fails: after FAILURES of them every worker skips it
    first = tasks(model, 40, "a")
    results = await cluster.run(first)
    assert_one_ok_result_each(results, first)
    assert {(r.provider, r.model) for r in results} == {("gpt", "gpt-4o-mini")}
    stats = fake.stats()
    in_flight = 3 * 3  # workers x jobs each: calls already under way when the circuit opened
    claude_calls = stats["by_path"]["anthropic"]
    assert FAILURES <= claude_calls <= FAILURES + in_flight, stats
    assert stats["by_path"]["openai"] == 20  # 40 faq tasks, 2 per call

    # 2. after the cool-down exactly one probe is sent; it fails, so the circuit stays open
    await asyncio.sleep(COOLDOWN_S + 0.3)
    second = tasks(model, 10, "b")
    started = time.monotonic()
    results = await cluster.run(second)
    probes_allowed = 1 + int((time.monotonic() - started) // COOLDOWN_S)  # one per cool-down
    assert_one_ok_result_each(results, second)
    assert 1 <= fake.stats()["by_path"]["anthropic"] - claude_calls <= probes_allowed
    assert {r.provider for r in results} == {"gpt"}

    # 3. the provider recovers: the next probe succeeds and traffic returns to it (calls made
    #    while the probe is in flight still go to the fallback)
    fake.control("reset")
    await asyncio.sleep(COOLDOWN_S + 0.3)
    third = tasks(model, 10, "c")
    results = await cluster.run(third)
    assert_one_ok_result_each(results, third)
    assert ("claude", model) in {(r.provider, r.model) for r in results}
    fourth = tasks(model, 10, "d")
    results = await cluster.run(fourth)
    assert_one_ok_result_each(results, fourth)
    assert {(r.provider, r.model) for r in results} == {("claude", model)}


async def test_auth_failure_no_retry_storm_falls_back_and_never_shows_the_key(
    cluster: Cluster,
) -> None:
    fake = cluster.fake
    fake.control("reset")
    # the provider refuses the key and echoes it back, as some providers do
    for model in ("claude-3-opus-latest", "claude-3-7-sonnet-latest"):
        fault = {"kind": "401", "model": model, "times": 10_000, "message": f"bad key {KEY}"}
        fake.control("faults", fault)

    with_fallback = tasks("claude-3-opus-latest", 30, "f")
    results = await cluster.run(with_fallback)
    assert_one_ok_result_each(results, with_fallback)
    assert {(r.provider, r.model) for r in results} == {("gpt", "gpt-4o")}
    unauthorized = fake.stats()["unauthorized"]
    assert 1 <= unauthorized <= 3 * 3  # at most the calls in flight before the first 401 landed

    # a model with no fallback fails permanently, naming the provider, without the key
    alone = tasks("claude-3-7-sonnet-latest", 6, "n")
    failed = await cluster.run(alone)
    assert [r.status for r in failed] == ["failed"] * len(alone)
    for result in failed:
        assert result.error is not None and result.error.code == "provider_refused"
        assert "claude-bad" in result.error.message
    stats = fake.stats()
    assert stats["unauthorized"] == unauthorized  # marked down: not one more request
    everything = orjson.dumps([r.model_dump(mode="json") for r in results + failed]).decode()
    assert KEY not in everything
    assert KEY not in cluster.workers.log_text()
