"""The nightly inbox as a place other users can write to: no symlink is followed, a file still
being written is not claimed, names dropped twice never share a results file, counts are right."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.nightly.inbox import Nightly
from pipeline.testing import FakeProvider
from tests.nightly.test_nightly import nightly_settings, read_results, until, write_jobs
from workers.testing import pipeline_client, running_worker


async def tick(settings: Settings) -> dict[str, int]:
    async with pipeline_client(settings) as client:
        return await Nightly(client).tick()


def write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


async def test_a_symlinked_inbox_file_is_never_read(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    secret = write_jobs(tmp_path / "elsewhere" / "secret.jsonl", 3)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "link.jsonl").symlink_to(secret)
    counts = await tick(settings)
    assert counts == {"claimed": 1, "finished": 0, "failed": 1}
    moved = tmp_path / "inbox" / "failed" / "link.jsonl"
    assert moved.is_symlink()  # the link itself was moved, not what it points to
    reason = (tmp_path / "inbox" / "failed" / "link.jsonl.reason.txt").read_text()
    assert "not a regular file (symlink)" in reason
    assert secret.read_bytes().count(b"\n") == 3
    assert fake.batch_api.stats()["created"] == 0


@pytest.mark.parametrize("place", ["inbox/done", "inbox/failed", "outbox"])
async def test_symlinked_output_directories_are_refused(
    tmp_path: Path, redis_url: str, fake: FakeProvider, place: str
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    write_jobs(tmp_path / "inbox" / "jobs.jsonl", 2)
    (tmp_path / place).symlink_to(victim, target_is_directory=True)
    with pytest.raises(ConfigError, match="is a symlink or not a directory"):
        await tick(settings)
    assert (tmp_path / "inbox" / "jobs.jsonl").is_file()  # nothing was claimed
    assert list(victim.iterdir()) == []


async def test_planted_part_files_are_not_written_through(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for planted in (
        "outbox/jobs.results.jsonl.part",
        "outbox/jobs.cost.json.part",
        "inbox/failed/empty.jsonl.reason.txt.part",
    ):
        (tmp_path / planted).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / planted).symlink_to(victim)
    (tmp_path / "inbox" / "empty.jsonl").write_bytes(b"")
    write_jobs(tmp_path / "inbox" / "jobs.jsonl", 4)
    async with running_worker(settings):
        await until((tmp_path / "inbox" / "done" / "jobs.jsonl").exists, 20, "done/")
    assert victim.read_text() == "precious\n"
    assert len(read_results(tmp_path / "outbox" / "jobs.results.jsonl")) == 4
    reason = tmp_path / "inbox" / "failed" / "empty.jsonl.reason.txt"
    assert reason.read_text().strip() == "the file holds no task"


async def test_a_name_dropped_twice_and_passes_at_once_keep_results_apart(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    inbox = tmp_path / "inbox"
    for tenant in ("acme", "globex"):
        lines = [
            {"id": f"{tenant}-{i}", "tenant": tenant, "task_type": "faq", "prompt": f"{tenant} {i}"}
            for i in range(6)
        ]
        write_lines(inbox / "jobs.jsonl", lines)
        assert (await tick(settings))["claimed"] == 1  # the second drop comes after the claim
    worker_settings = settings.model_copy(update={"nightly_inbox": None})
    async with running_worker(worker_settings), pipeline_client(settings) as a:
        async with pipeline_client(settings) as b:

            async def runs_done() -> bool:
                for path in (inbox / ".processing").iterdir():
                    tag = path.name.partition(".")[0]
                    run_id = await a.pipeline.redis.hget(
                        a.pipeline.keys.nightly_file(tag), "run_id"
                    )
                    done, total, sealed = await a.pipeline.runs.progress(run_id.decode())
                    if not (sealed and done >= total):
                        return False
                return True

            deadline = time.monotonic() + 30
            while not await runs_done():
                assert time.monotonic() < deadline, "the two runs did not finish"
                await asyncio.sleep(0.2)
            passes = await asyncio.gather(Nightly(a).tick(), Nightly(b).tick())
    assert sum(p["finished"] for p in passes) == 2
    outputs = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert len(outputs) == 4 and "jobs.results.jsonl" in outputs, outputs
    tenants = []
    for name in outputs:
        if name.endswith(".results.jsonl"):
            results = read_results(tmp_path / "outbox" / name)
            owners = {r["id"].split("-")[0] for r in results}
            assert len(results) == 6 and len(owners) == 1, (name, results)
            tenants.append(owners.pop())
    assert sorted(tenants) == ["acme", "globex"]
    assert len(list((inbox / "done").iterdir())) == 2


async def test_a_file_still_being_written_is_not_claimed(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path, nightly_settle_s=1.0)
    jobs = tmp_path / "inbox" / "jobs.jsonl"
    jobs.parent.mkdir(parents=True)
    with jobs.open("wb") as fh:
        for i in range(3):
            fh.write(orjson.dumps({"id": f"q{i}", "prompt": f"p {i}"}) + b"\n")
            fh.flush()
            assert (await tick(settings))["claimed"] == 0
            await asyncio.sleep(0.4)
    assert jobs.is_file()
    await asyncio.sleep(1.1)  # unchanged for the settle time now
    assert (await tick(settings))["claimed"] == 1


async def test_upper_case_suffix_is_claimed_and_failures_are_counted(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = nightly_settings(redis_url, fake, tmp_path)
    write_jobs(tmp_path / "inbox" / "UPPER.JSONL", 2)
    (tmp_path / "inbox" / "empty.jsonl").write_bytes(b"")
    (tmp_path / "inbox" / ".hidden.jsonl").write_bytes(b"")  # a producer still writing it
    counts = await tick(settings)
    assert counts == {"claimed": 2, "finished": 0, "failed": 1}
    assert (tmp_path / "inbox" / ".hidden.jsonl").exists()
    assert [p.name.partition(".")[2] for p in (tmp_path / "inbox" / ".processing").iterdir()] == [
        "UPPER.JSONL"
    ]


async def test_nightly_once_prints_failed_files(
    tmp_path: Path, redis_url: str, fake: FakeProvider, monkeypatch: Any, capsys: Any
) -> None:
    from pipeline.cli.nightly import cmd_nightly

    settings = nightly_settings(redis_url, fake, tmp_path)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "empty.jsonl").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    args: Any = type("Args", (), {"inbox": None, "outbox": None})()
    assert await cmd_nightly(args, settings) == 0
    assert "claimed 1, finished 0, failed 1" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "inbox" / "failed" / "empty.jsonl")
