"""Opening a producer's connection to Redis, and what a producer says when Redis stays away.

`BatchwiseClient.connect()` returns a `Connecting`: awaited, it is the client; used with
`async with`, the client is closed at the end of the block. Either way Redis is checked at once,
so a wrong REDIS_URL fails there, in one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Generic, Protocol, TypeVar

from pipeline.config.loading import load_settings
from pipeline.config.settings import Settings
from pipeline.core.wiring import Pipeline
from pipeline.errors import ConfigError, PipelineError
from pipeline.state import reconnect


class RedisUnavailable(PipelineError):
    """Redis stayed out of reach for longer than `redis_outage_wait_s`."""


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class Connecting(Generic[C]):
    """A client being opened: awaitable, or an async context manager that closes it."""

    def __init__(self, settings: Settings | None, make: Callable[[Pipeline], C]) -> None:
        self.settings = settings
        self.make = make
        self.client: C | None = None

    async def _open(self) -> C:
        settings = self.settings or load_settings()
        if not settings.redis_url:
            raise ConfigError("REDIS_URL is not set: point it at the Redis your workers use")
        redis = reconnect.client(settings)
        try:
            await reconnect.check(redis, settings.redis_url)
        except ConfigError:
            await redis.aclose()
            raise
        self.client = self.make(Pipeline(settings, redis))
        return self.client

    def __await__(self) -> Generator[Any, None, C]:
        return self._open().__await__()

    async def __aenter__(self) -> C:
        return await self._open()

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()


@contextlib.asynccontextmanager
async def lost_redis(settings: Settings, doing: str, run_id: str | None) -> AsyncIterator[None]:
    """Turn Redis lost for good (past `redis_outage_wait_s`) into one line saying what to do."""
    try:
        yield
    except reconnect.LOST as exc:
        then = (
            "; the run goes on without you: fetch its results later with "
            f"`batchwise results {run_id} --out FILE`"
            if run_id
            else ""
        )
        raise RedisUnavailable(
            f"Redis unreachable for {settings.redis_outage_wait_s:g}s while {doing} "
            f"({type(exc).__name__}){then}"
        ) from None
