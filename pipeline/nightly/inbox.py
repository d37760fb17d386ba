"""Nightly runs: job files dropped in an inbox directory, answered through the batch-API route.

    inbox/x.jsonl ──claim──▶ inbox/.processing/<tag>.x.jsonl ──run done──▶ inbox/done/x.jsonl
                                  (submitted, batch_api=True)      └──▶ outbox/x.results.jsonl
                                                                        outbox/x.cost.json
    unreadable, empty, not a regular file or too old ──▶ inbox/failed/x.jsonl + x.jsonl.reason.txt

A pass (`Nightly.tick`, run by an arq cron job in every worker, or `batchwise nightly --once`)
claims new files and finishes the runs that are complete. A file is claimed with Redis `SET NX`
on its name and then moved with an atomic rename, so one file is processed once however many
workers look at the inbox. Every later step runs under a lease on the claimed file and is a
state change in Redis, so a worker that dies mid-way leaves work the next pass picks up.

Producers rename a complete file into the inbox; a file whose size or mtime changed within
`nightly_settle_s` is left for a later pass all the same. Others may write to the inbox, so no
symlink there is followed (pipeline/nightly/inbox_files.py), and output names (done/, failed/,
outbox/) are claimed exclusively: two files of one name never share or overwrite a results file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

import pipeline.nightly.inbox_files as files
from pipeline.core.client import BatchwiseClient, new_run_id
from pipeline.core.intake import LineError, read_file
from pipeline.core.runs import to_result
from pipeline.costs.money import usd
from pipeline.errors import ConfigError, InputError
from pipeline.models import Task, Usage
from pipeline.state.leases import Lease

logger = logging.getLogger("batchwise.nightly")

PROCESSING = ".processing"
MAX_SUBMIT_ATTEMPTS = 2


class Nightly:
    """One inbox, its outbox, and the runs in between."""

    def __init__(self, client: BatchwiseClient) -> None:
        self.client = client
        self.pipeline = client.pipeline
        settings = self.pipeline.settings
        if settings.nightly_inbox is None:
            raise ConfigError("nightly_inbox is not set (BATCHWISE_NIGHTLY_INBOX)")
        self.settings = settings
        self.inbox = Path(settings.nightly_inbox)
        self.outbox = Path(settings.nightly_outbox or self.inbox.parent / "outbox")
        self.processing = self.inbox / PROCESSING
        self.done = self.inbox / "done"
        self.failed = self.inbox / "failed"
        self.lease_s = settings.batch_api_lease_s
        self._fd: dict[str, int] = {}

    @contextlib.contextmanager
    def _opened(self) -> Iterator[None]:
        """The pass's directories, opened once: every later step works relative to these, so
        a directory swapped for a symlink mid-pass is never followed."""
        try:
            inbox = self._fd["inbox"] = files.open_dir(self.inbox, follow=True)
            processing = files.open_dir(Path(PROCESSING), parent_fd=inbox, mode=0o700)
            self._fd["processing"] = processing
            # claimed files are read by path: nobody else may swap them, whoever made the dir
            with contextlib.suppress(PermissionError):
                os.fchmod(processing, 0o700)
            self._fd["done"] = files.open_dir(Path("done"), parent_fd=inbox)
            self._fd["failed"] = files.open_dir(Path("failed"), parent_fd=inbox)
            self._fd["outbox"] = files.open_dir(self.outbox)
            yield
        finally:
            for fd in self._fd.values():
                os.close(fd)
            self._fd = {}

    async def tick(self) -> dict[str, int]:
        """One pass: claim and submit new files, finish complete runs. Returns counts."""
        counts = {"claimed": 0, "finished": 0, "failed": 0}
        with self._opened():
            for name in self._ready_files():
                outcome = await self._claim(name)
                if outcome is not None:
                    counts["claimed"] += 1
                    counts["failed"] += outcome == "failed"
            for name in sorted(os.listdir(self._fd["processing"])):
                if _is_job_file(name):
                    outcome = await self._advance(self.processing / name)
                    if outcome in ("finished", "failed"):
                        counts[outcome] += 1
        return counts

    def _ready_files(self) -> list[str]:
        """Job files (`*.jsonl`, any case) whose size and mtime have not changed for
        `nightly_settle_s`: a file still being written is left for a later pass."""
        ready = []
        now = time.time()
        for entry in os.scandir(self._fd["inbox"]):
            if not _is_job_file(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # claimed by another pass meanwhile
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime < self.settings.nightly_settle_s:
                logger.info("nightly: %s is still changing; waiting for it to settle", entry.name)
                continue
            ready.append(entry.name)
        return sorted(ready)

    # ---- claiming ----------------------------------------------------------------------------

    async def _claim(self, name: str) -> str | None:
        """Claim one inbox file and submit it: 'submitted' or 'failed'; None if another pass
        has it."""
        redis, k = self.pipeline.redis, self.pipeline.keys
        claim = Lease(redis, k.nightly_claim(name), self.lease_s)
        if not await claim.acquire():
            return None
        tag = new_run_id()
        lease = Lease(redis, k.nightly_lease(tag), self.lease_s)
        try:
            if not await lease.acquire():
                return None
            fd = self._fd
            try:
                os.rename(
                    name, f"{tag}.{name}", src_dir_fd=fd["inbox"], dst_dir_fd=fd["processing"]
                )
            except FileNotFoundError:  # another worker moved it first
                return None
            await redis.hset(
                k.nightly_file(tag),
                mapping={"name": name, "state": "submitting", "claimed_at": time.time()},
            )
            await claim.release()  # the rename is done: the name is free for tomorrow's file
            logger.info("nightly: claimed %s as %s", name, tag)
            outcome = await self._submit(tag, self.processing / f"{tag}.{name}")
            return None if outcome == "gone" else outcome
        finally:
            await lease.release()
            await claim.release()

    async def _submit(self, tag: str, path: Path) -> str:
        """Queue the claimed file as a run: 'submitted', 'failed' (the file is in failed/) or
        'gone'."""
        redis, k = self.pipeline.redis, self.pipeline.keys
        kind = files.entry_kind(self._fd["processing"], path.name)
        if kind is None:  # finished by another pass meanwhile
            return "gone"
        if kind != "file":
            await self._fail(tag, path, f"not a regular file ({kind}); drop the file itself")
            return "failed"
        attempts = await redis.hincrby(k.nightly_file(tag), "attempts", 1)
        if attempts > MAX_SUBMIT_ATTEMPTS:
            # every restart re-asks what the cut-short runs already answered: stop paying twice
            await self._fail(
                tag,
                path,
                f"submission was cut short {attempts - 1} times; split the file or raise "
                "job_timeout_s (a pass must submit the whole file)",
            )
            return "failed"
        run_id = f"{tag}-{uuid.uuid4().hex[:4]}"
        await redis.hset(k.nightly_file(tag), mapping={"run_id": run_id, "state": "submitting"})
        try:
            submission = await self.client.submit_stream(
                run_id, self._tasks(path), source=f"nightly:{path.name}", complete=True
            )
        except (OSError, InputError) as exc:
            await self._fail(tag, path, f"cannot read the file: {exc}")
            return "failed"
        if submission.accepted == 0 and submission.total == 0:
            await self._fail(tag, path, "the file holds no task")
            return "failed"
        await redis.hset(k.nightly_file(tag), "state", "submitted")
        return "submitted"

    def _tasks(self, path: Path) -> Iterator[Task | LineError]:
        for entry in read_file(path, max_line_bytes=self.settings.max_line_bytes):
            yield (
                entry
                if isinstance(entry, LineError)
                else entry.model_copy(update={"batch_api": True})
            )

    # ---- finishing ---------------------------------------------------------------------------

    async def _advance(self, path: Path) -> str:
        redis, k = self.pipeline.redis, self.pipeline.keys
        tag, _, name = path.name.partition(".")
        lease = Lease(redis, k.nightly_lease(tag), self.lease_s)
        if not await lease.acquire():
            return "busy"
        try:
            raw = await redis.hgetall(k.nightly_file(tag))
            state = {a.decode(): b.decode() for a, b in raw.items()}
            if state.get("state") in (None, "submitting"):
                # the worker that claimed it died mid-submission: submit it again as a new run;
                # identical pending tasks join the items already queued (single flight)
                logger.warning("nightly: %s was interrupted while submitting; resubmitting", name)
                await redis.hset(k.nightly_file(tag), "name", name)
                outcome = await self._submit(tag, path)
                return "resubmitted" if outcome == "submitted" else outcome
            if state["state"] != "submitted":
                return str(state["state"])
            run_id = state["run_id"]
            done, total, sealed = await self.pipeline.runs.progress(run_id)
            if not (sealed and done >= total):
                age_s = time.time() - float(state.get("claimed_at") or time.time())
                if age_s > self.settings.nightly_max_age_s:
                    await self._fail(tag, path, f"not finished after {age_s:.0f}s ({done}/{total})")
                    return "failed"
                return "waiting"
            await self._finish(tag, path, name, state)
            return "finished"
        finally:
            await lease.release()

    async def _finish(self, tag: str, path: Path, name: str, state: dict[str, str]) -> None:
        redis, k = self.pipeline.redis, self.pipeline.keys
        outbox = self._fd["outbox"]
        if "results" in state:  # a pass that died half-way claimed these names: keep them
            results, report_name = Path(state["results"]).name, Path(state["report"]).name
        else:
            stem = name[: -len(".jsonl")]
            results, report_name = files.claim(
                outbox,
                [
                    (f"{s}.results.jsonl", f"{s}.cost.json")
                    for s in (stem, f"{stem}.{tag}", f"{stem}.{tag}.{uuid.uuid4().hex[:8]}")
                ],
            )
            await redis.hset(
                k.nightly_file(tag),
                mapping={
                    "results": str(self.outbox / results),
                    "report": str(self.outbox / report_name),
                },
            )
        with files.replacing(outbox, results, tag) as fh:
            async for record in self.pipeline.runs.records(state["run_id"]):
                fh.write(to_result(record).model_dump_json().encode() + b"\n")
        report = await self.cost_report(state["run_id"])
        report.update({"file": name, "results": str(self.outbox / results)})
        with files.replacing(outbox, report_name, tag) as fh:
            fh.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        files.move(self._fd["processing"], path.name, self._fd["done"], _names(name, tag))
        await redis.hset(k.nightly_file(tag), "state", "done")
        logger.info("nightly: %s done: %s", name, self.outbox / results)

    async def _fail(self, tag: str, path: Path, reason: str) -> None:
        name = path.name.partition(".")[2]
        failed = self._fd["failed"]
        target = files.move(self._fd["processing"], path.name, failed, _names(name, tag))
        with files.replacing(failed, f"{target}.reason.txt", tag) as fh:
            fh.write(reason.encode() + b"\n")
        await self.pipeline.redis.hset(
            self.pipeline.keys.nightly_file(tag), mapping={"state": "failed", "reason": reason}
        )
        logger.warning("nightly: %s failed: %s", name, reason)

    async def cost_report(self, run_id: str) -> dict[str, Any]:
        """What the run cost, and what its answered tasks would have cost at synchronous prices."""
        summary = await self.client.summary(run_id)
        prices = self.pipeline.prices
        sync_usd = Decimal(0)
        batch_usd = Decimal(0)
        by_model: dict[str, dict[str, Any]] = {}
        async for record in self.pipeline.runs.records(run_id):
            if record.get("status") != "ok" or not record.get("model"):
                continue
            model = record["model"]
            usage = Usage(
                input_tokens=int(record.get("input_tokens") or 0),
                output_tokens=int(record.get("output_tokens") or 0),
            )
            sync_usd += prices.price(model, usage) or Decimal(0)
            cost = usd(record.get("cost_nusd") or 0)
            batch_usd += cost
            row = by_model.setdefault(model, {"tasks": 0, "cost_usd": Decimal(0)})
            row["tasks"] += 1
            row["cost_usd"] += cost
        return {
            "run_id": run_id,
            "simulated": summary.simulated,
            "ok": summary.ok,
            "failed": summary.failed,
            "rejected": summary.rejected,
            "provider_calls": summary.provider_calls,
            "input_tokens": summary.input_tokens,
            "output_tokens": summary.output_tokens,
            "cost_usd": str(summary.cost_usd),
            "unpriced_tasks": summary.unpriced,
            "sent_one_by_one_usd": str(summary.naive_cost_usd),
            "same_calls_at_sync_prices_usd": str(sync_usd),
            "batch_api_saving_usd": str(sync_usd - batch_usd),
            "by_model": {m: {**r, "cost_usd": str(r["cost_usd"])} for m, r in by_model.items()},
        }


def _is_job_file(name: str) -> bool:
    """`*.jsonl` in any case; a dot file is a producer's file still being written."""
    return name.lower().endswith(".jsonl") and not name.startswith(".")


def _names(name: str, tag: str) -> list[str]:
    """`name`, then `name` with the tag before its suffix, then a random one: the first free
    one is taken."""
    stem, dot, suffix = name.rpartition(".")
    return [name, f"{stem}.{tag}{dot}{suffix}", f"{stem}.{tag}.{uuid.uuid4().hex[:8]}{dot}{suffix}"]
