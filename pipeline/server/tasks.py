"""Native endpoints: `POST /v1/tasks` (job lines as JSONL or a JSON array) -> a run;
`GET /v1/runs/{id}` its progress; `GET /v1/runs/{id}/results` its results, streamed as JSONL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from pipeline.core.client import new_run_id
from pipeline.core.runs import to_result
from pipeline.server.auth import Principal
from pipeline.server.errors import ApiError, not_found, object_id, parse_json
from pipeline.server.lines import check_lines, split_jsonl
from pipeline.server.state import ServerState, principal, state_of


def _entries(body: bytes, content_type: str, max_line_bytes: int) -> list[tuple[int, Any]]:
    if content_type.startswith("application/json"):
        doc = parse_json(body)
        if not isinstance(doc, list):
            raise ApiError(400, "a JSON body must be an array of job lines (or send JSONL)")
        return list(enumerate(doc, start=1))
    return list(split_jsonl(body, max_line_bytes=max_line_bytes, source="body"))


async def owned_run(state: ServerState, who: Principal, run_id: str) -> None:
    """404 unless the run was submitted with a key of the caller's tenant."""
    if not await state.pipeline.redis.exists(state.pipeline.keys.server_run(who.tenant, run_id)):
        raise not_found("run", run_id)


async def own_run(state: ServerState, who: Principal, run_id: str) -> None:
    p = state.pipeline
    await p.redis.set(p.keys.server_run(who.tenant, run_id), 1, ex=p.settings.results_ttl_s)


async def create_tasks(request: Request) -> Response:
    who = principal(request)
    state = state_of(request)
    settings = state.pipeline.settings
    entries = _entries(
        await request.body(), request.headers.get("content-type", ""), settings.max_line_bytes
    )
    if not entries:
        raise ApiError(400, "no job lines in the body")
    if len(entries) > settings.server_max_batch_lines:
        raise ApiError(
            400, f"{len(entries)} job lines; at most {settings.server_max_batch_lines} per request"
        )
    run_id = new_run_id()
    await own_run(state, who, run_id)
    submission = await state.client.submit_stream(
        run_id,
        check_lines(entries, who, source="body"),
        source=f"http:{who.tenant}",
        complete=True,
    )
    return JSONResponse(
        {
            "run_id": run_id,
            "accepted": submission.accepted,
            "rejected": submission.rejected,
            "errors": [
                {"line": e.line, "field": e.field or None, "message": e.reason}
                for e in submission.errors
            ],
        },
        status_code=201,
    )


async def get_run(request: Request) -> Response:
    who = principal(request)
    state = state_of(request)
    run_id = object_id(request.path_params["id"], "run")
    await owned_run(state, who, run_id)
    info = await state.pipeline.runs.info(run_id)  # one read: progress and the rest
    if "done" not in info:
        raise not_found("run", run_id)
    done, total, sealed = int(info["done"]), int(info.get("total") or 0), info.get("sealed") == "1"
    return JSONResponse(
        {
            "id": run_id,
            "object": "run",
            "status": "completed" if sealed and done >= total else "in_progress",
            "total": total,
            "done": done,
            "created_at": int(float(info.get("created_at", 0))),
            "simulated": info.get("simulated") == "1",
        }
    )


async def run_results(request: Request) -> Response:
    who = principal(request)
    state = state_of(request)
    run_id = object_id(request.path_params["id"], "run")
    await owned_run(state, who, run_id)

    async def lines() -> AsyncIterator[bytes]:
        async for record in state.pipeline.runs.records(run_id):
            yield orjson.dumps(to_result(record).model_dump(mode="json")) + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
