"""A job file through real workers, a real Redis and the fake provider over HTTP."""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.testing import FakeProvider, expected_output, make_settings
from workers.testing import pipeline_client, running_worker


def write_jobs(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


async def test_job_file_packs_and_answers_every_task(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake)
    lines = [
        {"id": f"q{i}", "task_type": "faq", "system": "Be brief.", "prompt": f"question {i}"}
        for i in range(25)
    ]
    path = write_jobs(tmp_path / "jobs.jsonl", lines)
    async with pipeline_client(settings) as client, running_worker(settings):
        submission = await client.submit_file(path)
        await client.wait(submission.run_id, timeout_s=20)
        results = [r async for r in client.results(submission.run_id)]
    assert [r.id for r in results] == [f"q{i}" for i in range(25)]
    assert all(r.status == "ok" for r in results)
    assert all(r.output == expected_output(f"question {i}") for i, r in enumerate(results))
    stats = fake.stats()
    assert stats["requests"] == 3  # 25 faq tasks at 10 per batch
    assert {r.batch_size for r in results} == {10, 5}
