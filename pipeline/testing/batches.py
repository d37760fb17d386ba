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
import threading
import time
from typing import Any, Protocol

from pipeline.testing.batch_records import (
    Answered,
    anthropic_batch,
    anthropic_problem,
    end_anthropic,
    multipart,
    openai_batch,
    openai_result_lines,
    public,
)
from pipeline.testing.http import Response, json_response

OUTCOMES = ("completed", "expired", "cancelled", "failed")


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
    return json_response(
        status, {"error": {"message": message, "type": kind, "param": None, "code": None}}
    )


class ChatServer(Protocol):
    """What the batch APIs need of the fake provider: its key and URL, and its chat endpoint."""

    key: str

    @property
    def url(self) -> str: ...

    async def chat(self, path: str, headers: dict[str, str], body: bytes) -> Response: ...


class FakeBatchAPI:
    """State of the fake's batch endpoints; reset with the fake."""

    def __init__(self, fake: ChatServer) -> None:
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
        return json_response(200, self.stats())

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
                return json_response(
                    401,
                    {
                        "type": "error",
                        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                    },
                )
            if "anthropic-version" not in headers:
                return json_response(
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
            fields = multipart(headers, body)
            if "file" not in fields or fields.get("purpose", ("", b""))[1] != b"batch":
                return _error(400, "expected a multipart form with file and purpose=batch")
            filename, content = fields["file"]
            with self._lock:
                file_id = f"file-fake{next(self._ids)}"
                self.files[file_id] = {"content": content, "filename": filename}
                self.counters["files"] += 1
            return json_response(
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
            data = [public(b) for b in reversed(self.batches.values()) if not b["_anthropic"]]
            return json_response(
                200, {"object": "list", "data": data[:limit], "has_more": len(data) > limit}
            )
        batch = self.batches.get(rest[0]) if rest else None
        if batch is None or batch["_anthropic"]:
            return _error(404, f"No batch found with id '{rest[0] if rest else ''}'.")
        cancel = method == "POST" and rest[1:] == ["cancel"]
        if cancel or (method == "GET" and len(rest) == 1):
            return await self._cancel_or_retrieve(batch, cancel=cancel)
        return _error(404, "no such batches route")

    def _openai_create(self, doc: dict[str, Any]) -> Response:
        file = self.files.get(str(doc.get("input_file_id")))
        if file is None:
            return _error(400, f"Invalid input_file_id {doc.get('input_file_id')!r}")
        if doc.get("endpoint") != "/v1/chat/completions" or doc.get("completion_window") != "24h":
            return _error(400, "endpoint must be /v1/chat/completions and completion_window 24h")
        with self._lock:
            batch_id = f"batch_fake{next(self._ids)}"
            self.counters["created"] += 1
        batch = openai_batch(batch_id, doc, file["content"], fail=self.outcome == "failed")
        self.batches[batch_id] = batch
        return json_response(200, public(batch))

    # ---- Anthropic ---------------------------------------------------------------------------

    async def _anthropic(
        self, method: str, rest: list[str], query: dict[str, list[str]], body: bytes
    ) -> Response:
        if method == "GET" and not rest:
            return self._anthropic_list(query)
        if method == "POST" and not rest:
            requests = json.loads(body or b"{}").get("requests")
            problem = anthropic_problem(requests)
            if problem:
                return _error(400, problem)
            with self._lock:
                batch_id = f"msgbatch_fake{next(self._ids)}"
                self.counters["created"] += 1
            self.batches[batch_id] = anthropic_batch(batch_id, requests)
            return json_response(200, public(self.batches[batch_id]))
        batch = self.batches.get(rest[0]) if rest else None
        if batch is None or not batch["_anthropic"]:
            return json_response(
                404,
                {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": "batch not found"},
                },
            )
        cancel = method == "POST" and rest[1:] == ["cancel"]
        if cancel or (method == "GET" and len(rest) == 1):
            return await self._cancel_or_retrieve(batch, cancel=cancel)
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
        page = [public(b) for b in listed[:limit]]
        return json_response(
            200,
            {
                "data": page,
                "has_more": len(listed) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            },
        )

    async def _cancel_or_retrieve(self, batch: dict[str, Any], *, cancel: bool) -> Response:
        """Cancel or retrieve one batch; either can end it (see the module docstring)."""
        if cancel:
            await self._cancel(batch)
        else:
            with self._lock:
                self.counters["retrieved"] += 1
            await self._maybe_finish(batch)
        return json_response(200, public(batch))

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
        done: Answered = []
        for request in requests[:limit]:
            status, body = await self._call(batch["_anthropic"], request["body"])
            done.append((request, status, body))
        unanswered = requests[limit:]
        if batch["_anthropic"]:
            end_anthropic(batch, outcome, done, unanswered)
            batch["results_url"] = f"{self.fake.url}/v1/messages/batches/{batch['id']}/results"
        else:
            self._finish_openai(batch, outcome, done, unanswered)

    async def _call(self, anthropic: bool, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.counters["requests"] += 1
        if anthropic:
            headers = {"x-api-key": self.fake.key, "anthropic-version": "2023-06-01"}
            path = "anthropic"
        else:
            headers = {"authorization": f"Bearer {self.fake.key}"}
            path = "openai"
        status, _, payload = await self.fake.chat(path, headers, json.dumps(body).encode())
        return status, json.loads(payload)

    def _finish_openai(
        self, batch: dict[str, Any], outcome: str, done: Answered, unanswered: list[dict[str, Any]]
    ) -> None:
        output, errors = openai_result_lines(outcome, done, unanswered)
        for kind, lines in (("output_file_id", output), ("error_file_id", errors)):
            if lines:
                file_id = f"file-fake{next(self._ids)}"
                content = "".join(json.dumps(x) + "\n" for x in reversed(lines)).encode()
                self.files[file_id] = {"content": content, "filename": f"{kind}.jsonl"}
                batch[kind] = file_id
        batch["status"] = outcome
        batch[f"{outcome}_at"] = int(time.time())
        batch["request_counts"]["completed"] = len(output)
        batch["request_counts"]["failed"] = len(errors)
