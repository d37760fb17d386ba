"""`batchwise worker`: answer the queued batches of the state (`REDIS_URL`, else the embedded
server of the state directory) until SIGINT or SIGTERM, then drain (workers/lifecycle.py)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from pipeline.cli.common import say, worker_state
from pipeline.config.settings import Settings
from pipeline.redaction import redact_logs, secret_values


def add_cli(subparsers: Any) -> None:
    """Register `batchwise worker`."""
    worker = subparsers.add_parser(
        "worker", help="run a worker (on REDIS_URL, else on the embedded state)"
    )
    worker.set_defaults(handler=cmd_worker)


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.lifecycle import serve

    # force: main() has already configured WARNING, which would hide the worker's INFO lines
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    redact_logs(secret_values(settings))
    async with worker_state(settings) as state:
        if not settings.redis_url:
            say(f"worker on the embedded state in {settings.state_dir}; Ctrl-C stops it")
        await serve(state)
    return 0
