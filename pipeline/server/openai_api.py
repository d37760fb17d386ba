"""The endpoints of OpenAI's protocol: Files, Batches and Chat Completions. Each handler
authenticates the key, then hands the work to the stores in the server state."""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.core.intake import LineError
from pipeline.costs.money import usd_float
from pipeline.server.chat import chat_line, completion_body
from pipeline.server.errors import (
    ApiError,
    not_found,
    object_id,
    parse_json,
    result_status,
    retry_after_s,
)
from pipeline.server.lines import check_lines
from pipeline.server.state import principal, state_of


def page_limit(request: Request) -> int:
    text = request.query_params.get("limit", "20")
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise ApiError(400, "limit must be an integer from 1 to 100", param="limit")
    return int(text)


async def _json_object(request: Request) -> dict[str, Any]:
    doc = parse_json(await request.body())
    if not isinstance(doc, dict):
        raise ApiError(400, "the body must be a JSON object")
    return doc


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
    after = request.query_params.get("after")
    return JSONResponse(await state_of(request).files.list(who.tenant, page_limit(request), after))


async def create_batch(request: Request) -> Response:
    who = principal(request)
    return JSONResponse(await state_of(request).batches.create(who, await _json_object(request)))


async def get_batch(request: Request) -> Response:
    who = principal(request)
    batch_id = object_id(request.path_params["id"], "batch")
    return JSONResponse(await state_of(request).batches.get(who.tenant, batch_id))


async def cancel_batch(request: Request) -> Response:
    who = principal(request)
    batch_id = object_id(request.path_params["id"], "batch")
    return JSONResponse(await state_of(request).batches.cancel(who.tenant, batch_id))


async def list_batches(request: Request) -> Response:
    who = principal(request)
    store = state_of(request).batches
    after = request.query_params.get("after")
    return JSONResponse(await store.list(who.tenant, page_limit(request), after))


async def chat_completions(request: Request) -> Response:
    who = principal(request)
    state = state_of(request)
    settings = state.pipeline.settings
    raw = await request.body()
    if len(raw) > settings.max_line_bytes:
        raise ApiError(413, f"the request is longer than {settings.max_line_bytes} bytes")
    body = parse_json(raw)
    task_id = "chat-" + uuid.uuid4().hex
    (checked,) = check_lines([(1, chat_line(body, task_id))], who, source="request")
    if isinstance(checked, LineError):
        raise ApiError(400, checked.reason, param=checked.field or None)
    record, shared = await state.chat.ask(checked, settings.server_chat_timeout_s)
    status = result_status(record)
    cost = record.get("cost_nusd")
    headers = {
        "x-batchwise-cache": str(record.get("cache", "miss")),
        "x-batchwise-cost-usd": "unknown" if cost is None else f"{usd_float(cost):.9f}",
        "x-batchwise-batch-size": str(record.get("batch_size") or 0),
        "x-batchwise-submitted-with": str(shared),
        "x-batchwise-provider": str(record.get("provider") or ""),
    }
    if status != 200:
        error = record.get("error") or {}
        code = str(error.get("code") or "failed")
        if status == 429:
            headers["retry-after"] = str(retry_after_s(code))
        raise ApiError(status, str(error.get("message") or code), code=code, headers=headers)
    return JSONResponse(completion_body(record, int(time.time())), headers=headers)
