"""Chat completions (`POST /v1/chat/completions`, pipeline/server/openai_api.py): one
interactive call through every lever.

Requests that arrive within `server_chat_linger_ms` of each other are submitted as one run, so
the packer can put concurrent questions of one group into one provider call (micro-batching).
Each request waits only for its own result; one poller watches every run in flight. The answer
is a normal `chat.completion`, with `x-batchwise-*` headers for its cost, cache outcome, batch
size and provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.core.client import BatchwiseClient, new_run_id
from pipeline.core.intake import from_openai_chat
from pipeline.models import Task
from pipeline.server.errors import ApiError

logger = logging.getLogger("batchwise.server")

# body fields that would change what comes back and that batchwise does not do
_UNSUPPORTED = ("stream", "tools", "functions", "tool_choice", "function_call", "logprobs")
_EXTENSIONS = ("task_type", "quality", "budget_sensitive", "ttl_class", "ttl_s")


def completion_body(record: dict[str, Any], created: int) -> dict[str, Any]:
    """A stored `ok` result as an OpenAI `chat.completion` with usage."""
    output = record.get("output")
    content = output if isinstance(output, str) else orjson.dumps(output).decode()
    prompt_tokens = int(record.get("input_tokens") or 0)
    completion_tokens = int(record.get("output_tokens") or 0)
    return {
        "id": "chatcmpl-" + uuid.uuid5(uuid.NAMESPACE_URL, str(record["id"])).hex[:24],
        "object": "chat.completion",
        "created": created,
        "model": record.get("model") or "",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": None,
    }


def chat_line(body: Any, task_id: str) -> dict[str, Any]:
    """A chat request body as a job line (the OpenAI batch form, plus batchwise's extensions)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    for name in _UNSUPPORTED:
        if body.get(name):
            raise ApiError(400, f"'{name}' is not supported by batchwise", param=name)
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    line: dict[str, Any] = {"custom_id": task_id, "method": "POST", "body": body}
    extensions = {k: body[k] for k in _EXTENSIONS if k in body}
    if extensions:  # not part of the OpenAI line form: validate them in the native one
        line = {"id": task_id, **from_openai_chat(body), **extensions}
    return line


@dataclass
class _Watch:
    """The callers still waiting on one submitted micro-batch."""

    waiting: dict[str, asyncio.Future[dict[str, Any]]]
    size: int
    read_at: int = 0  # the run's `done` count when its results were last read


class ChatBatcher:
    """Collects concurrent chat tasks for a short linger and submits them as one run; one poller
    watches every run in flight (a single Redis round trip per tick) and hands each caller its
    own result as soon as it is written."""

    def __init__(self, client: BatchwiseClient, linger_s: float, poll_s: float = 0.01) -> None:
        self.client = client
        self.linger_s = linger_s
        self.poll_s = poll_s
        self._pending: list[tuple[Task, asyncio.Future[dict[str, Any]]]] = []
        self._flush: asyncio.Task[None] | None = None
        self._submits: set[asyncio.Task[None]] = set()
        self._watched: dict[str, _Watch] = {}
        self._poller: asyncio.Task[None] | None = None

    async def ask(self, task: Task, timeout_s: float) -> tuple[dict[str, Any], int]:
        """The task's result record and how many requests shared its submission."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((task, future))
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_later())
        try:
            record = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            raise ApiError(504, f"no answer within {timeout_s:g}s", code="timeout") from None
        return record, int(record.pop("_micro_batch", 1))

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.linger_s)
        batch, self._pending, self._flush = self._pending, [], None
        submit = asyncio.create_task(self._submit(batch))
        self._submits.add(submit)
        submit.add_done_callback(self._submits.discard)

    async def _submit(self, batch: list[tuple[Task, asyncio.Future[dict[str, Any]]]]) -> None:
        waiting = {task.id: future for task, future in batch}
        run_id = new_run_id()
        try:
            await self.client.submit_stream(
                run_id, [task for task, _ in batch], source="http:chat", complete=True
            )
        except Exception as exc:  # Redis gone: every caller of this run gets a 503
            logger.exception("chat micro-batch could not be queued")
            _fail(waiting, exc)
            return
        self._watched[run_id] = _Watch(waiting, len(batch))
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        runs, keys = self.client.pipeline.runs, self.client.pipeline.keys
        while self._watched:
            try:
                run_ids = list(self._watched)
                async with self.client.pipeline.redis.pipeline(transaction=False) as pipe:
                    for run_id in run_ids:
                        pipe.hget(keys.run(run_id), "done")
                    counts = await pipe.execute()
                for run_id, count in zip(run_ids, counts, strict=True):
                    watch = self._watched[run_id]
                    if int(count or 0) <= watch.read_at:  # nothing new written
                        continue
                    watch.read_at = int(count)
                    for record in await runs.written(run_id, list(watch.waiting)):
                        future = watch.waiting.pop(record["id"])
                        if not future.done():
                            future.set_result({**record, "_micro_batch": watch.size})
                    if not watch.waiting:
                        del self._watched[run_id]
            except Exception as exc:  # Redis gone: every waiting caller gets a 503
                logger.exception("chat results could not be read")
                for watch in self._watched.values():
                    _fail(watch.waiting, exc)
                self._watched.clear()
                return
            await asyncio.sleep(self.poll_s)

    async def aclose(self) -> None:
        tasks = [t for t in (self._flush, self._poller, *self._submits) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _fail(waiting: dict[str, asyncio.Future[dict[str, Any]]], exc: Exception) -> None:
    for future in waiting.values():
        if not future.done():
            future.set_exception(ApiError(503, f"the pipeline is unavailable: {exc}"))
