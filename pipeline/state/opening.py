"""The one way every command opens batchwise's state: the shared Redis at `REDIS_URL`, else the
embedded server of the state directory (pipeline/state/embedded.py), attached for the command's
duration and stopped by the last process out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from redis.asyncio import Redis

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.state.embedded import EmbeddedRedis


@dataclass(frozen=True)
class Attached:
    """Settings whose `redis_url` points at the state, and the embedded server if one is used."""

    settings: Settings
    embedded: EmbeddedRedis | None


@contextlib.contextmanager
def attach(settings: Settings, *, hosts_worker: bool = False) -> Iterator[Attached]:
    """`REDIS_URL` as it is, or the embedded server of `settings.state_dir`, started if needed.
    `hosts_worker`: this process runs a worker on it (lets `batchwise run` tell whether the
    worker of an earlier run is gone)."""
    if settings.redis_url:
        yield Attached(settings, None)
        return
    server = EmbeddedRedis(settings.state_dir, hosts_worker=hosts_worker)
    url = server.start()
    try:
        yield Attached(settings.model_copy(update={"redis_url": url}), server)
    finally:
        server.stop()


def has_embedded_data(settings: Settings) -> bool:
    """Whether the state directory holds data an embedded server wrote (an AOF)."""
    state_dir = settings.state_dir
    return (state_dir / "appendonlydir").exists() or any(state_dir.glob("*.aof"))


@contextlib.asynccontextmanager
async def open_state(settings: Settings, *, require_data: bool = False) -> AsyncIterator[Redis]:
    """A Redis client on the state. With `require_data`, an embedded state directory that holds
    nothing yet is an error rather than a fresh empty server."""
    if require_data and not settings.redis_url and not has_embedded_data(settings):
        raise ConfigError(
            f"nothing recorded yet: REDIS_URL is not set and {settings.state_dir} holds no "
            "embedded Redis data; run `batchwise run FILE` (or `submit FILE`) first, or set "
            "REDIS_URL"
        )
    with attach(settings) as attached:
        assert attached.settings.redis_url
        redis = Redis.from_url(attached.settings.redis_url)
        try:
            yield redis
        finally:
            await redis.aclose()
