"""`batchwise cache stats | clear`: the cache's analytics and its deletion, from the shell.

Both use the shared Redis (REDIS_URL) or, without one, the embedded Redis that `batchwise run`
keeps in its state directory.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.table import Table

from pipeline.cache.stats import read_stats, total
from pipeline.cache.store import ResponseCache
from pipeline.config.settings import Settings
from pipeline.errors import InputError
from pipeline.keys import Keys
from pipeline.models import TENANT_RULE, valid_tenant
from pipeline.state.opening import open_state
from pipeline.terminal import terminal_safe


def add_cli(subparsers: Any) -> None:
    """Register `batchwise cache ...` on the main parser's subcommands."""
    cache = subparsers.add_parser("cache", help="response cache: analytics and deletion")
    sub = cache.add_subparsers(dest="cache_command", required=True, metavar="{stats,clear}")
    stats = sub.add_parser("stats", help="entries, hit rates and savings per tenant and model")
    stats.add_argument("--tenant", help="only this tenant")
    stats.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    stats.set_defaults(handler=cmd_cache_stats)
    clear = sub.add_parser("clear", help="delete cached answers (and their prompts)")
    which = clear.add_mutually_exclusive_group(required=True)
    which.add_argument("--tenant", help="only this tenant's answers")
    which.add_argument("--all", action="store_true", help="every tenant's answers")
    clear.set_defaults(handler=cmd_cache_clear)


async def cmd_cache_clear(args: argparse.Namespace, settings: Settings) -> int:
    """Delete one tenant's cached answers, or everyone's with --all."""
    if not args.all and not valid_tenant(args.tenant):
        raise InputError(f"not a tenant name: {TENANT_RULE}", where="--tenant")
    async with open_state(settings) as redis:
        no_model = settings.model_copy(update={"cache_semantic": False})  # needs no embedder
        cache = ResponseCache(redis, no_model, Keys(settings.key_prefix))
        n = await cache.clear(tenant=None if args.all else args.tenant)
    who = "all tenants" if args.all else f"tenant {args.tenant}"
    Console(stderr=True).print(f"deleted {n} cached answer(s) of {who}", highlight=False)
    return 0


async def cmd_cache_stats(args: argparse.Namespace, settings: Settings) -> int:
    """Print the cache's analytics."""
    async with open_state(settings) as redis:
        rows = await read_stats(redis, Keys(settings.key_prefix), tenant=args.tenant)
    out = Console() if sys.stdout.isatty() else Console(width=120)  # piped: never cut numbers
    if args.json:
        for r in [*rows, total(rows)]:
            out.file.write(orjson.dumps(r.as_dict()).decode() + "\n")
        return 0
    table = Table(title="response cache", box=box.SIMPLE, pad_edge=False)
    table.add_column("tenant", no_wrap=True, max_width=24)
    table.add_column("model", no_wrap=True, max_width=24)
    for name in ("entries", "lookups", "exact", "semantic", "blocked", "tokens", "saved"):
        table.add_column(name, justify="right", no_wrap=True, min_width=max(len(name), 7))
    for r in [*rows, total(rows)] if rows else []:
        table.add_row(
            terminal_safe(r.tenant),
            terminal_safe(r.model),
            f"{r.entries:,}",
            f"{r.lookups:,}",
            f"{r.exact_hit_rate:.0%}",
            f"{r.semantic_hit_rate:.0%}",
            f"{r.semantic_blocked:,}",
            f"{r.saved_input_tokens + r.saved_output_tokens:,}",
            f"${r.saved_usd:.4f}" + ("+" if r.unpriced_hits else ""),
        )
    out.print(table if rows else "the cache has no entries or lookups yet")
    if rows:
        out.print("exact, semantic: hit rates; tokens, saved: not spent thanks to hits; --json")
    return 0
