"""The command line: `batchwise run | submit | worker | results | serve | ...`.

Each command group registers itself (its module's `add_cli`) with an async
`handler(args, settings) -> exit code`; every one opens the state through
pipeline/state/opening.py. A failure a user can fix ends in one `error: ...` line (common.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from redis.exceptions import ConnectionError as RedisConnectionError

import pipeline.cli.budget as budget_cli
import pipeline.cli.cache as cache_cli
import pipeline.cli.ledger as ledger_cli
import pipeline.cli.nightly as nightly_cli
import pipeline.cli.optimise as optimise_cli
import pipeline.cli.providers as provider_cli
import pipeline.cli.report as report_cli
import pipeline.cli.results as results_cli
import pipeline.cli.run as run_cli
import pipeline.cli.serve as serve_cli
import pipeline.cli.submit as submit_cli
import pipeline.cli.worker as worker_cli
from pipeline.cli.common import ERROR_EXIT, err, fail
from pipeline.config.loading import load_settings
from pipeline.config.settings import Settings
from pipeline.errors import PipelineError
from pipeline.redaction import redact_logs, secret_values

COMMAND_GROUPS = (
    run_cli,
    submit_cli,
    worker_cli,
    results_cli,
    report_cli,
    ledger_cli,
    budget_cli,
    provider_cli,
    nightly_cli,
    optimise_cli,
    cache_cli,
    serve_cli,
)


class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake said like every other error: one `error:` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ERROR_EXIT, f"error: {message}; see `{self.prog} --help`\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="batchwise", description="Cut the cost of LLM batch work.")
    p.add_argument("--config", type=Path, help="TOML settings file (default: ./batchwise.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_cli(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings: Settings | None = None
    try:
        settings = load_settings(config_file=args.config)
        redact_logs(secret_values(settings))
        return int(asyncio.run(args.handler(args, settings)))
    except PipelineError as exc:
        return fail(str(exc), settings)
    except RedisConnectionError as exc:
        return fail(f"cannot reach Redis ({exc}); start it, or fix REDIS_URL", settings)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or exc}", settings)
    except KeyboardInterrupt:
        err.print("interrupted; queued work stays in Redis and resumes with the next worker")
        return 130


if __name__ == "__main__":
    sys.exit(main())
