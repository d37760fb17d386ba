"""Leases: a Redis key one worker holds while it works on something, renewed while it works.

A lease is taken with `SET NX PX` and a random token, renewed in the background every third of
its time-to-live, and released only by its holder (compare-and-delete). A worker that dies stops
renewing, so its lease runs out after `ttl_s` and another worker takes the work over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from redis.asyncio import Redis

logger = logging.getLogger("batchwise.leases")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """One lease on `key`; `acquire` then `release` (in a `finally`)."""

    def __init__(self, redis: Redis, key: str, ttl_s: float) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = uuid.uuid4().hex
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; keep it renewed until `release`."""
        if not await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._renewer = asyncio.create_task(self._renew())
        return True

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                held = await self.redis.eval(_RENEW, 1, self.key, self.token, str(self.ttl_ms))
            except Exception:  # a Redis hiccup: try again at the next beat
                logger.warning("lease %s: renewal failed", self.key, exc_info=True)
                continue
            if not held:
                logger.warning("lease %s was lost", self.key)
                return

    async def release(self) -> None:
        """Stop renewing and give the lease up, if it is still ours."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self.redis.eval(_RELEASE, 1, self.key, self.token)
