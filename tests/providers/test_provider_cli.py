"""`batchwise providers`: what every worker shares about providers, read from Redis."""

from __future__ import annotations

import argparse

import orjson
import pytest
from redis.asyncio import Redis

from pipeline.cli.main import parser
from pipeline.cli.providers import cmd_providers
from pipeline.config.records import ProviderConfig
from pipeline.errors import ConfigError
from pipeline.keys import Keys
from pipeline.providers.health import ProviderHealth
from pipeline.providers.ratelimit import RateLimiter
from pipeline.testing import make_settings


async def test_status_shows_open_circuits_and_window_use(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    providers = (
        ProviderConfig(name="claude", kind="anthropic", models=("claude-*",), model_rpm={"c1": 5}),
        ProviderConfig(name="gpt", models=("gpt-*",), rpm=100, tpm=10_000),
    )
    settings = make_settings(redis_url, providers=providers)
    redis = Redis.from_url(redis_url)
    keys = Keys(settings.key_prefix)
    try:
        await ProviderHealth(redis, keys, settings).failed(
            "claude", "claude HTTP 401: bad key", account=True
        )
        limiter = RateLimiter(redis, keys, settings)
        await limiter.acquire(providers[1], "gpt-4o", tokens=300)
        await limiter.acquire(providers[1], "gpt-4o", tokens=200)
        await limiter.acquire(providers[0], "c1")
    finally:
        await redis.aclose()

    args = parser().parse_args(["providers", "status", "--json"])
    assert await cmd_providers(args, settings) == 0
    rows = {row["name"]: row for row in orjson.loads(capsys.readouterr().out)}
    claude, gpt = rows["claude"], rows["gpt"]
    assert (claude["state"], claude["account"], claude["reason"]) == (
        "open",
        True,
        "claude HTTP 401: bad key",
    )
    assert claude["use"]["claude/c1"]["requests"] == 1
    assert gpt["state"] == "closed"
    assert (gpt["use"]["gpt"]["requests"], gpt["use"]["gpt"]["tokens"]) == (2, 500)
    assert gpt["limits"] == {"rpm": 100, "tpm": 10_000}

    reset = parser().parse_args(["providers", "reset", "claude"])
    assert await cmd_providers(reset, settings) == 0
    assert (
        await cmd_providers(parser().parse_args(["providers", "status", "--json"]), settings) == 0
    )
    rows = {row["name"]: row for row in orjson.loads(capsys.readouterr().out.split("\n", 1)[1])}
    assert rows["claude"]["state"] == "closed"


async def test_reset_of_an_unknown_provider_names_the_known_ones(redis_url: str) -> None:
    settings = make_settings(redis_url, providers=(ProviderConfig(name="gpt"),))
    with pytest.raises(ConfigError, match="known: gpt"):
        await cmd_providers(argparse.Namespace(providers_command="reset", name="x"), settings)


async def test_table_output_without_a_subcommand(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(redis_url, providers=(ProviderConfig(name="gpt", rpm=7),))
    assert await cmd_providers(parser().parse_args(["providers"]), settings) == 0
    text = capsys.readouterr().out
    assert "gpt" in text and "closed" in text and "rpm 7" in text
