"""Riding out a Redis outage: every batchwise Redis client retries a lost connection.

A command that finds Redis gone waits with capped exponential backoff and equal jitter
(`redis_backoff_base_s` doubling up to `redis_backoff_cap_s`), reconnects and runs again, so a
worker's in-memory work (a provider call in flight, an answer being split) carries on once Redis
is back. Workers wait for as long as it takes; producers (`submit --wait`, the Python client)
give up after `redis_outage_wait_s`. Each process logs one line when Redis goes away and one
when it is back, with how long it was gone.

A command repeated after a lost connection may already have run once: every batchwise write is
idempotent (results are HSETNX, ledger records are guarded by their id), which is what makes the
retry safe.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError

logger = logging.getLogger("batchwise.redis")

T = TypeVar("T")
LOST = (RedisConnectionError, RedisTimeoutError)
# redis-py retries connecting (inside its pool, outside the command's retry) on the socket's own
# errors, which it turns into ConnectionError only after the policy gives up
_RETRIED = (*LOST, OSError, asyncio.TimeoutError)


class Outage:
    """One client's view of Redis: when it went away, and whether it was ever reached."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down_since: float | None = None
        self.reached = False
        self.outages = 0

    def lost(self, error: BaseException) -> float:
        """Note a failed command; seconds since this outage began (the first failure logs)."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self.outages += 1
            what = "Redis went away" if self.reached else "cannot reach Redis yet"
            logger.warning("%s: %s (%s); reconnecting", self.name, what, _reason(error))
        return now - self.down_since

    def ok(self) -> None:
        self.reached = True
        if self.down_since is not None:
            gone_s = time.monotonic() - self.down_since
            self.down_since = None
            logger.warning("%s: Redis is back after %.1fs", self.name, gone_s)


class OutageRetry(Retry):
    """redis-py's retry policy with a time limit instead of a count, shared by every connection
    of a client (redis-py deep-copies the policy per connection: the copy is this object)."""

    def __init__(
        self,
        outage: Outage,
        *,
        base_s: float,
        cap_s: float,
        give_up_s: float | None,
        wait_at_start: bool,
    ) -> None:
        super().__init__(NoBackoff(), -1, LOST)
        self._supported_errors = _RETRIED  # type: ignore[assignment]  # socket errors too
        self.outage = outage
        self.base_s = base_s
        self.cap_s = cap_s
        self.give_up_s = give_up_s
        self.wait_at_start = wait_at_start

    def __deepcopy__(self, memo: dict[int, Any]) -> OutageRetry:
        return self

    def delay_s(self, failures: int) -> float:
        """Capped exponential backoff with equal jitter: never a burst of reconnects at once."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(failures, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]
    ) -> T:
        failures = 0
        while True:
            try:
                result = await do()
            except self._supported_errors as error:
                failures += 1
                await fail(error)
                if not (self.outage.reached or self.wait_at_start):
                    raise
                down_s = self.outage.lost(error)
                if self.give_up_s is not None and down_s >= self.give_up_s:
                    raise
                await asyncio.sleep(self.delay_s(failures))
            else:
                self.outage.ok()
                return result


def retry_policy(
    settings: Settings, name: str, *, give_up_s: float | None, wait_at_start: bool = False
) -> OutageRetry:
    return OutageRetry(
        Outage(name),
        base_s=settings.redis_backoff_base_s,
        cap_s=settings.redis_backoff_cap_s,
        give_up_s=give_up_s,
        wait_at_start=wait_at_start,
    )


def client(settings: Settings, name: str = "client") -> Redis:
    """A Redis client for producers: waits through an outage up to `redis_outage_wait_s`."""
    url = settings.redis_url or ""
    policy = retry_policy(settings, name, give_up_s=settings.redis_outage_wait_s)
    try:
        redis: Redis = Redis.from_url(url, retry=policy, retry_on_error=list(LOST))
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL {safe_url(url)!r} is not a Redis URL: {exc}") from None
    return redis


async def check(redis: Redis, url: str) -> None:
    """Fail at once, in one line, when Redis cannot be reached at `url`."""
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        raise ConfigError(
            f"cannot reach Redis at {safe_url(url)} ({_reason(exc)}): check REDIS_URL "
            "and that the server is running"
        ) from None


def safe_url(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__
