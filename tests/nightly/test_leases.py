"""Leases on a real Redis: one holder at a time, kept while held, free when released or dead."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from pipeline.state.leases import Lease


async def test_one_holder_renewed_while_held_and_free_after_release(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    key = f"lease-test:{uuid.uuid4().hex}"
    try:
        first, second = Lease(redis, key, 0.3), Lease(redis, key, 0.3)
        assert await first.acquire()
        assert not await second.acquire()
        await asyncio.sleep(0.7)  # over twice the ttl: renewal kept it
        assert not await second.acquire()
        await first.release()
        assert await second.acquire()
        await first.release()  # not the holder any more: changes nothing
        assert await redis.get(key) == second.token.encode()
        await second.release()
        assert await redis.get(key) is None
    finally:
        await redis.aclose()


async def test_a_dead_holders_lease_runs_out(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    key = f"lease-test:{uuid.uuid4().hex}"
    try:
        dead = Lease(redis, key, 0.2)
        assert await dead.acquire()
        assert dead._renewer is not None
        dead._renewer.cancel()  # the holder stops renewing, as a killed worker would
        await asyncio.sleep(0.35)
        heir = Lease(redis, key, 0.2)
        assert await heir.acquire()
        await heir.release()
    finally:
        await redis.aclose()
