"""The documents of OpenAI's Batch API: the batch object, its `errors` list, and the lines of
its output file (answers) and error file (anything else)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from pipeline.core.client import Submission
from pipeline.core.runs import RunStore
from pipeline.costs.money import usd_float
from pipeline.server.chat import completion_body
from pipeline.server.errors import result_status

ENDPOINT = "/v1/chat/completions"

# what a line that never got its answer says, by how its batch ended
EXPIRED = {"code": "batch_expired", "message": "not answered within the completion window"}
CANCELLED = {
    "code": "batch_cancelled",
    "message": "withdrawn before it ran: the batch was cancelled",
}
FAILED = {
    "code": "batch_failed",
    "message": "withdrawn before it ran: the batch failed while its lines were being queued",
}


def batch_object(
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


def line_errors(submission: Submission | None, message: str = "") -> dict[str, Any]:
    """OpenAI's `errors` list of a failed batch: its refused lines, or one message."""
    data = [
        {"code": "invalid_request", "line": e.line, "message": e.reason, "param": e.field or None}
        for e in (submission.errors[:100] if submission else [])
    ] or [{"code": "invalid_request", "line": None, "message": message, "param": None}]
    return {"object": "list", "data": data}


def output_line(run_id: str, record: dict[str, Any], created: int) -> dict[str, Any]:
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


def jsonl(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


async def output_files(runs: RunStore, run_id: str) -> tuple[bytes, bytes, dict[str, int]]:
    """The output and error files' content, in input order, and the final request counts; a
    line still unanswered (the batch expired) is an error line `batch_expired`."""
    output: list[bytes] = []
    errors: list[bytes] = []
    created = int(time.time())
    order = runs.keys.run_order(run_id)
    start = 0
    while ids := [i.decode() for i in await runs.redis.lrange(order, start, start + 999)]:
        start += len(ids)
        written = {r["id"]: r for r in await runs.written(run_id, ids)}
        for task_id in ids:
            record = written.get(task_id) or {"id": task_id, "status": "failed", "error": EXPIRED}
            line = output_line(run_id, record, created)
            (output if line["error"] is None else errors).append(orjson.dumps(line))
    counts = {"total": len(output) + len(errors), "completed": len(output), "failed": len(errors)}
    return jsonl(output), jsonl(errors), counts
