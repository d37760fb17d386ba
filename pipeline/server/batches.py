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

A server validating or finalizing a batch holds the batch's lease. A request that finds a batch
`validating` or `finalizing` with the lease free knows its server died, and takes it over: it
writes the files of a finalizing batch again, and moves a validating one on (its run was queued
whole) or fails it, withdrawing the lines still pending. Cancelling and expiry withdraw the
lines that have not started (pipeline/packing/withdraw.py); lines already in a provider call finish.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import orjson
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from pipeline.core.client import BatchwiseClient, Submission
from pipeline.core.intake import LineError
from pipeline.keys import Keys
from pipeline.models import Task
from pipeline.packing.withdraw import withdraw_pending
from pipeline.server.auth import Principal
from pipeline.server.batch_output import (
    CANCELLED,
    ENDPOINT,
    EXPIRED,
    FAILED,
    batch_object,
    line_errors,
    output_files,
)
from pipeline.server.errors import ApiError, not_found, object_id
from pipeline.server.files import FileStore, listing, page
from pipeline.server.lines import check_lines, split_jsonl
from pipeline.state.leases import Lease

logger = logging.getLogger("batchwise.server")

_WINDOW = re.compile(r"^([1-9][0-9]{0,3})h$")
_RUNNING = ("in_progress", "cancelling", "finalizing")


class RunState(NamedTuple):
    """A batch's run as last read: results written, lines, submission complete, refused."""

    done: int
    total: int
    sealed: bool
    rejected: int

    @property
    def finished(self) -> bool:
        return self.sealed and self.done >= self.total


class BatchStore:
    """A tenant's batch objects in Redis, refreshed from their runs when read."""

    def __init__(self, client: BatchwiseClient, files: FileStore) -> None:
        self.client = client
        self.files = files
        self.redis = client.pipeline.redis
        self.keys: Keys = client.pipeline.keys
        self.ttl_s = client.pipeline.settings.results_ttl_s
        self.lease_s = client.pipeline.settings.server_batch_lease_s
        self._validating: set[asyncio.Task[None]] = set()

    def _lease(self, tenant: str, batch_id: str) -> Lease:
        return Lease(self.redis, self.keys.server_batch_lease(tenant, batch_id), self.lease_s)

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
        doc = batch_object(batch_id, request, file_id, now, window_h)
        lease = self._lease(who.tenant, batch_id)
        await lease.acquire()  # before the batch exists: nobody ever sees it validating unleased
        listed = self.keys.server_batches(who.tenant)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:  # one round trip
                pipe.set(self.keys.server_run(who.tenant, batch_id), 1, ex=self.ttl_s)
                self._save_in(pipe, who.tenant, doc)
                pipe.zadd(listed, {batch_id: time.time()})
                pipe.expire(listed, self.ttl_s)
                await pipe.execute()
        except BaseException:
            await lease.release()
            raise
        min_window_h = settings.server_batch_api_min_window_h
        batch_api = min_window_h > 0 and window_h >= min_window_h
        lines = check_lines(entries, who, source=file_id, batch_api=batch_api)
        job = asyncio.create_task(self._validate(who.tenant, batch_id, lines, lease))
        self._validating.add(job)
        job.add_done_callback(self._validating.discard)
        return doc

    async def _validate(
        self, tenant: str, batch_id: str, lines: Iterator[Task | LineError], lease: Lease
    ) -> None:
        """Queue the valid lines (the batch is `validating` meanwhile), then move it on."""
        try:
            await self._queue(tenant, batch_id, lines)
        except Exception:  # Redis gone for good: a later request takes the batch over
            logger.exception("batch %s: validation could not finish", batch_id)
        finally:
            await lease.release()

    async def _queue(self, tenant: str, batch_id: str, lines: Iterator[Task | LineError]) -> None:
        submission: Submission | None = None
        problem: str | None = None
        try:
            submission = await self.client.submit_stream(
                batch_id, lines, source=f"http:{tenant}:batch", complete=True
            )
        except Exception as exc:  # Redis gone mid-way: the batch fails and says why
            logger.exception("batch %s: validation failed", batch_id)
            problem = f"the batch could not be queued: {exc}"
        if submission is not None and submission.accepted == 0:
            problem = "the input file has no valid request"
        now = int(time.time())

        def queued(doc: dict[str, Any]) -> bool:
            if doc["status"] not in ("validating", "cancelling"):  # taken over meanwhile
                return False
            if submission is not None:
                doc["request_counts"] = {
                    "total": submission.total,
                    "completed": 0,
                    "failed": submission.rejected,
                }
            if problem is not None:
                doc["errors"] = doc["errors"] or line_errors(submission, problem)
                doc["status"], doc["failed_at"] = "failed", now
            elif doc["status"] == "validating":
                doc["status"], doc["in_progress_at"] = "in_progress", now
            return True

        rejected = submission.rejected if submission else 0
        doc = await self._update(tenant, batch_id, queued, rejected=rejected)
        if doc["status"] == "cancelling":  # cancelled while its lines were being queued
            await self._withdraw(tenant, batch_id, CANCELLED)
        elif doc["status"] == "failed" and (submission is None or submission.accepted):
            # whatever was queued before it failed, or before another request took it over
            await self._withdraw(tenant, batch_id, FAILED)

    async def aclose(self) -> None:
        """Let batches being validated finish queueing (shutdown waits for them)."""
        await asyncio.gather(*self._validating, return_exceptions=True)

    async def _update(
        self,
        tenant: str,
        batch_id: str,
        change: Callable[[dict[str, Any]], bool],
        rejected: int | None = None,
    ) -> dict[str, Any]:
        """Apply `change` to the stored batch object and save it, atomically (a change made
        meanwhile by another request is read and `change` applied again). `change` returns
        False to leave the object as it is."""
        key = self.keys.server_batch(tenant, batch_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "doc")
                    if raw is None:
                        raise not_found("batch", batch_id)
                    doc: dict[str, Any] = orjson.loads(raw)
                    if not change(doc):
                        return doc  # leaving the block unwatches
                    pipe.multi()  # type: ignore[no-untyped-call]
                    self._save_in(pipe, tenant, doc, rejected)
                    await pipe.execute()
                    return doc
                except WatchError:
                    continue

    def _save_in(
        self, pipe: Pipeline, tenant: str, doc: dict[str, Any], rejected: int | None = None
    ) -> None:
        key = self.keys.server_batch(tenant, doc["id"])
        mapping: dict[str, Any] = {"doc": orjson.dumps(doc)}
        if rejected is not None:
            mapping["rejected"] = rejected
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self.ttl_s)

    async def _withdraw(self, tenant: str, batch_id: str, error: dict[str, str]) -> int:
        p = self.client.pipeline
        return await withdraw_pending(p.redis, p.keys, batch_id, tenant, error, ttl_s=self.ttl_s)

    async def get(self, tenant: str, batch_id: str) -> dict[str, Any]:
        (doc,) = await self._read(tenant, [batch_id])
        if doc is None:
            raise not_found("batch", batch_id)
        return doc

    async def _read(self, tenant: str, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """The batch objects of `ids` (None where gone), each brought up to date with its run:
        two round trips for any number of batches, plus the rare takeover or finalization."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hget(self.keys.server_batch(tenant, batch_id), "doc")
            raw: list[bytes | None] = await pipe.execute()
        docs = [None if r is None else orjson.loads(r) for r in raw]
        running = [d for d in docs if d is not None and d["status"] in _RUNNING]
        states = await self._run_states(tenant, [d["id"] for d in running])
        fresh = {
            d["id"]: await self._refresh(tenant, d, state)
            for d, state in zip(running, states, strict=True)
        }
        found: list[dict[str, Any] | None] = []
        for doc in docs:
            if doc is None:
                found.append(None)
            elif doc["status"] == "validating":
                found.append(await self._recover(tenant, doc))
            else:
                found.append(fresh.get(doc["id"], doc))
        return found

    async def _run_states(self, tenant: str, ids: Sequence[str]) -> list[RunState | None]:
        """The runs of these batches (None where the run expired), in one round trip."""
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hmget(self.keys.run(batch_id), ["done", "total", "sealed"])
                pipe.hget(self.keys.server_batch(tenant, batch_id), "rejected")
            raw = await pipe.execute()
        found: list[RunState | None] = []
        for (done, total, sealed), rejected in zip(raw[::2], raw[1::2], strict=True):
            found.append(
                None
                if done is None
                else RunState(int(done), int(total or 0), sealed == b"1", int(rejected or 0))
            )
        return found

    async def _refresh(
        self, tenant: str, doc: dict[str, Any], state: RunState | None
    ) -> dict[str, Any]:
        """Bring a running batch up to date with its run; finalize it once the run is done,
        the window has passed, or its finalizing server died."""
        if state is None:  # the run expired before its batch record did
            return doc
        expired = time.time() > doc["expires_at"]
        if doc["status"] == "finalizing" or state.finished or expired:
            return await self._finalize(tenant, doc, state.finished)
        doc["request_counts"]["completed"] = max(0, state.done - state.rejected)
        return doc

    async def _recover(self, tenant: str, doc: dict[str, Any]) -> dict[str, Any]:
        """A `validating` batch whose server died (its lease is free): move it on if its run
        was queued whole, else fail it and withdraw what it had queued."""
        lease = self._lease(tenant, doc["id"])
        if not await lease.acquire():
            return doc  # its server is still queueing the lines
        try:
            (state,) = await self._run_states(tenant, [doc["id"]])
            whole = state is not None and state.sealed
            rejected = await self._rejected(doc["id"]) if whole else 0
            if state is not None and not whole:  # so the run ends and expires like others
                await self.client.pipeline.runs.seal(doc["id"], await self._registered(doc["id"]))
                await self._withdraw(tenant, doc["id"], FAILED)
            now = int(time.time())

            def taken_over(d: dict[str, Any]) -> bool:
                if d["status"] != "validating":  # its server finished after all
                    return False
                if whole and state is not None:
                    counts = {"total": state.total, "completed": 0, "failed": rejected}
                    d["request_counts"] = counts
                    d["status"], d["in_progress_at"] = "in_progress", now
                else:
                    message = "the server stopped while validating this batch; create it again"
                    d["errors"] = line_errors(None, message)
                    d["status"], d["failed_at"] = "failed", now
                return True

            return await self._update(tenant, doc["id"], taken_over, rejected=rejected)
        finally:
            await lease.release()

    async def _registered(self, run_id: str) -> int:
        return int(await self.redis.llen(self.keys.run_order(run_id)))

    async def _rejected(self, run_id: str) -> int:
        """How many of a run's lines were refused (counted from its results)."""
        refused = 0
        async for _, value in self.redis.hscan_iter(self.keys.run_results(run_id), count=1000):
            if not value.startswith(b"@") and orjson.loads(value).get("status") == "rejected":
                refused += 1
        return refused

    async def _finalize(self, tenant: str, doc: dict[str, Any], finished: bool) -> dict[str, Any]:
        lease = self._lease(tenant, doc["id"])
        if not await lease.acquire():  # another request is writing the files
            return {**doc, "status": "finalizing"}
        try:
            return await self._write_files(tenant, doc["id"], finished)
        finally:
            await lease.release()

    async def _write_files(self, tenant: str, batch_id: str, finished: bool) -> dict[str, Any]:
        """Under the batch's lease: write its output and error files and close it."""
        now = int(time.time())

        def begin(doc: dict[str, Any]) -> bool:
            if doc["status"] not in _RUNNING:  # another request closed it meanwhile
                return False
            if doc["status"] != "finalizing":
                doc["status"], doc["finalizing_at"] = "finalizing", now
            return True

        doc = await self._update(tenant, batch_id, begin)
        if doc["status"] != "finalizing":
            return doc
        if not finished:  # the window has passed: what has not started is not run
            await self._withdraw(tenant, batch_id, EXPIRED)
        output, errors, counts = await output_files(self.client.pipeline.runs, batch_id)
        produced: dict[str, str] = {}
        for field, content in (("output", output), ("error", errors)):
            if content:
                name = f"{batch_id}_{field}.jsonl"
                file_id = "file-" + hashlib.sha256(name.encode()).hexdigest()[:24]
                stored = await self.files.put(tenant, name, "batch_output", content, file_id)
                produced[f"{field}_file_id"] = stored["id"]

        def close(d: dict[str, Any]) -> bool:
            if d["status"] != "finalizing":
                return False
            d.update(produced, request_counts=counts)
            if d["cancelling_at"] is not None:
                d["status"], d["cancelled_at"] = "cancelled", now
            elif finished:
                d["status"], d["completed_at"] = "completed", now
            else:
                d["status"], d["expired_at"] = "expired", now
            return True

        return await self._update(tenant, batch_id, close)

    async def cancel(self, tenant: str, batch_id: str) -> dict[str, Any]:
        await self.get(tenant, batch_id)  # a batch whose run is done completes first
        now = int(time.time())

        def cancelling(doc: dict[str, Any]) -> bool:
            if doc["status"] not in ("validating", "in_progress"):
                raise ApiError(409, f"Cannot cancel a batch with status '{doc['status']}'.")
            doc["status"], doc["cancelling_at"] = "cancelling", now
            return True

        await self._update(tenant, batch_id, cancelling)
        await self._withdraw(tenant, batch_id, CANCELLED)
        return await self.get(tenant, batch_id)

    async def list(self, tenant: str, limit: int, after: str | None) -> dict[str, Any]:
        ids, more = await page(self.redis, self.keys.server_batches(tenant), limit, after)
        found = await self._read(tenant, ids)  # None: expired since the index was read
        return listing([d for d in found if d is not None], more)
