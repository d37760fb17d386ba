"""Input a careful user can send: ids, nesting, sizes, schemas, max_tokens, tenants, single-flight.

Each case is a line that used to break its run (a hang, a crash of the whole chunk, a worker
traceback, another tenant's result); here it is refused alone, with file:line and the field.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.core.intake import MAX_DEPTH, MAX_FIELD_BYTES, LineError, read_file
from pipeline.models import Task
from pipeline.providers import simulated
from pipeline.testing import FakeProvider, make_settings
from workers.testing import pipeline_client, running_worker


def write_jobs(tmp_path: Path, *lines: dict[str, object] | bytes) -> Path:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(
        b"".join((ln if isinstance(ln, bytes) else orjson.dumps(ln)) + b"\n" for ln in lines)
    )
    return path


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def run_file(redis_url: str, path: Path, fake: FakeProvider | None = None) -> list[dict]:
    settings = make_settings(redis_url, fake)
    async with pipeline_client(settings) as client, running_worker(settings):
        submission = await client.submit_file(path)
        await client.wait(submission.run_id, timeout_s=30)
        return [r.model_dump(mode="json") async for r in client.results(submission.run_id)]


def test_a_given_id_never_takes_another_lines_generated_id(tmp_path: Path) -> None:
    path = write_jobs(
        tmp_path,
        {"id": "line-2", "prompt": "valid, but names line 2"},
        {"prompt": "valid, no id"},
        {"id": "line-3", "prompt": "its own line: allowed"},
        {"id": "line-04", "prompt": "not the generated form: allowed"},
    )
    entries = list(read_file(path, max_line_bytes=10_000))
    first = entries[0]
    assert isinstance(first, LineError) and first.field == "id" and "reserved" in first.reason
    assert [e.id for e in entries[1:] if isinstance(e, Task)] == ["line-2", "line-3", "line-04"]


async def test_a_run_with_a_colliding_id_ends_with_one_result_per_line(
    redis_url: str, tmp_path: Path
) -> None:
    path = write_jobs(
        tmp_path,
        {"id": "line-2", "prompt": "answer me"},
        {"prompt": "x", "max_tokens": -1},  # invalid, without an id
        {"id": "line-2", "prompt": "a duplicate of a refused id"},
    )
    results = await run_file(redis_url, path)
    assert [(r["id"], r["status"]) for r in results] == [
        ("line-1", "rejected"),
        ("line-2", "rejected"),
        ("line-3", "rejected"),
    ]
    assert "reserved" in results[0]["error"]["message"]
    assert "max_tokens" in results[1]["error"]["message"]


async def test_a_deeply_nested_line_is_refused_alone(redis_url: str, tmp_path: Path) -> None:
    path = write_jobs(
        tmp_path,
        {"id": "before", "prompt": "first"},
        b'{"id": "deep", "prompt": "x", "metadata": ' + nested(300) + b"}",
        b'{"id": "schema", "prompt": "x", "response_schema": {"a": ' + nested(MAX_DEPTH) + b"}}",
        {"id": "big", "prompt": "x", "metadata": "m" * (MAX_FIELD_BYTES + 1)},
        {"id": "many", "messages": [{"role": "user", "content": "hi"}] * 1001},
        {"id": "after", "prompt": "last", "metadata": {"ok": [[1]]}},
    )
    entries = list(read_file(path, max_line_bytes=1_000_000))
    errors = {e.task_id: e for e in entries if isinstance(e, LineError)}
    assert set(errors) == {"deep", "schema", "big", "many"}
    assert str(errors["deep"]).startswith(f"{path}:2: field 'metadata': nests deeper than")
    assert errors["schema"].field == "response_schema" and errors["big"].field == "metadata"
    assert errors["many"].field == "messages"

    results = await run_file(redis_url, path)
    assert [(r["id"], r["status"]) for r in results] == [
        ("before", "ok"),
        ("deep", "rejected"),
        ("schema", "rejected"),
        ("big", "rejected"),
        ("many", "rejected"),
        ("after", "ok"),
    ]
    assert results[-1]["metadata"] == {"ok": [[1]]}


async def test_response_schema_is_checked_as_a_json_schema(redis_url: str, tmp_path: Path) -> None:
    path = write_jobs(
        tmp_path,
        {"id": "bad", "prompt": "x", "response_schema": {"type": 5}},
        {"id": "props", "prompt": "x", "response_schema": {"properties": 3}},
        {"id": "good", "prompt": "y", "response_schema": {"type": "object"}},
    )
    results = await run_file(redis_url, path)
    assert [(r["id"], r["status"]) for r in results] == [
        ("bad", "rejected"),
        ("props", "rejected"),
        ("good", "ok"),
    ]
    assert "not a valid JSON Schema" in results[0]["error"]["message"]
    assert "response_schema" in results[0]["error"]["message"]
    assert results[2]["output"] == {}


async def test_max_tokens_above_the_model_limit_is_rejected(redis_url: str, tmp_path: Path) -> None:
    path = write_jobs(
        tmp_path,
        {"id": "huge", "prompt": "x", "max_tokens": 1_000_000_000},
        {"id": "named", "prompt": "x", "model": "gpt-4o-mini", "max_tokens": 20_000},
        {"id": "fits", "prompt": "y", "max_tokens": 16_384},
    )
    results = await run_file(redis_url, path)
    assert [(r["id"], r["status"]) for r in results] == [
        ("huge", "rejected"),
        ("named", "rejected"),
        ("fits", "ok"),
    ]
    message = results[1]["error"]["message"]
    assert "max_tokens 20000" in message and "gpt-4o-mini" in message and "16384" in message


def test_simulated_answers_take_time_linear_in_their_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted: list[int] = []
    real = simulated.count_tokens

    def counting(text: str) -> int:
        counted.append(len(text))
        return real(text)

    monkeypatch.setattr(simulated, "count_tokens", counting)
    answer = simulated.simulated_answer("a long one", 16_384)
    assert real(answer) >= int(16_384 * 0.6)
    assert sum(counted) <= 3 * len(answer)  # each word tokenised once, never the whole again


@pytest.mark.parametrize(
    "tenant", ["acme\x1fglobex", "a:b", "", "-lead", "x" * 65, "sp ace", "\x1b[31mred"]
)
def test_unsafe_tenant_names_are_rejected_lines(tmp_path: Path, tenant: str) -> None:
    path = write_jobs(tmp_path, {"id": "a", "prompt": "x", "tenant": tenant})
    (error,) = read_file(path, max_line_bytes=10_000)
    assert isinstance(error, LineError) and error.field == "tenant"
    assert "letters, digits" in error.reason


def test_safe_tenant_names_are_accepted(tmp_path: Path) -> None:
    names = ["acme", "Acme-2.eu_west", "7", "x" * 64]
    path = write_jobs(tmp_path, *[{"prompt": "x", "tenant": name} for name in names])
    assert [t.tenant for t in read_file(path, max_line_bytes=10_000) if isinstance(t, Task)] == (
        names
    )


async def test_result_by_id_is_scoped_to_the_tenant(redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with pipeline_client(settings) as client, running_worker(settings):
        run_a = await client.submit([{"id": "q1", "prompt": "alpha", "tenant": "acme"}])
        run_b = await client.submit([{"id": "q1", "prompt": "beta", "tenant": "globex"}])
        await client.wait(run_a, timeout_s=20)
        await client.wait(run_b, timeout_s=20)
        acme = await client.result("q1", tenant="acme")
        globex = await client.result("q1", tenant="globex")
        nobody = await client.result("q1")
        in_run = await client.result("q1", run_a)
    assert acme is not None and globex is not None and in_run is not None
    assert acme.output != globex.output and in_run.output == acme.output
    assert nobody is None  # the default tenant never used q1


async def test_single_flight_off_sends_identical_tasks_alone(
    redis_url: str, fake: FakeProvider
) -> None:
    tasks = [{"id": f"d{i}", "task_type": "faq", "prompt": "same question"} for i in range(3)]
    for single_flight, items in ((True, 1), (False, 3)):
        fake.reset()
        settings = make_settings(redis_url, fake, single_flight=single_flight, cache_enabled=False)
        async with pipeline_client(settings) as client, running_worker(settings):
            run_id = await client.submit(tasks, complete=True)
            await client.wait(run_id, timeout_s=20)
            results = [r async for r in client.results(run_id)]
        assert [r.status for r in results] == ["ok"] * 3
        assert fake.stats()["items"] == items
