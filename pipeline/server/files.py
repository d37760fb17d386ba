"""OpenAI Files: uploads (purpose `batch`) and the output and error files batches produce.

A file lives in Redis under its tenant (metadata and content in one hash), so another tenant's
id is simply not found. Files expire with the run results (`results_ttl_s`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis.asyncio import Redis
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.keys import Keys
from pipeline.server.errors import ApiError, not_found, object_id
from pipeline.server.state import principal, state_of

PURPOSES = ("batch", "batch_output")


class FileStore:
    """A tenant's files in Redis."""

    def __init__(self, redis: Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def put(self, tenant: str, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = "file-" + uuid.uuid4().hex[:24]
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
        fields = ["id", "bytes", "created_at", "filename", "purpose"]
        raw = await self.redis.hmget(self.keys.server_file(tenant, file_id), fields)
        if raw[0] is None:
            raise not_found("file", file_id)
        values = dict(zip(fields, (v.decode() for v in raw), strict=True))
        return {
            "id": values["id"],
            "object": "file",
            "bytes": int(values["bytes"]),
            "created_at": int(values["created_at"]),
            "filename": values["filename"],
            "purpose": values["purpose"],
            "status": "processed",
        }

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

    async def list(self, tenant: str, limit: int, after: str | None) -> tuple[list[str], bool]:
        """Ids newest first after the `after` cursor, and whether more follow."""
        return await page(self.redis, self.keys.server_files(tenant), limit, after)


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


def page_limit(request: Request) -> int:
    text = request.query_params.get("limit", "20")
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise ApiError(400, "limit must be an integer from 1 to 100", param="limit")
    return int(text)


async def create_file(request: Request) -> Response:
    who = principal(request)
    form = await request.form(max_files=1, max_fields=4, max_part_size=1024 * 1024)
    upload = form.get("file")
    purpose = form.get("purpose")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "missing 'file': upload the JSONL as multipart form data", param="file")
    if purpose != "batch":
        raise ApiError(400, "purpose must be 'batch'", param="purpose")
    content = await upload.read()
    await form.close()
    meta = await state_of(request).files.put(
        who.tenant, upload.filename or "upload", "batch", content
    )
    return JSONResponse(meta)


async def get_file(request: Request) -> Response:
    who = principal(request)
    return JSONResponse(
        await state_of(request).files.meta(who.tenant, object_id(request.path_params["id"], "file"))
    )


async def get_content(request: Request) -> Response:
    who = principal(request)
    content = await state_of(request).files.content(
        who.tenant, object_id(request.path_params["id"], "file")
    )
    return Response(content, media_type="application/octet-stream")


async def delete_file(request: Request) -> Response:
    who = principal(request)
    file_id = object_id(request.path_params["id"], "file")
    if not await state_of(request).files.delete(who.tenant, file_id):
        raise not_found("file", file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


async def list_files(request: Request) -> Response:
    who = principal(request)
    store = state_of(request).files
    ids, more = await store.list(who.tenant, page_limit(request), request.query_params.get("after"))
    data = []
    for file_id in ids:
        try:
            data.append(await store.meta(who.tenant, file_id))
        except ApiError:  # expired between the index and the read
            continue
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )
