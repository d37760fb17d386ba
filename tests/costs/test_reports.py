"""Reports and anomaly alerts over a ledger written with known times, users and costs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from pipeline.cli.main import main
from pipeline.cli.report import render_text
from pipeline.costs.ledger import Ledger
from pipeline.costs.reports import build_report, top_share
from pipeline.costs.spikes import spikes
from pipeline.keys import Keys
from pipeline.models import CallRecord, CostShare, Saving, Usage
from pipeline.testing import make_settings

DAY0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
NANO = 1_000_000_000


def call(
    n: int,
    at: float,
    cost_nusd: int,
    *,
    tenant: str = "acme",
    model: str = "gpt-4o-mini",
    shares: list[tuple[str, str, int]] | None = None,
) -> CallRecord:
    """A call of `cost_nusd`, split over (user, endpoint, nusd) shares (default: one share)."""
    parts = shares or [("alice", "/chat", cost_nusd)]
    assert sum(p[2] for p in parts) == cost_nusd
    return CallRecord(
        id=f"c{n}",
        at=at,
        batch_id=f"c{n}",
        provider="openai",
        model=model,
        status="ok",
        usage=Usage(input_tokens=1000, output_tokens=100),
        cost_usd=Decimal(cost_nusd) / NANO,
        latency_ms=500,
        batch_size=len(parts),
        tenant=tenant,
        shares=tuple(
            CostShare(user_id=u, endpoint=e, items=1, cost_nusd=c, input_tokens=1, output_tokens=1)
            for u, e, c in parts
        ),
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_report_figures_by_hand(redis: Redis) -> None:
    k = Keys(make_settings("redis://x").key_prefix)
    ledger = Ledger(redis, k)
    records = [
        # day 1: 10:00 alice $1 on /chat; 14:00 bob $3 on /search (gpt-4o)
        call(1, DAY0 + 10 * 3600, 1 * NANO),
        call(2, DAY0 + 14 * 3600, 3 * NANO, model="gpt-4o", shares=[("bob", "/search", 3 * NANO)]),
        # day 2: 14:30 one call shared by carol and dave, tenant beta; 14:40 eve
        call(
            3,
            DAY0 + 86400 + 14.5 * 3600,
            2 * NANO,
            tenant="beta",
            shares=[("carol", "/chat", NANO), ("dave", "/chat", NANO)],
        ),
        call(4, DAY0 + 86400 + 14.7 * 3600, NANO // 2, shares=[("eve", "/chat", NANO // 2)]),
    ]
    assert await ledger.record_many(records) == 4
    cache = Saving(id="h1", at=DAY0 + 3600, lever="cache", saved_nusd=NANO // 4, tasks=5)
    packing = Saving(id="p1", at=DAY0 + 3600, lever="packing", saved_nusd=NANO, tasks=5)
    assert await ledger.record_saving(cache) and await ledger.record_saving(packing)

    report = await build_report(redis, k, revenue_usd=Decimal(13), anomalies=False)
    assert report.cost_usd == Decimal("6.5")
    assert [(d.day, d.cost_usd) for d in report.daily] == [
        (date(2026, 3, 1), Decimal(4)),
        (date(2026, 3, 2), Decimal("2.5")),
    ]
    assert report.daily[0].by_model == {"gpt-4o": Decimal(3), "gpt-4o-mini": Decimal(1)}
    assert [(r.name, r.cost_usd) for r in report.by_user] == [
        ("bob", Decimal(3)),
        ("alice", Decimal(1)),
        ("carol", Decimal(1)),
        ("dave", Decimal(1)),
        ("eve", Decimal("0.5")),
    ]
    assert [(r.name, r.cost_usd) for r in report.by_tenant] == [
        ("acme", Decimal("4.5")),
        ("beta", Decimal(2)),
    ]
    assert [(r.name, r.cost_usd) for r in report.by_endpoint] == [
        ("/chat", Decimal("3.5")),
        ("/search", Decimal(3)),
    ]
    assert [(r.name, r.calls) for r in report.by_model] == [("gpt-4o-mini", 3), ("gpt-4o", 1)]
    assert report.top_drivers[0].name == "gpt-4o-mini @ /chat"
    assert report.top_drivers[0].cost_usd == Decimal("3.5")
    # 5 users: the top 20% is one user, bob: $3 of $6.50
    assert report.top20_users_share == pytest.approx(3 / 6.5)
    # 14:00 UTC holds $3 + $2 + $0.50; the busiest single hour is day 1 14:00 ($3)
    assert report.peak_hour_of_day == 14
    assert report.peak_hour_of_day_cost_usd == Decimal("5.5")
    assert report.peak_hour == "2026-03-01 14:00 UTC"
    assert report.cost_revenue_ratio == pytest.approx(0.5)
    assert report.gross_margin == pytest.approx(0.5)
    saved = {s.lever: (s.saved_usd, s.tasks) for s in report.savings}
    assert saved["cache"] == (Decimal("0.25"), 5)
    assert saved["packing"] == (Decimal(1), 5)
    assert report.naive_cost_usd == Decimal("7.75")
    assert report.cache_hit_rate == 0.5
    assert report.tasks == 10 and report.unit_cost_usd == Decimal("0.65")
    # a period: the second day only
    second = await build_report(redis, k, since=date(2026, 3, 2), anomalies=False)
    assert second.cost_usd == Decimal("2.5") and len(second.daily) == 1
    text = render_text(report)
    assert "gross margin 50.0%" in text and "bob" in text


def test_top_share_takes_at_least_one() -> None:
    assert top_share([5, 3, 1, 1]) == 0.5
    assert top_share([]) == 0.0
    assert top_share([7]) == 1.0
    assert top_share(list(range(1, 11))) == pytest.approx((10 + 9) / 55)


def test_spike_needs_k_sigma_above_the_baseline_without_itself() -> None:
    ten = 10 * NANO  # $10 a period: large enough that the floors below are 5% of normal
    flat = [ten + (i % 3) * NANO // 10 for i in range(20)]
    assert spikes(flat, window=14, sigma_warning=3, sigma_critical=5) == []
    found = spikes([*flat, 2 * ten], window=14, sigma_warning=3, sigma_critical=5)
    assert [(s.index, s.level) for s in found] == [(20, "critical")]
    # a warning between k=3 and k=5: the baseline's sigma is floored at 5% of its median
    warn = spikes([*([ten] * 10), ten * 12 // 10], window=14, sigma_warning=3, sigma_critical=5)
    assert [(s.level, round(s.z, 1)) for s in warn] == [("warning", 4.0)]
    # a cent-sized series varies like a count of calls: +20% is no alert there
    cents = [NANO // 100] * 10
    assert spikes([*cents, NANO * 12 // 1000], window=14, sigma_warning=3, sigma_critical=5) == []
    # no baseline yet, no verdict; a drop is never a spike
    assert spikes([1, 10**9], window=14, sigma_warning=3, sigma_critical=5) == []
    assert spikes([*flat, 0], window=14, sigma_warning=3, sigma_critical=5) == []


def spiky_records() -> list[CallRecord]:
    """Two tenants over 15 days; on the last day, a $9 hour of mallory's on acme."""
    records = []
    n = 0
    # 14 quiet days: acme spends ~$1 a day at noon, alice on /chat with gpt-4o-mini
    for day in range(14):
        n += 1
        records.append(call(n, DAY0 + day * 86400 + 12 * 3600, NANO + day % 3 * NANO // 50))
    # day 15: at 12:00 as usual, then at 13:00 mallory runs $9 of gpt-4o on /export
    n += 1
    records.append(call(n, DAY0 + 14 * 86400 + 12 * 3600, NANO))
    n += 1
    spike = [("mallory", "/export", 9 * NANO)]
    records.append(call(n, DAY0 + 14 * 86400 + 13 * 3600, 9 * NANO, model="gpt-4o", shares=spike))
    # another tenant stays flat
    for day in range(15):
        n += 1
        records.append(call(n, DAY0 + day * 86400 + 9 * 3600, NANO, tenant="quiet"))
    return records


async def test_daily_and_hourly_spikes_say_how_far_and_what_grew(redis: Redis) -> None:
    k = Keys(make_settings("redis://x").key_prefix)
    await Ledger(redis, k).record_many(spiky_records())

    report = await build_report(redis, k, sigma_warning=3, sigma_critical=5)
    found = {(a.granularity, a.scope, a.name): a for a in report.anomalies}
    daily = found[("day", "tenant", "acme")]
    assert daily.level == "critical" and daily.period == "2026-03-15"
    assert daily.cost_usd == Decimal(10)
    assert Decimal("1.0") < daily.baseline_usd < Decimal("1.05")
    assert daily.ratio is not None and daily.ratio > 9
    grew = {(g.dimension, g.name): g.delta_usd for g in daily.grew}
    assert grew[("model", "gpt-4o")] == Decimal(9)
    assert grew[("endpoint", "/export")] == Decimal(9)
    assert grew[("user", "mallory")] == Decimal(9)
    assert "mallory" in daily.describe() and "sigma above" in daily.describe()
    assert found[("day", "endpoint", "/export")].level == "critical"
    assert ("day", "tenant", "quiet") not in found
    hourly = found[("hour", "tenant", "acme")]
    assert hourly.period == "2026-03-15 13:00 UTC"
    assert {g.name for g in hourly.grew} >= {"mallory", "gpt-4o", "/export"}
    # anomalies appear in the JSON of `batchwise report --json`
    assert report.to_dict()["anomalies"][0]["level"] == "critical"


async def test_cli_report_json_and_ledger_export(
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(redis_url)
    k = Keys(settings.key_prefix)
    redis = Redis.from_url(redis_url)
    try:
        await Ledger(redis, k).record_many([call(1, DAY0, NANO), call(2, DAY0 + 60, NANO // 2)])
    finally:
        await redis.aclose()
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BATCHWISE_KEY_PREFIX", settings.key_prefix)
    assert await _run_cli(["report", "--json", "--revenue", "3"]) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["cost_usd"] == "1.5" and data["gross_margin"] == 0.5
    out = tmp_path / "ledger.csv"
    assert await _run_cli(["ledger", "export", "--format", "csv", "--out", str(out)]) == 0
    assert out.read_text().count("\n") == 3  # header and two calls
    later = tmp_path / "later.jsonl"
    argv = ["ledger", "export", "--out", str(later), "--since", "2026-03-02"]
    assert await _run_cli(argv) == 0
    assert later.read_text() == ""  # both calls were on 2026-03-01
    page = tmp_path / "report.html"
    assert await _run_cli(["report", "--html", str(page)]) == 0
    assert "gpt-4o-mini" in page.read_text() and "dashboard written" in capsys.readouterr().out


async def _run_cli(argv: list[str]) -> int:
    # the CLI runs its own event loop: give it a thread of its own
    return await asyncio.to_thread(main, argv)


async def test_bulk_import_writes_what_the_record_script_writes(redis: Redis) -> None:
    records = [
        call(1, DAY0, NANO),
        call(2, DAY0 + 3600, 2 * NANO, shares=[("a", "/x", NANO), ("b", "/y", NANO)]),
        call(3, DAY0 + 86400, 3, tenant="beta", model="gpt-4o"),
    ]
    one, bulk = (
        Keys(make_settings("redis://x").key_prefix),
        Keys(make_settings("redis://x").key_prefix),
    )
    assert await Ledger(redis, one).record_many(records) == 3
    assert await Ledger(redis, bulk).import_records(records) == 3
    assert await Ledger(redis, bulk).import_records(records) == 0  # already there

    async def rollups(k: Keys) -> dict[str, dict[bytes, bytes]]:
        names = await redis.keys(f"{k.prefix}:ledger:[hd]:*") + await redis.keys(
            f"{k.prefix}:ledger:[hd]u:*"
        )
        return {n.decode()[len(k.prefix) :]: await redis.hgetall(n) for n in names}

    assert await rollups(one) == await rollups(bulk)
    assert len(await rollups(one)) >= 4
    assert await redis.zrange(one.ledger_hours(), 0, -1) == await redis.zrange(
        bulk.ledger_hours(), 0, -1
    )


async def test_simulated_calls_are_labelled_in_the_report(redis: Redis) -> None:
    k = Keys(make_settings("redis://x").key_prefix)
    simulated = call(1, DAY0, NANO).model_copy(update={"simulated": True})
    await Ledger(redis, k).record_many([simulated, call(2, DAY0, NANO)])
    report = await build_report(redis, k, anomalies=False)
    assert report.simulated_calls == 1
    assert "SIMULATED provider: 1 of 2 calls" in render_text(report)
