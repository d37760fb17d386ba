"""Nightly runs: job files dropped in an inbox directory, answered through the batch-API route.

    inbox/x.jsonl ──claim──▶ inbox/.processing/<tag>.x.jsonl ──run done──▶ inbox/done/x.jsonl
                                  (submitted, batch_api=True)      └──▶ outbox/x.results.jsonl
                                                                        outbox/x.cost.json
    unreadable, empty or too old ──▶ inbox/failed/x.jsonl + x.jsonl.reason.txt

A pass (`Nightly.tick`, run by an arq cron job in every worker, or `batchwise nightly --once`)
claims new files and finishes the runs that are complete. A file is claimed with Redis `SET NX`
on its name and then moved with an atomic rename, so one file is processed once however many
workers look at the inbox. Every later step runs under a lease on the claimed file and is a
state change in Redis, so a worker that dies mid-way leaves work the next pass picks up.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from .client import BatchwiseClient, new_run_id
from .config import Settings
from .errors import ConfigError, InputError
from .intake import LineError, read_file
from .leases import Lease
from .models import Task, Usage
from .runs import NANO, to_result

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

    def _dirs(self) -> None:
        for directory in (self.inbox, self.outbox, self.processing, self.done, self.failed):
            directory.mkdir(parents=True, exist_ok=True)

    async def tick(self) -> dict[str, int]:
        """One pass: claim and submit new files, finish complete runs. Returns counts."""
        self._dirs()
        counts = {"claimed": 0, "finished": 0, "failed": 0}
        for path in sorted(self.inbox.glob("*.jsonl")):
            if path.is_file() and await self._claim(path):
                counts["claimed"] += 1
        for path in sorted(self.processing.glob("*.jsonl")):
            outcome = await self._advance(path)
            if outcome in ("finished", "failed"):
                counts[outcome] += 1
        return counts

    # ---- claiming ----------------------------------------------------------------------------

    async def _claim(self, path: Path) -> bool:
        redis, k = self.pipeline.redis, self.pipeline.keys
        claim = Lease(redis, k.nightly_claim(path.name), self.lease_s)
        if not await claim.acquire():
            return False
        tag = new_run_id()
        lease = Lease(redis, k.nightly_lease(tag), self.lease_s)
        try:
            if not await lease.acquire():
                return False
            try:
                os.rename(path, self.processing / f"{tag}.{path.name}")
            except FileNotFoundError:  # another worker moved it first
                return False
            await redis.hset(
                k.nightly_file(tag),
                mapping={"name": path.name, "state": "submitting", "claimed_at": time.time()},
            )
            await claim.release()  # the rename is done: the name is free for tomorrow's file
            logger.info("nightly: claimed %s as %s", path.name, tag)
            await self._submit(tag, self.processing / f"{tag}.{path.name}")
            return True
        finally:
            await lease.release()
            await claim.release()

    async def _submit(self, tag: str, path: Path) -> None:
        redis, k = self.pipeline.redis, self.pipeline.keys
        attempts = await redis.hincrby(k.nightly_file(tag), "attempts", 1)
        if attempts > MAX_SUBMIT_ATTEMPTS:
            # every restart re-asks what the cut-short runs already answered: stop paying twice
            await self._fail(
                tag,
                path,
                f"submission was cut short {attempts - 1} times; split the file or raise "
                "job_timeout_s (a pass must submit the whole file)",
            )
            return
        run_id = f"{tag}-{uuid.uuid4().hex[:4]}"
        await redis.hset(k.nightly_file(tag), mapping={"run_id": run_id, "state": "submitting"})
        try:
            submission = await self.client.submit_stream(
                run_id, self._tasks(path), source=f"nightly:{path.name}", complete=True
            )
        except (OSError, InputError) as exc:
            await self._fail(tag, path, f"cannot read the file: {exc}")
            return
        if submission.accepted == 0 and submission.total == 0:
            await self._fail(tag, path, "the file holds no task")
            return
        await redis.hset(k.nightly_file(tag), "state", "submitted")

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
                await self._submit(tag, path)
                return "resubmitted"
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
        if "results" in state:  # a pass that died half-way chose these names: keep them
            results, report_path = Path(state["results"]), Path(state["report"])
        else:
            results = _free(self.outbox / f"{name.removesuffix('.jsonl')}.results.jsonl", tag)
            report_path = results.with_name(
                results.name.removesuffix(".results.jsonl") + ".cost.json"
            )
            await redis.hset(
                k.nightly_file(tag), mapping={"results": str(results), "report": str(report_path)}
            )
        await self._write_results(state["run_id"], results)
        report = await self.cost_report(state["run_id"])
        report.update({"file": name, "results": str(results)})
        _write_atomic(report_path, orjson.dumps(report, option=orjson.OPT_INDENT_2))
        os.rename(path, _free(self.done / name, tag))
        await redis.hset(k.nightly_file(tag), "state", "done")
        logger.info("nightly: %s done: %s", name, results)

    async def _fail(self, tag: str, path: Path, reason: str) -> None:
        name = path.name.partition(".")[2]
        target = _free(self.failed / name, tag)
        os.rename(path, target)
        _write_atomic(target.with_name(target.name + ".reason.txt"), reason.encode() + b"\n")
        await self.pipeline.redis.hset(
            self.pipeline.keys.nightly_file(tag), mapping={"state": "failed", "reason": reason}
        )
        logger.warning("nightly: %s failed: %s", name, reason)

    async def _write_results(self, run_id: str, out_path: Path) -> None:
        tmp = out_path.with_name(out_path.name + ".part")
        with tmp.open("wb") as fh:
            async for record in self.pipeline.runs.records(run_id):
                fh.write(to_result(record).model_dump_json().encode() + b"\n")
        tmp.replace(out_path)

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
            cost = Decimal(int(record.get("cost_nusd") or 0)) / NANO
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


def _free(path: Path, tag: str) -> Path:
    """`path`, or `path` with the tag before its suffix when a file of that name exists."""
    if not path.exists():
        return path
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


# ---- command line ------------------------------------------------------------------------------


def add_cli(subparsers: Any) -> None:
    """`batchwise nightly --once [--wait]`."""
    nightly = subparsers.add_parser(
        "nightly", help="process the nightly inbox (BATCHWISE_NIGHTLY_INBOX) on REDIS_URL"
    )
    nightly.add_argument("--once", action="store_true", required=True, help="do one pass")
    nightly.add_argument("--inbox", type=Path, help="inbox directory (overrides the setting)")
    nightly.add_argument("--outbox", type=Path, help="outbox directory (overrides the setting)")
    nightly.set_defaults(handler=cmd_nightly)


async def cmd_nightly(args: argparse.Namespace, settings: Settings) -> int:
    """One pass over the inbox and the open provider batches; prints what it did."""
    overrides: dict[str, Any] = {}
    if args.inbox:
        overrides["nightly_inbox"] = args.inbox
    if args.outbox:
        overrides["nightly_outbox"] = args.outbox
    return await _once(settings.model_copy(update=overrides))


async def _once(settings: Settings) -> int:
    from .batchapi import BatchApi

    client = await BatchwiseClient.connect(settings)
    p = client.pipeline
    batchapi = BatchApi(p.redis, settings, p.keys, p.executor)
    try:
        counts = await Nightly(client).tick()
        sync = await batchapi.tick()
        if sync:  # leave them to the workers' recovery sweep: open batches are re-enqueued
            logger.info("nightly: %d batch(es) sent back to the synchronous route", len(sync))
        subs = await batchapi.open_submissions()
        print(
            f"claimed {counts['claimed']}, finished {counts['finished']}, "
            f"failed {counts['failed']}; open provider batches: {len(subs)}"
        )
    finally:
        await batchapi.aclose()
        await client.close()
    return 0
