"""The routing-and-optimisation commands: `batchwise plan`, `selfhost` and `audit`."""

from __future__ import annotations

from typing import Any

from . import plan


def add_cli(subparsers: Any) -> None:
    """Register this issue's subcommands; each sets `handler(args, settings) -> int`."""
    plan.add_cli(subparsers)
