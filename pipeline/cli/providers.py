"""`batchwise providers [status] | reset NAME`: provider health and rate-limit use, shared by all
workers through Redis."""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from pipeline.config.records import ProviderConfig
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.keys import Keys
from pipeline.providers.health import ProviderHealth
from pipeline.providers.ratelimit import RateLimiter
from pipeline.state.opening import open_state
from pipeline.terminal import terminal_safe

out = Console()


def add_cli(subparsers: Any) -> None:
    """Register `batchwise providers ...` on the main parser's subparsers."""
    providers = subparsers.add_parser("providers", help="provider health and rate-limit use")
    providers.set_defaults(handler=cmd_providers)
    sub = providers.add_subparsers(dest="providers_command")
    status = sub.add_parser("status", help="circuits, failures and this window's use (default)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    reset = sub.add_parser("reset", help="close a provider's circuit now (e.g. after a key fix)")
    reset.add_argument("name")


async def provider_status(
    settings: Settings, health: ProviderHealth, limiter: RateLimiter
) -> list[dict[str, Any]]:
    """One row per configured provider: its circuit and its provider-wide and per-model use."""
    rows: list[dict[str, Any]] = []
    for config in settings.providers:
        row: dict[str, Any] = {"name": config.name, "kind": config.kind, "models": config.models}
        row.update(await health.status(config.name))
        row["limits"] = _configured(config)
        row["use"] = {config.name: await limiter.usage(config.name)}
        for model in sorted({*config.model_rpm, *config.model_tpm}):
            scope = limiter.scopes(config.name, model)[1]
            row["use"][scope] = await limiter.usage(scope)
        rows.append(row)
    return rows


def _configured(config: ProviderConfig) -> dict[str, Any]:
    limits: dict[str, Any] = {"rpm": config.rpm, "tpm": config.tpm}
    limits.update({f"{m} rpm": v for m, v in config.model_rpm.items()})
    limits.update({f"{m} tpm": v for m, v in config.model_tpm.items()})
    return {k: v for k, v in limits.items() if v is not None}


async def cmd_providers(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `batchwise providers` command against the state (REDIS_URL or the embedded one)."""
    async with open_state(settings) as redis:
        return await _providers(args, settings, redis)


async def _providers(args: argparse.Namespace, settings: Settings, redis: Redis) -> int:
    keys = Keys(settings.key_prefix)
    health = ProviderHealth(redis, keys, settings)
    if args.providers_command == "reset":
        names = {p.name for p in settings.providers}
        if args.name not in names:
            known = ", ".join(sorted(names)) or "none configured"
            raise ConfigError(f"no provider named {args.name!r} (known: {known})")
        was_open = await health.reset(args.name)
        closed = " (it was closed)" if not was_open else ""
        out.print(f"{terminal_safe(args.name)}: circuit closed{closed}")
        return 0
    rows = await provider_status(settings, health, RateLimiter(redis, keys, settings))
    if getattr(args, "json", False):
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not rows:
        out.print(
            "no provider configured: the simulated provider answers (set OPENAI_API_KEY or "
            "ANTHROPIC_API_KEY, or [providers.*] in batchwise.toml; docs/providers.md)",
            markup=False,
            highlight=False,
        )
        return 0
    table = Table(title=f"providers (window {settings.rate_window_s:g} s)")
    for column in ("provider", "circuit", "failures", "limits", "use this window"):
        table.add_column(column)
    for row in rows:
        circuit = row["state"]
        if row["state"] == "open":
            circuit = f"open {row['open_for_s']}s: {row['reason']}"
        limits = ", ".join(f"{k} {v}" for k, v in row["limits"].items()) or "-"
        use = "; ".join(
            f"{scope}: {u['requests']} req, {u['tokens']} tok"
            + (f", blocked {u['blocked_for_s']}s" if u["blocked_for_s"] else "")
            for scope, u in row["use"].items()
        )
        cells = (row["name"], circuit, str(row["failures"]), limits, use)
        table.add_row(*(terminal_safe(cell) for cell in cells))
    out.print(table)
    return 0
