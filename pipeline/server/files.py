"""OpenAI Files: uploads (purpose `batch`) and the output and error files batches produce.

A file lives in Redis under its tenant (metadata and content in one hash), so another tenant's
id is simply not found. Files expire with the run results (`results_ttl_s`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis.asyncio import Redis

from pipeline.keys import Keys
from pipeline.server.errors import not_found


class FileStore:
    """A tenant's files in Redis."""

    def __init__(self, redis: Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def put(
        self, tenant: str, filename: str, purpose: str, content: bytes, file_id: str = ""
    ) -> dict[str, Any]:
        """Store a file under `file_id` (a new id when empty; a given one is overwritten)."""
        file_id = file_id or "file-" + uuid.uuid4().hex[:24]
        meta: dict[str, Any] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        key = self.keys.server_file(tenant, file_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={**{k: str(v) for k, v in meta.items()}, "content": content})
            pipe.expire(key, self.ttl_s)
            pipe.zadd(self.keys.server_files(tenant), {file_id: time.time()})
            pipe.expire(self.keys.server_files(tenant), self.ttl_s)
            await pipe.execute()
        return meta

    async def meta(self, tenant: str, file_id: str) -> dict[str, Any]:
        (found,) = await self.metas(tenant, [file_id])
        if found is None:
            raise not_found("file", file_id)
        return found

    async def metas(self, tenant: str, ids: list[str]) -> list[dict[str, Any] | None]:
        """The file objects of `ids` (None where gone), in one round trip."""
        fields = ["id", "bytes", "created_at", "filename", "purpose"]
        async with self.redis.pipeline(transaction=False) as pipe:
            for file_id in ids:
                pipe.hmget(self.keys.server_file(tenant, file_id), fields)
            rows: list[list[bytes | None]] = await pipe.execute()
        return [_file_object(row) if row[0] is not None else None for row in rows]

    async def content(self, tenant: str, file_id: str) -> bytes:
        raw = await self.redis.hget(self.keys.server_file(tenant, file_id), "content")
        if raw is None:
            raise not_found("file", file_id)
        content: bytes = raw
        return content

    async def delete(self, tenant: str, file_id: str) -> bool:
        removed = await self.redis.delete(self.keys.server_file(tenant, file_id))
        await self.redis.zrem(self.keys.server_files(tenant), file_id)
        return bool(removed)

    async def list(self, tenant: str, limit: int, after: str | None) -> dict[str, Any]:
        """A page of the tenant's files, newest first after the `after` cursor."""
        ids, more = await page(self.redis, self.keys.server_files(tenant), limit, after)
        found = await self.metas(tenant, ids)  # None: expired since the index was read
        return listing([f for f in found if f is not None], more)


async def page(redis: Redis, index: str, limit: int, after: str | None) -> tuple[list[str], bool]:
    """One page of a newest-first index, OpenAI style: `limit` ids after the `after` id."""
    start = 0
    if after:
        rank = await redis.zrevrank(index, after)
        if rank is None:
            return [], False
        start = rank + 1
    raw = await redis.zrevrange(index, start, start + limit)  # one extra: is there more?
    ids = [i.decode() for i in raw]
    return ids[:limit], len(ids) > limit


def listing(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    """OpenAI's list object for one page of objects."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


def _file_object(row: list[bytes | None]) -> dict[str, Any]:
    file_id, size, created_at, filename, purpose = (v.decode() if v else "" for v in row)
    return {
        "id": file_id,
        "object": "file",
        "bytes": int(size),
        "created_at": int(created_at),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }
