"""OpenAI Batches over batchwise runs.

A batch is a run of the input file's lines (the run id is the batch id). While `validating`, a
task of this process checks the lines (bad ones go to the error file) and queues the rest, which
go through every lever. Status moves on to in_progress -> finalizing -> completed (failed when
no line is valid; cancelling -> cancelled; expired once the completion window has passed,
unanswered lines going to the error file as `batch_expired`). The first request that sees the
run done (or the window passed) writes the output and error files in OpenAI's batch output
format. Whether lines go to a provider's batch API is batchwise's decision: a completion window
of at least `server_batch_api_min_window_h` (24 h) lets them wait for one at half price (providers
without a batch API answer synchronously).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import orjson
from redis.asyncio.client import Pipeline
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.core.client import BatchwiseClient, Submission
from pipeline.core.intake import LineError
from pipeline.costs.money import usd_float
from pipeline.keys import Keys
from pipeline.models import Task
from pipeline.server.auth import Principal
from pipeline.server.chat import completion_body
from pipeline.server.errors import ApiError, not_found, object_id, result_status
from pipeline.server.files import FileStore, page, page_limit
from pipeline.server.lines import check_lines, split_jsonl
from pipeline.server.state import principal, state_of

logger = logging.getLogger("batchwise.server")

ENDPOINT = "/v1/chat/completions"
_WINDOW = re.compile(r"^([1-9][0-9]{0,3})h$")
OPEN = ("validating", "in_progress", "finalizing", "cancelling")


class BatchStore:
    """A tenant's batch objects in Redis, refreshed from their runs when read."""

    def __init__(self, client: BatchwiseClient, files: FileStore) -> None:
        self.client = client
        self.files = files
        self.redis = client.pipeline.redis
        self.keys: Keys = client.pipeline.keys
        self.ttl_s = client.pipeline.settings.results_ttl_s
        self._validating: set[asyncio.Task[None]] = set()

    async def create(self, who: Principal, request: dict[str, Any]) -> dict[str, Any]:
        settings = self.client.pipeline.settings
        if request.get("endpoint") != ENDPOINT:
            raise ApiError(400, f"endpoint must be '{ENDPOINT}'", param="endpoint")
        window = _WINDOW.match(str(request.get("completion_window", "")))
        if window is None:
            raise ApiError(400, "completion_window must look like '24h'", param="completion_window")
        file_id = object_id(str(request.get("input_file_id", "")), "file")
        content = await self.files.content(who.tenant, file_id)
        entries = list(split_jsonl(content, max_line_bytes=settings.max_line_bytes, source=file_id))
        if len(entries) > settings.server_max_batch_lines:
            raise ApiError(
                400,
                f"the input file has {len(entries)} requests; at most "
                f"{settings.server_max_batch_lines} per batch",
                param="input_file_id",
            )
        now = int(time.time())
        batch_id = (
            "batch_"
            + hashlib.sha256(f"{who.tenant}:{file_id}:{time.time_ns()}".encode()).hexdigest()[:24]
        )
        window_h = int(window.group(1))
        doc = _batch_object(batch_id, request, file_id, now, window_h)
        listed = self.keys.server_batches(who.tenant)
        async with self.redis.pipeline(transaction=True) as pipe:  # one round trip
            pipe.set(self.keys.server_run(who.tenant, batch_id), 1, ex=self.ttl_s)
            self._save_in(pipe, who.tenant, doc)
            pipe.zadd(listed, {batch_id: time.time()})
            pipe.expire(listed, self.ttl_s)
            await pipe.execute()
        min_window_h = settings.server_batch_api_min_window_h
        batch_api = min_window_h > 0 and window_h >= min_window_h
        lines = check_lines(entries, who, source=file_id, batch_api=batch_api)
        job = asyncio.create_task(self._validate(who.tenant, batch_id, lines))
        self._validating.add(job)
        job.add_done_callback(self._validating.discard)
        return doc

    async def _validate(
        self, tenant: str, batch_id: str, lines: Iterator[Task | LineError]
    ) -> None:
        """Queue the valid lines (the batch is `validating` meanwhile), then move it on."""
        submission: Submission | None = None
        problem: str | None = None
        try:
            submission = await self.client.submit_stream(
                batch_id, lines, source=f"http:{tenant}:batch", complete=True
            )
        except Exception as exc:  # Redis gone mid-way: the batch fails and says why
            logger.exception("batch %s: validation failed", batch_id)
            problem = f"the batch could not be queued: {exc}"
        raw = await self.redis.hget(self.keys.server_batch(tenant, batch_id), "doc")
        doc = orjson.loads(raw)  # cancel may have moved it on meanwhile
        now = int(time.time())
        if submission is not None:
            doc["request_counts"] = {
                "total": submission.total,
                "completed": 0,
                "failed": submission.rejected,
            }
            if submission.accepted == 0:
                problem = "the input file has no valid request"
                doc["errors"] = _line_errors(submission, problem)
        if problem is not None:
            doc["errors"] = doc["errors"] or _line_errors(None, problem)
            doc["status"], doc["failed_at"] = "failed", now
        elif doc["status"] == "validating":
            doc["status"], doc["in_progress_at"] = "in_progress", now
        await self._save(tenant, doc, rejected=submission.rejected if submission else 0)

    async def aclose(self) -> None:
        """Let batches being validated finish queueing (shutdown waits for them)."""
        await asyncio.gather(*self._validating, return_exceptions=True)

    async def _save(self, tenant: str, doc: dict[str, Any], rejected: int | None = None) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            self._save_in(pipe, tenant, doc, rejected)
            await pipe.execute()

    def _save_in(
        self, pipe: Pipeline, tenant: str, doc: dict[str, Any], rejected: int | None = None
    ) -> None:
        key = self.keys.server_batch(tenant, doc["id"])
        mapping: dict[str, Any] = {"doc": orjson.dumps(doc)}
        if rejected is not None:
            mapping["rejected"] = rejected
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self.ttl_s)

    async def get(self, tenant: str, batch_id: str) -> dict[str, Any]:
        raw = await self.redis.hget(self.keys.server_batch(tenant, batch_id), "doc")
        if raw is None:
            raise not_found("batch", batch_id)
        return await self.refresh(tenant, orjson.loads(raw))

    async def refresh(self, tenant: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Bring an open batch up to date with its run; finalize it once the run is done."""
        if doc["status"] not in ("in_progress", "cancelling"):
            return doc
        try:
            done, total, sealed = await self.client.pipeline.runs.progress(doc["id"])
        except KeyError:  # the run expired before its batch record did
            return doc
        if sealed and done >= total:
            return await self._finalize(tenant, doc)
        if time.time() > doc["expires_at"]:  # what is answered is delivered; the rest expires
            return await self._finalize(tenant, doc, expired=True)
        rejected = int(
            await self.redis.hget(self.keys.server_batch(tenant, doc["id"]), "rejected") or 0
        )
        doc["request_counts"]["completed"] = max(0, done - rejected)
        return doc

    async def _finalize(
        self, tenant: str, doc: dict[str, Any], *, expired: bool = False
    ) -> dict[str, Any]:
        lock = self.keys.server_batch(tenant, doc["id"]) + ":finalize"
        if not await self.redis.set(lock, 1, nx=True, ex=300):
            return {**doc, "status": "finalizing"}  # another request is writing the files
        cancelled = doc["status"] == "cancelling"
        doc["status"], doc["finalizing_at"] = "finalizing", int(time.time())
        await self._save(tenant, doc)
        output, errors, counts = await self._output_lines(doc["id"])
        for field, content, suffix in (("output", output, "output"), ("error", errors, "error")):
            if content:
                name = f"{doc['id']}_{suffix}.jsonl"
                stored = await self.files.put(tenant, name, "batch_output", content)
                doc[f"{field}_file_id"] = stored["id"]
        doc["request_counts"] = counts
        now = int(time.time())
        if cancelled:
            doc["status"], doc["cancelled_at"] = "cancelled", now
        elif expired:
            doc["status"], doc["expired_at"] = "expired", now
        else:
            doc["status"], doc["completed_at"] = "completed", now
        await self._save(tenant, doc)
        return doc

    async def _output_lines(self, run_id: str) -> tuple[bytes, bytes, dict[str, int]]:
        """The output and error files' content, in input order; a line still unanswered (the
        batch expired) is an error line `batch_expired`."""
        output: list[bytes] = []
        errors: list[bytes] = []
        created = int(time.time())
        order = self.keys.run_order(run_id)
        start = 0
        while ids := [i.decode() for i in await self.redis.lrange(order, start, start + 999)]:
            start += len(ids)
            written = {r["id"]: r for r in await self.client.pipeline.runs.written(run_id, ids)}
            for task_id in ids:
                record = written.get(task_id) or {
                    "id": task_id,
                    "status": "failed",
                    "error": _EXPIRED,
                }
                line = _output_line(run_id, record, created)
                (output if line["error"] is None else errors).append(orjson.dumps(line))
        counts = {
            "total": len(output) + len(errors),
            "completed": len(output),
            "failed": len(errors),
        }
        return _jsonl(output), _jsonl(errors), counts

    async def cancel(self, tenant: str, batch_id: str) -> dict[str, Any]:
        doc = await self.get(tenant, batch_id)
        if doc["status"] not in ("validating", "in_progress"):
            raise ApiError(409, f"Cannot cancel a batch with status '{doc['status']}'.")
        doc["status"], doc["cancelling_at"] = "cancelling", int(time.time())
        await self._save(tenant, doc)
        return await self.refresh(tenant, doc)

    async def list(self, tenant: str, limit: int, after: str | None) -> dict[str, Any]:
        ids, more = await page(self.redis, self.keys.server_batches(tenant), limit, after)
        data = []
        for batch_id in ids:
            try:
                data.append(await self.get(tenant, batch_id))
            except ApiError:  # expired between the index and the read
                continue
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }


_EXPIRED = {"code": "batch_expired", "message": "not answered within the completion window"}


def _output_line(run_id: str, record: dict[str, Any], created: int) -> dict[str, Any]:
    """One line of OpenAI's batch output (an answer) or error file (anything else)."""
    line_id = "batch_req_" + hashlib.sha256(f"{run_id}:{record['id']}".encode()).hexdigest()[:24]
    line: dict[str, Any] = {"id": line_id, "custom_id": record["id"]}
    if record.get("status") != "ok":
        error = record.get("error") or {}
        line["response"] = None
        line["error"] = {
            "code": error.get("code") or "failed",
            "message": error.get("message") or "",
            "status_code": result_status(record),
        }
        return line
    body = completion_body(record, created)
    line["response"] = {"status_code": 200, "request_id": line_id, "body": body}
    line["error"] = None
    cost = record.get("cost_nusd")
    line["batchwise"] = {
        "cache": record.get("cache", "miss"),
        "cost_usd": None if cost is None else usd_float(cost),
        "provider": record.get("provider"),
        "batch_size": record.get("batch_size", 0),
    }
    return line


def _jsonl(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _batch_object(
    batch_id: str, request: dict[str, Any], file_id: str, now: int, window_h: int
) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": ENDPOINT,
        "errors": None,
        "input_file_id": file_id,
        "completion_window": request.get("completion_window"),
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + window_h * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": request.get("metadata"),
    }


def _line_errors(submission: Submission | None, message: str = "") -> dict[str, Any]:
    """OpenAI's `errors` list of a failed batch: its refused lines, or one message."""
    data = [
        {"code": "invalid_request", "line": e.line, "message": e.reason, "param": e.field or None}
        for e in (submission.errors[:100] if submission else [])
    ] or [{"code": "invalid_request", "line": None, "message": message, "param": None}]
    return {"object": "list", "data": data}


async def _body(request: Request) -> dict[str, Any]:
    try:
        doc = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "the body must be a JSON object")
    return doc


async def create_batch(request: Request) -> Response:
    who = principal(request)
    return JSONResponse(await state_of(request).batches.create(who, await _body(request)))


async def get_batch(request: Request) -> Response:
    who = principal(request)
    return JSONResponse(
        await state_of(request).batches.get(
            who.tenant, object_id(request.path_params["id"], "batch")
        )
    )


async def cancel_batch(request: Request) -> Response:
    who = principal(request)
    store = state_of(request).batches
    return JSONResponse(
        await store.cancel(who.tenant, object_id(request.path_params["id"], "batch"))
    )


async def list_batches(request: Request) -> Response:
    who = principal(request)
    store = state_of(request).batches
    after = request.query_params.get("after")
    return JSONResponse(await store.list(who.tenant, page_limit(request), after))
