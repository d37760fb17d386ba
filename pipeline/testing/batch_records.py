"""The batch objects the fake batch APIs (batches.py) keep: a new batch checked the way the real
APIs check it, and an ended batch with its results.

A batch is a dict in the API's own shape; keys that start with `_` are the fake's own and never
leave it (`public`). Results come back in reverse order, so a client must join them on
`custom_id`.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_BYTES = 200 * 1024 * 1024
ANTHROPIC_MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# (request, HTTP status of its answer, answer body)
Answered = list[tuple[dict[str, Any], int, Any]]


def public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def multipart(headers: dict[str, str], body: bytes) -> dict[str, tuple[str, bytes]]:
    """Form fields of a multipart body: name -> (filename, content)."""
    match = re.search(r'boundary="?([^";]+)"?', headers.get("content-type", ""))
    if not match:
        return {}
    fields: dict[str, tuple[str, bytes]] = {}
    for part in body.split(b"--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        disposition = head.decode("latin-1")
        name = re.search(r'name="([^"]*)"', disposition)
        filename = re.search(r'filename="([^"]*)"', disposition)
        if name:
            fields[name.group(1)] = (filename.group(1) if filename else "", content[:-2])
    return fields


def _openai_requests(content: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The requests of an OpenAI batch input file, and its validation errors."""
    requests: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    lines = [line for line in content.splitlines() if line.strip()]
    for n, raw in enumerate(lines, 1):
        try:
            line = json.loads(raw)
            custom_id = str(line["custom_id"])
            if line.get("method") != "POST" or line.get("url") != "/v1/chat/completions":
                raise ValueError("method must be POST and url /v1/chat/completions")
            if custom_id in seen:
                raise ValueError(f"duplicate custom_id {custom_id!r}")
            seen.add(custom_id)
            requests.append({"custom_id": custom_id, "body": line["body"]})
        except (ValueError, KeyError, TypeError) as exc:
            errors.append({"code": "invalid_request", "message": str(exc), "line": n})
    models = {str(r["body"].get("model")) for r in requests}
    if len(models) > 1:
        errors.append({"code": "mixed_models", "message": "one model per batch file", "line": None})
    if len(requests) > OPENAI_MAX_REQUESTS or len(content) > OPENAI_MAX_BYTES:
        errors.append({"code": "too_large", "message": "batch file too large", "line": None})
    return requests, errors


def openai_batch(batch_id: str, doc: dict[str, Any], content: bytes, fail: bool) -> dict[str, Any]:
    """A new OpenAI batch on input file `content`; failed validation when the file is invalid
    or `fail` is set."""
    requests, errors = _openai_requests(content)
    if fail and not errors:
        errors.append(
            {"code": "invalid_file", "message": "validation failed (fault)", "line": None}
        )
    failed = bool(errors)
    now = int(time.time())
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": doc["endpoint"],
        "errors": {"object": "list", "data": errors} if failed else None,
        "input_file_id": doc["input_file_id"],
        "completion_window": "24h",
        "status": "failed" if failed else "in_progress",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None if failed else now,
        "expires_at": now + 86400,
        "completed_at": None,
        "failed_at": now if failed else None,
        "expired_at": None,
        "cancelled_at": None,
        "request_counts": {"total": len(requests), "completed": 0, "failed": 0},
        "metadata": doc.get("metadata"),
        "_anthropic": False,
        "_requests": requests,
        "_state": "failed" if failed else "open",
        "_created": time.time(),
    }


def anthropic_problem(requests: Any) -> str:
    """Why Anthropic would refuse a batch of `requests`, or ""."""
    if not isinstance(requests, list) or not requests:
        return "requests: Field required"
    ids = [str(r.get("custom_id", "")) for r in requests]
    bad = [i for i in ids if not _CUSTOM_ID.match(i)]
    if bad or len(set(ids)) != len(ids) or len(requests) > ANTHROPIC_MAX_REQUESTS:
        return f"invalid or duplicate custom_id(s): {bad[:3] or 'duplicates'}"
    return ""


def anthropic_batch(batch_id: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": {
            "processing": len(requests),
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        },
        "ended_at": None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "expires_at": None,
        "cancel_initiated_at": None,
        "results_url": None,
        "_anthropic": True,
        "_state": "open",
        "_created": time.time(),
        "_requests": [{"custom_id": r["custom_id"], "body": r.get("params")} for r in requests],
    }


def openai_result_lines(
    outcome: str, done: Answered, unanswered: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The output file's lines and the error file's lines of an OpenAI batch that ended."""
    output: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for n, (request, status, body) in enumerate(done):
        line = {
            "id": f"batch_req_{n}",
            "custom_id": request["custom_id"],
            "response": {"status_code": status, "request_id": f"req_{n}", "body": body},
            "error": None,
        }
        (output if status == 200 else errors).append(line)
    code = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(outcome, "")
    for request in unanswered:
        errors.append(
            {
                "id": "batch_req_x",
                "custom_id": request["custom_id"],
                "response": None,
                "error": {"code": code, "message": f"request {outcome}"},
            }
        )
    return output, errors


def end_anthropic(
    batch: dict[str, Any], outcome: str, done: Answered, unanswered: list[dict[str, Any]]
) -> None:
    """Mark an Anthropic batch ended with its results (`results_url` is set by the caller)."""
    results: list[dict[str, Any]] = []
    counts = batch["request_counts"]
    for request, status, body in done:
        if status == 200:
            result: dict[str, Any] = {"type": "succeeded", "message": body}
            counts["succeeded"] += 1
        else:
            result = {"type": "errored", "error": body}
            counts["errored"] += 1
        results.append({"custom_id": request["custom_id"], "result": result})
    kind = "canceled" if outcome == "cancelled" else "expired"
    for request in unanswered:
        results.append({"custom_id": request["custom_id"], "result": {"type": kind}})
        counts[kind] += 1
    counts["processing"] = 0
    results.reverse()
    batch["_results"] = results
    batch["processing_status"] = "ended"
    batch["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
