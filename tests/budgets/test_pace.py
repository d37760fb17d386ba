"""Monthly budget pace, threshold alerts (once each, log and webhook), routing under budget
pressure, and the `batchwise budget` commands."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pipeline.budgets.pace import MonthlyBudget, assess
from pipeline.cli.main import main
from pipeline.config.loading import load_settings
from pipeline.core.wiring import connect_redis
from pipeline.errors import BreakerOpen, ConfigError
from pipeline.keys import Keys
from pipeline.models import Message, Task
from pipeline.testing import FakeProvider, make_settings
from workers.testing import pipeline_client

USD = 1_000_000_000
MID_NOVEMBER = datetime(2026, 11, 16, tzinfo=UTC).timestamp()  # 15 of 30 days gone


@pytest.mark.parametrize(
    ("spent_usd", "status"),
    [
        (150, "on_track"),
        (179, "on_track"),
        (190, "warning"),
        (240, "critical"),
        (60, "under_utilized"),
    ],
)
def test_pace_status(spent_usd: int, status: str) -> None:
    pace = assess(300 * USD, spent_usd * USD, MID_NOVEMBER)
    assert pace.expected_usd == Decimal(150)
    assert pace.projected_usd == Decimal(spent_usd * 2)
    assert pace.ratio == pytest.approx(spent_usd / 150)
    assert pace.status == status
    assert pace.actions


def test_spent_budget_before_month_end_is_critical_and_actions_say_what_to_do() -> None:
    pace = assess(100 * USD, 100 * USD, datetime(2026, 11, 28, tzinfo=UTC).timestamp())
    assert pace.ratio is not None and pace.ratio < 1.5
    assert pace.status == "critical"
    assert any("budget set limit global daily" in a for a in pace.actions)
    assert assess(None, 5 * USD, MID_NOVEMBER).status == "no_budget"


async def test_alerts_fire_once_per_threshold_across_workers(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    posted: list[dict[str, Any]] = []

    def hook(request: httpx.Request) -> httpx.Response:
        posted.append(orjson.loads(request.content))
        return httpx.Response(204)

    redis = connect_redis(redis_url)
    keys = Keys(make_settings(redis_url).key_prefix)

    def worker() -> MonthlyBudget:
        return MonthlyBudget(
            redis,
            keys,
            Decimal(100),
            webhook_url="http://hooks.test/budget",
            transport=httpx.MockTransport(hook),
        )

    one, two = worker(), worker()
    with caplog.at_level(logging.WARNING, "batchwise.budget"):
        assert await one.alert(49 * USD, MID_NOVEMBER) == []
        assert await one.alert(85 * USD, MID_NOVEMBER) == [50, 80]
        assert await two.alert(86 * USD, MID_NOVEMBER) == []  # another worker: already sent
        assert await two.alert(101 * USD, MID_NOVEMBER) == [100]
        assert await one.alert(120 * USD, MID_NOVEMBER) == []
    await redis.aclose()
    assert [p["threshold_pct"] for p in posted] == [50, 80, 100]
    assert posted[0]["month"] == "2026-11" and posted[0]["budget_usd"] == "100"
    alerts = [r.getMessage() for r in caplog.records if "budget alert" in r.getMessage()]
    assert len(alerts) == 3 and "80% of the 2026-11 budget" in alerts[1]


async def test_a_failing_webhook_never_stops_the_work(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis = connect_redis(redis_url)
    monthly = MonthlyBudget(
        redis,
        Keys(make_settings(redis_url).key_prefix),
        Decimal(10),
        webhook_url="http://hooks.test/budget?token=s3cret",
        transport=httpx.MockTransport(lambda r: httpx.Response(500)),
    )
    assert await monthly.alert(6 * USD, MID_NOVEMBER) == [50]
    await redis.aclose()
    assert "webhook failed" in caplog.text and "s3cret" not in caplog.text


def analysis_task(**extra: Any) -> Task:
    return Task(
        id="a", messages=(Message(role="user", content="p"),), task_type="analysis", **extra
    )


async def test_critical_budget_moves_routes_to_a_cheaper_tier_and_records_it(
    redis_url: str, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(redis_url, fake, budget_monthly_usd=Decimal(100))
    async with pipeline_client(settings) as client:
        p = client.pipeline
        budgets = p.budgets
        budgets.set_clock(lambda: MID_NOVEMBER)
        routed, named = (
            p.router.shape(analysis_task()),
            p.router.shape(analysis_task(requested_model="gpt-4o")),
        )
        assert isinstance(routed, Task) and isinstance(named, Task)
        assert routed.model == "gpt-4o"
        await budgets.reserve("b1", "acme", 40 * USD)
        await budgets.settle("b1", "acme", 40 * USD)  # 40 of an expected 50: on track
        admitted, _ = await p.admission.admit([routed])
        assert admitted[0].model == "gpt-4o"
        await budgets.reserve("b2", "acme", 40 * USD)
        await budgets.settle("b2", "acme", 40 * USD)  # 80 of 50: 1.6x pace, critical
        sent = [await p.redis.exists(p.keys.budget_alert("2026-11", pct)) for pct in (50, 80, 100)]
        assert sent == [1, 1, 0]  # settling drives the alerts
        with caplog.at_level(logging.INFO, "batchwise.budget"):
            for _ in range(2):
                admitted, _ = await p.admission.admit([routed, named])
                assert [t.model for t in admitted] == ["gpt-4.1-mini", "gpt-4o"]
        assert await p.admission.degraded_counts() == {
            "total": "2",
            "gpt-4o>gpt-4.1-mini": "2",
            "last_switch": f"1@{MID_NOVEMBER}",
        }
        switches = [r for r in caplog.records if "budget critical" in r.getMessage()]
        assert len(switches) == 1  # the switch is logged once, not per task


async def _check_overrides(redis_url: str, prefix: str) -> None:
    settings = make_settings(redis_url, key_prefix=prefix)
    async with pipeline_client(settings) as client:
        budgets = client.pipeline.budgets
        assert await client.pipeline.admission.plan_store.overrides() == {"user:bob": "pro"}
        await budgets.reserve("x", "acme", 8_000)  # of the 10,000 nano-dollars an hour
        await budgets.settle("x", "acme", 8_000)
        with pytest.raises(BreakerOpen, match="cost breaker global is open"):
            await budgets.reserve("y", "acme", 5_000)


def test_budget_commands(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = make_settings(redis_url).key_prefix
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BATCHWISE_KEY_PREFIX", prefix)
    monkeypatch.delenv("BATCHWISE_CONFIG", raising=False)
    assert main(["budget", "set", "monthly", "250"]) == 0
    assert main(["budget", "set", "limit", "global", "hourly", "0.00001"]) == 0
    assert main(["budget", "set", "limit", "tenant:acme", "daily", "3"]) == 0
    assert main(["budget", "set", "plan", "user:bob", "pro"]) == 0
    assert main(["budget", "set", "plan", "user:bob", "platinum"]) == 2  # unknown plan
    asyncio.run(_check_overrides(redis_url, prefix))
    capsys.readouterr()
    assert main(["budget", "status", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["pace"]["budget_usd"] == "250"
    scopes = {b["scope"]: b for b in report["breakers"]}
    assert scopes["global"]["hourly_limit_usd"] == "0.00001"
    assert scopes["tenant:acme"]["daily_limit_usd"] == "3"
    assert [b["scope"] for b in report["open_breakers"]] == ["global"]
    assert report["plans"] == {"default": None, "assignments": {"user:bob": "pro"}}
    assert main(["budget", "status"]) == 0
    assert "OPEN (hourly limit)" in capsys.readouterr().out
    assert main(["budget", "close-breaker", "global"]) == 0
    assert "closed" in capsys.readouterr().out
    assert main(["budget", "status", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["open_breakers"] == []


def test_budget_settings_from_env_and_toml(tmp_path: Path) -> None:
    config = tmp_path / "batchwise.toml"
    config.write_text(
        """
[batchwise]
plan_default = "team"
[batchwise.breaker_limits.global]
hourly_usd = 2.5
[batchwise.plans.team]
requests_per_min = 5
allowed_models = ["gpt-4o-mini"]
"""
    )
    env = {"BATCHWISE_BUDGET_MONTHLY_USD": "250.50", "BATCHWISE_BREAKER_POLICY": "reject"}
    settings = load_settings(env=env, config_file=config)
    assert settings.budget_monthly_usd == Decimal("250.50")
    assert settings.breaker_policy == "reject"
    assert settings.breaker_limits["global"].hourly_usd == Decimal("2.5")
    assert settings.plans["team"].requests_per_min == 5
    with pytest.raises(ConfigError, match="breaker_policy"):
        load_settings(env={"BATCHWISE_BREAKER_POLICY": "maybe"}, config_file=config)
    with pytest.raises(ConfigError, match="daily_usd"):
        load_settings(env={}, breaker_limits={"global": {"daily_usd": -1}})
