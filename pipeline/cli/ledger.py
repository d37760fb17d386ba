"""`batchwise ledger export | archive`: the cost ledger's records to a file, and its old
records from Redis to the Parquet archive (docs/ledger.md)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from pipeline.cli.common import fail, iso_day
from pipeline.config.settings import Settings
from pipeline.costs.archive import LedgerArchive
from pipeline.costs.export import export
from pipeline.costs.ledger import Ledger
from pipeline.keys import Keys
from pipeline.state.opening import open_state


def add_cli(subparsers: Any) -> None:
    """Register `batchwise ledger export` and `batchwise ledger archive`."""
    p = subparsers.add_parser("ledger", help="the cost ledger: export or archive its records")
    sub = p.add_subparsers(dest="ledger_command", required=True, metavar="{export,archive}")
    ex = sub.add_parser("export", help="write every call and saving record to a file")
    ex.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    ex.add_argument("--out", type=Path, required=True, help="the file to write")
    ex.add_argument("--since", type=iso_day, help="first day, YYYY-MM-DD (UTC)")
    ex.add_argument("--until", type=iso_day, help="last day, YYYY-MM-DD (UTC)")
    ex.set_defaults(handler=cmd_export)
    ar = sub.add_parser("archive", help="move old records from Redis to the Parquet archive")
    ar.add_argument(
        "--older-than",
        type=duration_s,
        default=None,
        help="archive records written longer ago than this (e.g. 7d, 12h, 0s; "
        "default: the ledger_retention_s setting)",
    )
    ar.set_defaults(handler=cmd_archive)


def duration_s(text: str) -> float:
    """`90s`, `15m`, `12h`, `7d` (or plain seconds) as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"not a duration (e.g. 7d, 12h, 0s): {text!r}")
    return value


async def cmd_archive(args: argparse.Namespace, settings: Settings) -> int:
    older_than_s = settings.ledger_retention_s if args.older_than is None else args.older_than
    async with open_state(settings, require_data=True) as redis:
        archive = LedgerArchive(redis, Keys(settings.key_prefix), settings.archive_dir)
        done = await archive.run(older_than_s)
    if done is None:
        return fail("another process is archiving the ledger right now; try again later", settings)
    print(f"{done.entries} ledger entries archived in {done.files} file(s) under {archive.root}")
    return 0


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    async with open_state(settings, require_data=True) as redis:
        ledger = Ledger(redis, Keys(settings.key_prefix))
        archive = LedgerArchive(redis, Keys(settings.key_prefix), settings.archive_dir)
        n = await export(
            ledger, args.out, fmt=args.format, since=args.since, until=args.until, archive=archive
        )
    print(f"{n} ledger entries written to {args.out}")
    return 0
