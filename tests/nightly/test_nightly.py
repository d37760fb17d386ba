"""Nightly runs: inbox files through the batch-API route, processed exactly once, surviving a
worker killed with SIGKILL while a provider batch is open."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from pipeline.config.settings import Settings
from pipeline.models import CallRecord
from pipeline.nightly.inbox import Nightly
from pipeline.testing import FAKE_KEY, FakeProvider, expected_output, make_settings, worker_process
from workers.testing import pipeline_client, running_worker

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "batch_api_poll_s": 1,
    "batch_api_linger_s": 0.2,
    "nightly_poll_s": 1,
    "nightly_settle_s": 0,
}


def write_jobs(path: Path, n: int) -> Path:
    lines = [
        {"id": f"q{i}", "task_type": "faq", "system": "Be brief.", "prompt": f"night {i}"}
        for i in range(n)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    tmp.rename(path)  # appear in the inbox whole, as a careful producer does
    return path


def nightly_settings(redis_url: str, fake: FakeProvider, tmp_path: Path, **extra: Any) -> Settings:
    return make_settings(
        redis_url,
        fake,
        nightly_inbox=tmp_path / "inbox",
        nightly_outbox=tmp_path / "outbox",
        **{**FAST, **extra},
    )


async def until(check: Callable[[], bool], timeout_s: float, what: str | Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what if isinstance(what, str) else what()}"
            )
        await asyncio.sleep(0.1)


def read_results(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def ledger_of(settings: Settings) -> list[CallRecord]:
    async with pipeline_client(settings) as client:
        return [r async for r in client.pipeline.ledger.records()]


def check_outbox(tmp_path: Path, n: int) -> dict[str, Any]:
    """Every task answered exactly once, in order, with its own output; returns the cost report."""
    results = read_results(tmp_path / "outbox" / "jobs.results.jsonl")
    assert [r["id"] for r in results] == [f"q{i}" for i in range(n)]
    assert all(r["status"] == "ok" for r in results)
    assert all(r["output"] == expected_output(f"night {i}") for i, r in enumerate(results))
    report: dict[str, Any] = orjson.loads((tmp_path / "outbox" / "jobs.cost.json").read_bytes())
    assert report["ok"] == n
    total = sum((Decimal(str(r["cost_usd"])) for r in results), Decimal(0))
    assert abs(Decimal(report["cost_usd"]) - total) < Decimal("1e-9")
    return report


def check_ledger(records: list[CallRecord], settings: Settings, report: dict[str, Any]) -> None:
    """Batch prices, no call recorded twice, and the ledger adds up to the report."""
    from pipeline.costs.prices import PriceTable

    prices = PriceTable(settings.prices)
    assert records and all(r.batch_api for r in records)
    assert len({r.id for r in records}) == len(records)
    for record in records:
        assert record.cost_usd == prices.price(record.model, record.usage, batch_api=True)
    ledger_total = sum((r.cost_usd or Decimal(0) for r in records), Decimal(0))
    assert abs(ledger_total - Decimal(report["cost_usd"])) < Decimal("1e-9")
    assert Decimal(report["same_calls_at_sync_prices_usd"]) > Decimal(report["cost_usd"])


async def test_inbox_file_through_the_nightly_route(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    write_jobs(tmp_path / "inbox" / "jobs.jsonl", 25)
    async with running_worker(settings):
        await until((tmp_path / "inbox" / "done" / "jobs.jsonl").exists, 20, "done/")
    report = check_outbox(tmp_path, 25)
    assert not (tmp_path / "inbox" / "jobs.jsonl").exists()
    assert not list((tmp_path / "inbox" / ".processing").iterdir())
    assert fake.batch_api.stats()["created"] == 1
    check_ledger(await ledger_of(settings), settings, report)


async def test_unreadable_file_goes_to_failed_with_a_reason(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "empty.jsonl").write_bytes(b"")
    async with pipeline_client(settings) as client:
        counts = await Nightly(client).tick()
    assert counts == {"claimed": 1, "finished": 0, "failed": 1}
    reason = tmp_path / "inbox" / "failed" / "empty.jsonl.reason.txt"
    assert reason.read_text().strip() == "the file holds no task"


async def test_many_passes_at_once_claim_a_file_once(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    write_jobs(tmp_path / "inbox" / "jobs.jsonl", 12)
    async with pipeline_client(settings) as a, pipeline_client(settings) as b:
        passes = [Nightly(c).tick() for c in (a, b, a, b)]
        counts = await asyncio.gather(*passes)
    assert sum(c["claimed"] for c in counts) == 1
    assert len(list((tmp_path / "inbox" / ".processing").iterdir())) == 1


async def test_two_workers_one_inbox_file_processed_once(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    write_jobs(tmp_path / "inbox" / "jobs.jsonl", 25)
    async with running_worker(settings), running_worker(settings):
        await until((tmp_path / "inbox" / "done" / "jobs.jsonl").exists, 20, "done/")
        await asyncio.sleep(1.5)  # another pass of both workers finds nothing more to do
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [
        "jobs.cost.json",
        "jobs.results.jsonl",
    ]
    assert [p.name for p in (tmp_path / "inbox" / "done").iterdir()] == ["jobs.jsonl"]
    report = check_outbox(tmp_path, 25)
    stats = fake.batch_api.stats()
    assert stats["created"] == 1 and stats["requests"] == 3  # 25 faq tasks, 10 per packed batch
    check_ledger(await ledger_of(settings), settings, report)


# ---- a worker process killed while its provider batch is open ----------------------------------


def write_config(path: Path, settings: Settings, fake: FakeProvider) -> Path:
    lines = [
        f'key_prefix = "{settings.key_prefix}"',
        f'queue_name = "{settings.queue_name}"',
        f'nightly_inbox = "{settings.nightly_inbox}"',
        f'nightly_outbox = "{settings.nightly_outbox}"',
        "nightly_poll_s = 1",
        "nightly_settle_s = 0",
        "batch_api_poll_s = 1",
        "batch_api_linger_s = 0.2",
        "linger_ms = 20",
        "job_timeout_s = 20",
        # a worker killed mid-poll holds its lease until it runs out: keep that short here
        "batch_api_lease_s = 3",
        "[providers.fake-openai]",
        'kind = "openai"',
        f'base_url = "{fake.openai_base_url}"',
        f'api_key = "{FAKE_KEY}"',
        'models = ["gpt-*"]',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_worker(config: Path, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    return worker_process(log, {"REDIS_URL": redis_url, "BATCHWISE_CONFIG": str(config)})


async def test_worker_killed_while_a_provider_batch_is_open(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    config = write_config(tmp_path / "batchwise.toml", settings, fake)
    log = tmp_path / "workers.log"
    fake.batch_api.configure(hold=True)  # the provider batch stays open until we say
    write_jobs(tmp_path / "inbox" / "jobs.jsonl", 25)

    first = start_worker(config, redis_url, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        await until(lambda: fake.batch_api.stats()["retrieved"] >= 2, 30, "an open batch polled")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert fake.batch_api.stats()["states"] == {"open": 1}
        fake.batch_api.configure(hold=False)

        second = start_worker(config, redis_url, log)
        done = tmp_path / "inbox" / "done" / "jobs.jsonl"
        await until(
            done.exists, 30, lambda: f"done/ after a restart; log:\n{log.read_text()[-3000:]}"
        )
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    report = check_outbox(tmp_path, 25)
    stats = fake.batch_api.stats()
    assert stats["created"] == 1  # the open batch was adopted, not submitted again
    assert stats["requests"] == 3
    assert fake.stats()["requests"] == 3  # nothing was answered synchronously on the side
    records = await ledger_of(settings)
    assert len(records) == 3
    check_ledger(records, settings, report)


def test_nightly_once_claims_and_submits(
    tmp_path: Path, redis_url: str, fake: FakeProvider, monkeypatch: Any, capsys: Any
) -> None:
    from pipeline.cli.main import main

    settings = nightly_settings(redis_url, fake, tmp_path)
    config = write_config(tmp_path / "batchwise.toml", settings, fake)
    write_jobs(tmp_path / "inbox" / "jobs.jsonl", 5)
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["--config", str(config), "nightly", "--once"]) == 0
    assert "claimed 1, finished 0, failed 0" in capsys.readouterr().out
    claimed = list((tmp_path / "inbox" / ".processing").iterdir())
    assert [p.name.partition(".")[2] for p in claimed] == ["jobs.jsonl"]
    assert main(["--config", str(config), "nightly", "--once"]) == 0
    assert "claimed 0, finished 0, failed 0" in capsys.readouterr().out


async def test_interrupted_submission_is_retried_then_failed(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    processing = tmp_path / "inbox" / ".processing"
    processing.mkdir(parents=True)
    write_jobs(processing / "20261128-000000-abcdef.jobs.jsonl", 3)  # claimed by a dead worker
    async with pipeline_client(settings) as client:
        k = client.pipeline.keys
        record = k.nightly_file("20261128-000000-abcdef")
        await client.pipeline.redis.hset(record, mapping={"state": "submitting", "attempts": 1})
        await Nightly(client).tick()
        state = await client.pipeline.redis.hget(record, "state")
        assert state == b"submitted"  # the second attempt went through
        await client.pipeline.redis.hset(record, "state", "submitting")  # and was cut short too
        counts = await Nightly(client).tick()
    assert counts["failed"] == 1
    reason = (tmp_path / "inbox" / "failed" / "jobs.jsonl.reason.txt").read_text()
    assert "cut short 2 times" in reason
