"""Exporting the ledger (`batchwise ledger export`) to JSONL or CSV.

JSONL holds every entry whole, one per line, with a `type` of `call` or `saving`. CSV has one row
per cost share of a call (the part of it that belongs to one user and endpoint), so summing
`cost_usd` over the rows gives the spend exactly, and one row per saving. The file is streamed
and written under a temporary name, then renamed: a reader never sees half an export.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from pipeline.costs.archive import LedgerArchive
from pipeline.costs.ledger import Ledger
from pipeline.costs.money import usd_text
from pipeline.errors import ConfigError
from pipeline.outfile import writing

CSV_COLUMNS = (
    "type",
    "id",
    "time",
    "batch_id",
    "provider",
    "model",
    "simulated",
    "batch_api",
    "status",
    "error",
    "attempt",
    "tenant",
    "user_id",
    "endpoint",
    "items",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "call_cost_usd",
    "call_input_tokens",
    "call_cached_input_tokens",
    "call_cache_write_tokens",
    "call_output_tokens",
    "latency_ms",
    "batch_size",
    "lever",
    "saved_usd",
    "tasks",
)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds")


def csv_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The CSV rows of one ledger entry (as `Ledger.raw_entries` gives it)."""
    if entry["type"] == "saving":
        return [
            {
                "type": "saving",
                "id": entry["id"],
                "time": _iso(entry["at"]),
                "batch_id": entry.get("batch_id") or "",
                "model": entry.get("model", ""),
                "tenant": entry.get("tenant", ""),
                "user_id": entry.get("user_id", ""),
                "endpoint": entry.get("endpoint", ""),
                "lever": entry["lever"],
                "saved_usd": usd_text(entry["saved_nusd"]),
                "tasks": entry.get("tasks", 0),
            }
        ]
    usage = entry.get("usage") or {}
    cost = entry.get("cost_usd")
    base = {
        "type": "call",
        "id": entry["id"],
        "time": _iso(entry["at"]),
        "batch_id": entry.get("batch_id", ""),
        "provider": entry.get("provider", ""),
        "model": entry.get("model", ""),
        "simulated": int(bool(entry.get("simulated"))),
        "batch_api": int(bool(entry.get("batch_api"))),
        "status": entry.get("status", ""),
        "error": entry.get("error") or "",
        "attempt": entry.get("attempt", 1),
        "tenant": entry.get("tenant", ""),
        "call_cost_usd": "" if cost is None else cost,
        "call_input_tokens": usage.get("input_tokens", 0),
        "call_cached_input_tokens": usage.get("cached_input_tokens", 0),
        "call_cache_write_tokens": usage.get("cache_write_tokens", 0),
        "call_output_tokens": usage.get("output_tokens", 0),
        "latency_ms": entry.get("latency_ms", 0),
        "batch_size": entry.get("batch_size", 0),
    }
    shares = entry.get("shares") or []
    if not shares:
        return [base | {"cost_usd": "" if cost is None else cost, "items": base["batch_size"]}]
    return [
        base
        | {
            "user_id": share.get("user_id", ""),
            "endpoint": share.get("endpoint", ""),
            "items": share.get("items", 0),
            "cost_usd": usd_text(share.get("cost_nusd")),
            "input_tokens": share.get("input_tokens", 0),
            "output_tokens": share.get("output_tokens", 0),
        }
        for share in shares
    ]


async def export(
    ledger: Ledger,
    out: Path,
    *,
    fmt: str = "jsonl",
    since: date | None = None,
    until: date | None = None,
    archive: LedgerArchive | None = None,
) -> int:
    """Write the ledger's entries (of the days given, by record time) to `out`, the archived
    ones first; the count."""
    if fmt not in ("jsonl", "csv"):
        raise ConfigError(f"unknown export format {fmt!r}; use jsonl or csv")
    written = 0
    with writing(out, "w", newline="", encoding="utf-8") as fh:
        writer = None
        if fmt == "csv":
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="raise")
            writer.writeheader()
        async for entry in _entries(ledger, archive, since, until):
            if writer is not None:
                writer.writerows(csv_rows(entry))
            else:
                fh.write(orjson.dumps(entry).decode() + "\n")
            written += 1
    return written


async def _entries(
    ledger: Ledger, archive: LedgerArchive | None, since: date | None, until: date | None
) -> AsyncIterator[dict[str, Any]]:
    low = _ms(since) if since else None
    high = _ms(until + timedelta(days=1)) if until else None
    sources = (
        [ledger.raw_entries()] if archive is None else [archive.raw_entries(), ledger.raw_entries()]
    )
    for source in sources:
        async for entry in source:
            at_ms = entry["at"] * 1000
            if (low is not None and at_ms < low) or (high is not None and at_ms >= high):
                continue
            yield entry


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
