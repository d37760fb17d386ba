"""The routing-and-optimisation commands: `batchwise plan`, `selfhost` and `audit`."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.console import Console
from rich.table import Table

from . import plan, selfhost
from .app import connect_redis
from .audit import audit_report
from .config import Settings
from .keys import Keys


def add_cli(subparsers: Any) -> None:
    """Register this issue's subcommands; each sets `handler(args, settings) -> int`."""
    plan.add_cli(subparsers)
    selfhost.add_cli(subparsers)
    p = subparsers.add_parser(
        "audit", help="packing-audit agreement per task type and batch size, and limit changes"
    )
    p.set_defaults(handler=cmd_audit)


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """Handler of `batchwise audit`: reads REDIS_URL, else the embedded Redis of the state dir."""
    return asyncio.run(_audit(settings))


async def _audit(settings: Settings) -> int:
    from .embedded import EmbeddedRedis

    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(settings.state_dir)
        url = embedded.start()
    redis = connect_redis(url)
    try:
        rows, events = await audit_report(redis, Keys(settings.key_prefix), settings)
    finally:
        await redis.aclose()
        if embedded:
            embedded.stop()
    console = Console()
    table = Table(title="packing audit: packed answers against the same tasks sent alone")
    for name in ("task type", "max items (config → now)", "batch size", "audits", "agreement"):
        table.add_column(name, justify="left" if name == "task type" else "right")
    for row in rows:
        limit = f"{row.configured_max} → {row.current_max}"
        if not row.by_size:
            table.add_row(row.task_type, limit, "", "0", "")
        for i, (size, (n, mean)) in enumerate(sorted(row.by_size.items())):
            table.add_row(
                row.task_type if i == 0 else "",
                limit if i == 0 else "",
                str(size),
                str(n),
                f"{mean:.1%}",
            )
    console.print(table)
    if not rows:
        console.print("no audits yet: set audit_share (BATCHWISE_AUDIT_SHARE) above 0")
    for event in events:
        console.print(
            f"{event['task_type']}: max batch size {event['from_items']} → {event['to_items']} "
            f"(agreement {event['agreement']:.1%} over {event['samples']} audits, "
            f"threshold {event['threshold']:.0%})",
            highlight=False,
        )
    return 0
