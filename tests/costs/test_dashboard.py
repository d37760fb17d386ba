"""The HTML dashboard, opened in headless Chromium: its script must draw every chart offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.costs.anomalies import Anomaly, Growth
from pipeline.costs.dashboard import render_html, write_html
from pipeline.costs.period import Rollups
from pipeline.costs.reports import Report, summarise
from pipeline.costs.rollup import call_counts, field_name, hour_of, merge
from pipeline.keys import Keys
from pipeline.models import CallRecord, CostShare, Saving, Usage

NANO = 1_000_000_000
DAY0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
EVIL_USER = "</script><img src=x onerror=alert(1)>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _report() -> Report:
    """A report over three days, two models, four users (one with a hostile name)."""
    keys = Keys("dash")
    rollups = Rollups()
    users = ["alice", "bob", "carol", EVIL_USER]
    for n in range(12):
        at = DAY0 + (n % 3) * 86400 + (9 + n) * 600
        cost = (n + 1) * NANO // 10
        record = CallRecord(
            id=f"c{n}",
            at=at,
            batch_id=f"c{n}",
            provider="openai",
            model="gpt-4o" if n % 2 else "gpt-4o-mini",
            status="ok",
            usage=Usage(input_tokens=100, output_tokens=10),
            cost_usd=Decimal(cost) / NANO,
            batch_size=1,
            tenant="acme",
            shares=(CostShare(user_id=users[n % 4], endpoint="/chat", items=1, cost_nusd=cost),),
        )
        counts, hour, _ = call_counts(keys, record)
        merge(rollups.days.setdefault(hour[:8], {}), counts[keys.ledger_day(hour[:8])].items())
        merge(rollups.hours.setdefault(hour, {}), counts[keys.ledger_hour(hour)].items())
    for lever, saved, tasks in (("cache", NANO // 2, 6), ("packing", NANO, 12)):
        saving = Saving(id=lever, at=DAY0, lever=lever, saved_nusd=saved, tasks=tasks)
        fields = {
            field_name("saved", lever): saving.saved_nusd,
            field_name("tasks", lever): saving.tasks,
        }
        merge(rollups.days[hour_of(DAY0)[:8]], fields.items())
    report = summarise(rollups)
    report.anomalies = [
        Anomaly(
            granularity="day",
            period="2026-03-03",
            scope="tenant",
            name="acme",
            level="critical",
            cost_usd=Decimal(5),
            baseline_usd=Decimal(1),
            sigma_usd=Decimal("0.1"),
            z=40.0,
            grew=(Growth("user", EVIL_USER, Decimal(4), Decimal(0)),),
        )
    ]
    return report


def test_page_is_self_contained_and_escapes_ledger_names() -> None:
    page = render_html(_report())
    assert EVIL_USER not in page  # raw, it would close the data script
    assert not re.search(r"<[^>]*\b(src|href)\s*=", page)  # no tag fetches anything
    assert "default-src 'none'" in page
    assert 'data-charts-drawn="0"' in page  # drawn by the script, not by the server


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium"
)
def test_dashboard_opens_offline_in_headless_chromium_with_charts_drawn(tmp_path: Path) -> None:
    report = _report()
    page = write_html(report, tmp_path / "report.html")
    assert CHROMIUM is not None
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout
    assert 'data-charts-drawn="5"' in dom, dom[:2000]
    marks = dict(re.findall(r'id="(chart-[a-z]+)"[^>]*data-marks="(\d+)"', dom))
    # one bar per (day, model) with spend: 3 days x 2 models
    assert marks["chart-daily"] == "6"
    assert marks["chart-savings"] == "2"  # cache and packing; the other levers saved 0
    assert int(marks["chart-cache"]) >= 2  # the rate arc, the per-day line and its points
    assert marks["chart-users"] == "4"
    assert marks["chart-anomalies"] == "1"
    assert len(re.findall(r'<rect class="mark"', dom)) >= 6 + 2 + 4 + 1
    assert "<img" not in dom  # the hostile user name is text, not markup
    assert "critical" in dom and "acme" in dom
    assert "33.3%" in dom  # cache hit rate: 6 hits of 18 tasks
