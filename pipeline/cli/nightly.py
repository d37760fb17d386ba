"""`batchwise nightly --once`: one pass over the nightly inbox and the open provider batches
(pipeline/nightly/inbox.py; workers make the same pass on a cron)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.nightly.inbox import Nightly
from pipeline.state.opening import open_state

logger = logging.getLogger("batchwise.nightly")


def add_cli(subparsers: Any) -> None:
    """Register `batchwise nightly --once`."""
    nightly = subparsers.add_parser(
        "nightly", help="process the nightly inbox (BATCHWISE_NIGHTLY_INBOX)"
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
    from pipeline.nightly.batch_api import BatchApi

    async with open_state(settings) as redis:
        client = BatchwiseClient(Pipeline(settings, redis))
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
            await p.aclose()
    return 0
