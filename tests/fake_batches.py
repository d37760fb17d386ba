"""The fake provider's batch APIs: OpenAI Files + Batch, and Anthropic Message Batches.

    POST /v1/files (multipart, purpose=batch)      GET /v1/files/{id}/content
    POST /v1/batches   GET /v1/batches[/{id}]      POST /v1/batches/{id}/cancel
    POST /v1/messages/batches   GET /v1/messages/batches/{id}[/results]   POST .../{id}/cancel

A batch is answered when it is retrieved after `delay_s` (default 0) unless `hold` is on: each
request goes through the fake's own chat endpoint, so queued faults turn into per-request errors
(partial errors). `outcome` decides how batches end: `completed`, `expired` or `cancelled` (after
answering the first `answered` requests; the rest expire or are cancelled) or `failed` (OpenAI
input validation failure, no results). Results come back in reverse order, so a client must join
them on `custom_id`.

In-process: `fake.batch_api.configure(hold=True)`, `.configure(hold=False, outcome="expired",
answered=1)`. From any process: `POST /_control/batches` with the same fields; `GET
/_control/batches` returns the counters.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fake_provider import FakeProvider, Response

OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_BYTES = 200 * 1024 * 1024
ANTHROPIC_MAX_REQUESTS = 100_000
OUTCOMES = ("completed", "expired", "cancelled", "failed")
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _json(status: int, doc: Any) -> Response:
    return status, {}, json.dumps(doc).encode()


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
    return _json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})


def _multipart(headers: dict[str, str], body: bytes) -> dict[str, tuple[str, bytes]]:
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


class FakeBatchAPI:
    """State of the fake's batch endpoints; reset with the fake."""

    def __init__(self, fake: FakeProvider) -> None:
        self.fake = fake
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.hold = False
        self.delay_s = 0.0
        self.outcome = "completed"
        self.answered: int | None = None
        self.counters = {
            "files": 0,
            "created": 0,
            "retrieved": 0,
            "downloads": 0,
            "requests": 0,
            "cancelled": 0,
        }

    def configure(
        self,
        *,
        hold: bool | None = None,
        delay_s: float | None = None,
        outcome: str | None = None,
        answered: int | None = -1,
    ) -> None:
        """Change how batches end; `answered=-1` leaves it as it is."""
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        with self._lock:
            if hold is not None:
                self.hold = hold
            if delay_s is not None:
                self.delay_s = delay_s
            if outcome is not None:
                self.outcome = outcome
            if answered != -1:
                self.answered = answered

    def stats(self) -> dict[str, Any]:
        with self._lock:
            states: dict[str, int] = {}
            for b in self.batches.values():
                states[b["_state"]] = states.get(b["_state"], 0) + 1
            return {**self.counters, "states": states, "hold": self.hold, "outcome": self.outcome}

    def control(self, method: str, doc: Any) -> Response:
        if method == "POST":
            doc = doc or {}
            self.configure(
                hold=doc.get("hold"),
                delay_s=doc.get("delay_s"),
                outcome=doc.get("outcome"),
                answered=doc.get("answered", -1),
            )
        return _json(200, self.stats())

    # ---- routing -----------------------------------------------------------------------------

    def handles(self, path: str) -> bool:
        return path.startswith(("/v1/files", "/v1/batches", "/v1/messages/batches"))

    async def dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        anthropic = path.startswith("/v1/messages/batches")
        if anthropic:
            if headers.get("x-api-key", "") != self.fake.key:
                return _json(
                    401,
                    {
                        "type": "error",
                        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                    },
                )
            if "anthropic-version" not in headers:
                return _json(
                    400,
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "message": "anthropic-version: header is required",
                        },
                    },
                )
        else:
            key = headers.get("authorization", "").removeprefix("Bearer ").strip()
            if key != self.fake.key:
                return _error(401, "Incorrect API key provided.")
        parts = [p for p in path.split("/") if p][1:]  # drop "v1"
        if anthropic:
            return await self._anthropic(method, parts[2:], query, body)
        if parts[0] == "files":
            return self._files(method, parts[1:], headers, body)
        return await self._openai(method, parts[1:], query, body)

    # ---- OpenAI ------------------------------------------------------------------------------

    def _files(
        self, method: str, rest: list[str], headers: dict[str, str], body: bytes
    ) -> Response:
        if method == "POST" and not rest:
            fields = _multipart(headers, body)
            if "file" not in fields or fields.get("purpose", ("", b""))[1] != b"batch":
                return _error(400, "expected a multipart form with file and purpose=batch")
            filename, content = fields["file"]
            with self._lock:
                file_id = f"file-fake{next(self._ids)}"
                self.files[file_id] = {"content": content, "filename": filename}
                self.counters["files"] += 1
            return _json(
                200,
                {
                    "id": file_id,
                    "object": "file",
                    "bytes": len(content),
                    "created_at": int(time.time()),
                    "filename": filename,
                    "purpose": "batch",
                },
            )
        if method == "GET" and len(rest) == 2 and rest[1] == "content":
            file = self.files.get(rest[0])
            if file is None:
                return _error(404, f"No such File object: {rest[0]}")
            with self._lock:
                self.counters["downloads"] += 1
            return 200, {}, file["content"]
        return _error(404, "no such files route")

    async def _openai(
        self, method: str, rest: list[str], query: dict[str, list[str]], body: bytes
    ) -> Response:
        if method == "POST" and not rest:
            return self._openai_create(json.loads(body or b"{}"))
        if method == "GET" and not rest:
            limit = int(query.get("limit", ["20"])[0])
            data = [self._public(b) for b in reversed(self.batches.values()) if not b["_anthropic"]]
            return _json(
                200, {"object": "list", "data": data[:limit], "has_more": len(data) > limit}
            )
        batch = self.batches.get(rest[0]) if rest else None
        if batch is None or batch["_anthropic"]:
            return _error(404, f"No batch found with id '{rest[0] if rest else ''}'.")
        if method == "POST" and rest[1:] == ["cancel"]:
            return _json(200, self._public(await self._cancel(batch)))
        if method == "GET" and len(rest) == 1:
            with self._lock:
                self.counters["retrieved"] += 1
            await self._maybe_finish(batch)
            return _json(200, self._public(batch))
        return _error(404, "no such batches route")

    def _openai_create(self, doc: dict[str, Any]) -> Response:
        file = self.files.get(str(doc.get("input_file_id")))
        if file is None:
            return _error(400, f"Invalid input_file_id {doc.get('input_file_id')!r}")
        if doc.get("endpoint") != "/v1/chat/completions" or doc.get("completion_window") != "24h":
            return _error(400, "endpoint must be /v1/chat/completions and completion_window 24h")
        now = int(time.time())
        with self._lock:
            batch_id = f"batch_fake{next(self._ids)}"
            self.counters["created"] += 1
        requests: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        lines = [line for line in file["content"].splitlines() if line.strip()]
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
            errors.append(
                {"code": "mixed_models", "message": "one model per batch file", "line": None}
            )
        if len(requests) > OPENAI_MAX_REQUESTS or len(file["content"]) > OPENAI_MAX_BYTES:
            errors.append({"code": "too_large", "message": "batch file too large", "line": None})
        failed = bool(errors) or self.outcome == "failed"
        if self.outcome == "failed" and not errors:
            errors.append(
                {"code": "invalid_file", "message": "validation failed (fault)", "line": None}
            )
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": doc["endpoint"],
            "errors": None,
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
        if failed:
            batch["errors"] = {"object": "list", "data": errors}
        self.batches[batch_id] = batch
        return _json(200, self._public(batch))

    # ---- Anthropic ---------------------------------------------------------------------------

    async def _anthropic(
        self, method: str, rest: list[str], query: dict[str, list[str]], body: bytes
    ) -> Response:
        if method == "GET" and not rest:
            return self._anthropic_list(query)
        if method == "POST" and not rest:
            doc = json.loads(body or b"{}")
            requests = doc.get("requests")
            if not isinstance(requests, list) or not requests:
                return _error(400, "requests: Field required")
            ids = [str(r.get("custom_id", "")) for r in requests]
            bad = [i for i in ids if not _CUSTOM_ID.match(i)]
            if bad or len(set(ids)) != len(ids) or len(requests) > ANTHROPIC_MAX_REQUESTS:
                return _error(400, f"invalid or duplicate custom_id(s): {bad[:3] or 'duplicates'}")
            with self._lock:
                batch_id = f"msgbatch_fake{next(self._ids)}"
                self.counters["created"] += 1
            self.batches[batch_id] = {
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
                "_requests": [
                    {"custom_id": r["custom_id"], "body": r.get("params")} for r in requests
                ],
            }
            return _json(200, self._public(self.batches[batch_id]))
        batch = self.batches.get(rest[0]) if rest else None
        if batch is None or not batch["_anthropic"]:
            return _json(
                404,
                {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": "batch not found"},
                },
            )
        if method == "POST" and rest[1:] == ["cancel"]:
            return _json(200, self._public(await self._cancel(batch)))
        if method == "GET" and len(rest) == 1:
            with self._lock:
                self.counters["retrieved"] += 1
            await self._maybe_finish(batch)
            return _json(200, self._public(batch))
        if method == "GET" and rest[1:] == ["results"]:
            if batch["_state"] != "ended":
                return _error(400, "batch is still processing")
            with self._lock:
                self.counters["downloads"] += 1
            lines = [json.dumps(r) for r in batch["_results"]]
            return 200, {}, ("\n".join(lines) + "\n").encode()
        return _error(404, "no such message batches route")

    def _anthropic_list(self, query: dict[str, list[str]]) -> Response:
        """Most recently created first; `after_id` pages to older batches, as Anthropic's does."""
        limit = int((query.get("limit") or ["20"])[0])
        after = (query.get("after_id") or [""])[0]
        listed = [b for b in self.batches.values() if b["_anthropic"]]
        listed.sort(key=lambda b: b["_created"], reverse=True)
        if after:
            ids = [b["id"] for b in listed]
            listed = listed[ids.index(after) + 1 :] if after in ids else []
        page = [self._public(b) for b in listed[:limit]]
        return _json(
            200,
            {
                "data": page,
                "has_more": len(listed) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            },
        )

    # ---- answering ---------------------------------------------------------------------------

    async def _cancel(self, batch: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.counters["cancelled"] += 1
        if batch["_state"] == "open":
            await self._finish(batch, "cancelled", self.answered or 0)
        return batch

    async def _maybe_finish(self, batch: dict[str, Any]) -> None:
        if batch["_state"] != "open" or self.hold:
            return
        if time.time() < batch["_created"] + self.delay_s:
            return
        await self._finish(batch, self.outcome, self.answered)

    async def _finish(self, batch: dict[str, Any], outcome: str, answered: int | None) -> None:
        batch["_state"] = "ended"
        requests = batch["_requests"]
        limit = (
            len(requests) if outcome in ("completed", "failed") or answered is None else answered
        )
        done: list[tuple[dict[str, Any], int, Any]] = []
        for request in requests[:limit]:
            status, body = await self._call(batch["_anthropic"], request["body"])
            done.append((request, status, body))
        unanswered = requests[limit:]
        now = int(time.time())
        if batch["_anthropic"]:
            self._finish_anthropic(batch, outcome, done, unanswered)
        else:
            self._finish_openai(batch, outcome, done, unanswered, now)

    async def _call(self, anthropic: bool, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.counters["requests"] += 1
        if anthropic:
            headers = {"x-api-key": self.fake.key, "anthropic-version": "2023-06-01"}
            path = "anthropic"
        else:
            headers = {"authorization": f"Bearer {self.fake.key}"}
            path = "openai"
        status, _, payload = await self.fake._provider_call(
            path, headers, json.dumps(body).encode()
        )
        return status, json.loads(payload)

    def _finish_openai(
        self,
        batch: dict[str, Any],
        outcome: str,
        done: list[tuple[dict[str, Any], int, Any]],
        unanswered: list[dict[str, Any]],
        now: int,
    ) -> None:
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
        for kind, lines in (("output_file_id", output), ("error_file_id", errors)):
            if lines:
                file_id = f"file-fake{next(self._ids)}"
                content = "".join(json.dumps(x) + "\n" for x in reversed(lines)).encode()
                self.files[file_id] = {"content": content, "filename": f"{kind}.jsonl"}
                batch[kind] = file_id
        batch["status"] = outcome
        batch[f"{outcome}_at"] = now
        batch["request_counts"]["completed"] = len(output)
        batch["request_counts"]["failed"] = len(errors)

    def _finish_anthropic(
        self,
        batch: dict[str, Any],
        outcome: str,
        done: list[tuple[dict[str, Any], int, Any]],
        unanswered: list[dict[str, Any]],
    ) -> None:
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
        batch["results_url"] = f"{self.fake.url}/v1/messages/batches/{batch['id']}/results"

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}
