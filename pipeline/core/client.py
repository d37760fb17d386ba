"""The producer side: submit tasks (a job file or Python objects), wait, and read results.

    async with BatchwiseClient.connect() as client:   # REDIS_URL and the usual settings
        run_id = await client.submit([{"prompt": "..."}, ...])
        await client.wait(run_id, timeout=60)
        async for result in client.results(run_id): ...

Submission validates, shapes (routes a model, sets max_tokens) and enqueues in chunks, so a file
of any size streams through in bounded memory. Workers do the rest. The client waits through a
Redis outage of up to `redis_outage_wait_s` (see pipeline/state/reconnect.py).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.settings import Settings
from pipeline.core.intake import LineError, read_file, result_id, validate
from pipeline.core.progress import RunProgress, RunResults
from pipeline.core.summary import Summary, summarise_run
from pipeline.core.wiring import Pipeline
from pipeline.costs.savings import Hit, cache_savings
from pipeline.errors import InputError
from pipeline.models import Result, Task
from pipeline.routing.router import Rejection
from pipeline.state.connecting import Connecting, lost_redis
from pipeline.state.durable import DiskAck

Progress = Callable[[int], None]


@dataclass
class Submission:
    run_id: str
    accepted: int = 0
    rejected: int = 0
    errors: list[LineError] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.accepted + self.rejected


def _rejection(task_id: str, code: str, message: str, metadata: Any = None) -> dict[str, Any]:
    return {
        "id": task_id,
        "status": "rejected",
        "error": {"code": code, "message": message},
        "metadata": metadata,
        "cost_nusd": 0,
    }


class BatchwiseClient:
    """Async API for services. Safe to share across tasks of one event loop."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.disk = DiskAck(pipeline.redis)

    @classmethod
    def connect(cls, settings: Settings | None = None) -> Connecting[BatchwiseClient]:
        """Connect to REDIS_URL (fails at once, in one line, if Redis cannot be reached):
        `client = await BatchwiseClient.connect()` or `async with BatchwiseClient.connect() as
        client:` (which closes it)."""
        return Connecting(settings, cls)

    async def close(self) -> None:
        await self.pipeline.aclose()
        await self.pipeline.redis.aclose()

    async def __aenter__(self) -> BatchwiseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def lost_redis(
        self, doing: str, run_id: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Turn Redis lost for good (past `redis_outage_wait_s`) into one line saying what to do."""
        return lost_redis(self.pipeline.settings, doing, run_id)

    async def submit(
        self,
        tasks: Iterable[Task | dict[str, Any]],
        *,
        run_id: str | None = None,
        complete: bool = False,
    ) -> str:
        """Queue tasks; returns the run id. Invalid tasks raise `InputError` before any is queued.

        With `complete=False` (services) groups wait for their linger time to fill up; with
        `complete=True` (no more tasks are coming) they flush at once.
        """
        run_id = run_id or new_run_id()
        seen: set[str] = set()
        checked: list[Task] = []
        for index, task in enumerate(tasks):
            obj = task
            if isinstance(task, Task):
                obj = {
                    "id": task.id,
                    "messages": [m.model_dump() for m in task.messages],
                    "system": task.system or None,
                    **_task_options(task),
                }
            checked_task = validate(obj, index + 1, seen, source="task")
            if isinstance(checked_task, LineError):
                raise InputError(
                    checked_task.reason, where=f"task {index}", field=checked_task.field
                )
            checked.append(checked_task)
        await self.submit_stream(run_id, checked, source="api", complete=complete)
        return run_id

    async def submit_file(
        self,
        path: Path,
        *,
        strict: bool = False,
        run_id: str | None = None,
        on_progress: Progress | None = None,
    ) -> Submission:
        """Validate and queue a JSONL job file, streaming it. With `strict`, any bad line
        refuses the whole file (raises `InputError` listing them) before anything is queued."""
        limit = self.pipeline.settings.max_line_bytes
        if strict:
            errors = [e for e in read_file(path, max_line_bytes=limit) if isinstance(e, LineError)]
            if errors:
                shown = "\n".join(f"  {e}" for e in errors[:20])
                more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
                raise InputError(
                    f"{len(errors)} invalid line(s); nothing was queued:\n{shown}{more}",
                    where=str(path),
                )
        run_id = run_id or new_run_id()
        return await self.submit_stream(
            run_id,
            read_file(path, max_line_bytes=limit),
            source=str(path),
            complete=True,
            on_progress=on_progress,
        )

    async def submit_stream(
        self,
        run_id: str,
        items: Iterable[Task | LineError],
        *,
        source: str,
        complete: bool,
        on_progress: Progress | None = None,
    ) -> Submission:
        """Shape and queue validated tasks in chunks; refused ones get a `rejected` result."""
        doing = f"submitting run {run_id} (part of it may be queued)"
        async with self.lost_redis(doing, run_id):
            return await self._submit_stream(run_id, items, source, complete, on_progress)

    async def _submit_stream(
        self,
        run_id: str,
        items: Iterable[Task | LineError],
        source: str,
        complete: bool,
        on_progress: Progress | None,
    ) -> Submission:
        p = self.pipeline
        await p.runs.create(run_id, source=source, simulated=p.simulated)
        report = Submission(run_id)
        touched: set[str] = set()
        chunk: list[Task | LineError] = []
        for entry in items:
            chunk.append(entry)
            if len(chunk) >= p.settings.submit_chunk:
                touched |= await self._queue_chunk(run_id, chunk, report)
                chunk = []
                if on_progress:
                    on_progress(report.total)
        if chunk:
            touched |= await self._queue_chunk(run_id, chunk, report)
            if on_progress:
                on_progress(report.total)
        await p.runs.seal(run_id, report.total)
        if complete:
            await p.packer.mark_due(sorted(touched))
        if p.settings.durable_submit:
            await self.disk.wait(f"run {run_id}")
        return report

    async def _queue_chunk(
        self, run_id: str, chunk: list[Task | LineError], report: Submission
    ) -> set[str]:
        p = self.pipeline
        ordered: list[tuple[str, Any, str]] = []  # (task id, metadata, tenant) in input order
        rejections: list[dict[str, Any]] = []
        queued: list[Task] = []
        for entry in chunk:
            if isinstance(entry, LineError):
                report.errors.append(entry)
                ordered.append((result_id(entry), None, entry.tenant))
                rejections.append(_rejection(result_id(entry), "invalid_input", str(entry)))
                continue
            ordered.append((entry.id, entry.metadata, entry.tenant))
            mine = {"run_id": run_id, "single_flight": p.settings.single_flight}
            shaped = p.router.shape(entry.model_copy(update=mine))
            if isinstance(shaped, Rejection):
                rejections.append(_rejection(entry.id, shaped.code, shaped.message))
            else:
                queued.append(shaped)
        queued, refused = await p.admission.admit(queued)  # plans, breakers, budget pressure
        rejections += [_rejection(r.task.id, r.code, r.message) for r in refused]
        report.rejected += len(rejections)
        report.accepted += len(queued)
        cached = await p.cache.lookup(queued)  # hits are answered now; misses go on
        hits = self._hits(queued, cached.hits)
        queued = cached.misses
        async with p.redis.pipeline(transaction=False) as pipe:
            p.runs.add_tasks(pipe, run_id, ordered)
            for rejection in rejections + cached.hits:
                await p.runs.write(run_id, rejection, pipe=pipe)
            p.cache.remember(pipe, cached)
            groups = await p.packer.enqueue_many(queued, pipe=pipe)
            replies = await pipe.execute()
        sizes = replies[-1] if groups else []
        full = zip(groups, sizes, strict=True)
        await p.packer.mark_full([g for (g, kind), n in full if n >= p.packer.max_items(kind)])
        for saving in cache_savings(p.prices, run_id, hits):  # so `report` counts the hits
            await p.ledger.record_saving(saving)
        return {g for g, _ in groups}

    def _hits(self, tasks: list[Task], answered: list[dict[str, Any]]) -> list[Hit]:
        """The cache hits among `tasks`, each result marked with its task's baseline model."""
        by_id = {task.id: task for task in tasks}
        hits = []
        for result in answered:
            task = by_id[result["id"]]
            result["baseline_model"] = task.requested_model or self.pipeline.settings.baseline_model
            hits.append(
                Hit(
                    task_id=task.id,
                    kind=result["cache"],
                    tenant=task.tenant,
                    user_id=task.user_id,
                    endpoint=task.endpoint,
                    baseline_model=result["baseline_model"],
                    model=result.get("model") or task.model,
                    naive_input_tokens=int(result.get("naive_input_tokens") or 0),
                    naive_output_tokens=int(result.get("naive_output_tokens") or 0),
                )
            )
        return hits

    async def wait(
        self, run_id: str, *, timeout: float | None = None, timeout_s: float | None = None
    ) -> None:
        """Return when every task of the run has its result; `TimeoutError` after `timeout`
        seconds (`timeout_s` is the same). Waits through a Redis outage."""
        limit = timeout if timeout is not None else timeout_s
        async with self.lost_redis(f"waiting for run {run_id}", run_id):
            await self.pipeline.runs.wait(run_id, timeout_s=limit)

    async def progress(self, run_id: str) -> RunProgress:
        """How far the run is: results written, tasks submitted, submission sealed."""
        async with self.lost_redis(f"reading the progress of run {run_id}", run_id):
            try:
                done, total, sealed = await self.pipeline.runs.progress(run_id)
            except KeyError:
                raise InputError(
                    f"no run {run_id!r} on this Redis: check the run id and REDIS_URL",
                    where="run id",
                ) from None
        return RunProgress(run_id, done, total, sealed)

    def results(self, run_id: str) -> RunResults:
        """The run's results in submission order (`async for`); the iterator's `complete`
        flag says whether the run had finished (see `progress` and `wait`)."""
        doing = f"reading the results of run {run_id}"
        return RunResults(run_id, self.pipeline.runs, self.progress, lambda: self.lost_redis(doing))

    async def result(
        self, task_id: str, run_id: str | None = None, *, tenant: str = "default"
    ) -> Result | None:
        """One task's result, None if not yet: from `run_id` when given, else from the latest
        run in which `tenant` used this id. Another tenant's task of the same id is never found."""
        return await self.pipeline.runs.result(task_id, run_id, tenant=tenant)

    async def summary(self, run_id: str) -> Summary:
        """Counts, tokens and cost of a finished run, and the naive baseline."""
        p = self.pipeline
        return await summarise_run(p.runs, p.prices, run_id, p.settings.baseline_model)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _task_options(task: Task) -> dict[str, Any]:
    options = task.model_dump(
        include={
            "task_type",
            "quality",
            "budget_sensitive",
            "temperature",
            "ttl_class",
            "ttl_s",
            "tenant",
            "user_id",
            "endpoint",
            "response_schema",
            "metadata",
        },
        mode="json",
    )
    if task.requested_model:
        options["model"] = task.requested_model
    if task.max_tokens:
        options["max_tokens"] = task.max_tokens
    return options
