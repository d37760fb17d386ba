"""Batches that a server stopped working on, and batches that end before their lines ran:
a dead server's `validating` or `finalizing` batch is taken over by the next read, and
cancelling or expiry withdraws the lines that have not started."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest
from redis.asyncio.connection import AbstractConnection

from pipeline.server.auth import Principal
from pipeline.server.state import ServerState
from pipeline.testing import FakeProvider, make_settings
from tests.server.harness import API_KEYS, KEY_A, Api, api_server
from workers.lifecycle import in_process_worker, running


def _settings(redis_url: str, fake: FakeProvider) -> Any:
    values = {"server_api_keys": API_KEYS, "server_batch_api_min_window_h": 0}
    return make_settings(redis_url, fake, **values)


def _jsonl(prompts: dict[str, str]) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
            }
        )
        + b"\n"
        for custom_id, text in prompts.items()
    )


async def _queued_batch(api: Api, client: openai.AsyncOpenAI, content: bytes) -> str:
    """A batch whose lines are all queued (its server has moved it to `in_progress`)."""
    uploaded = await client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for _ in range(200):
        if (await _stored(api, batch.id))["status"] != "validating":
            return batch.id
        await asyncio.sleep(0.02)
    raise AssertionError("the batch was never queued")


def _state(api: Api) -> ServerState:
    state: ServerState = api.app.state.batchwise
    return state


async def _stored(api: Api, batch_id: str) -> dict[str, Any]:
    state = _state(api)
    raw = await state.pipeline.redis.hget(state.pipeline.keys.server_batch("acme", batch_id), "doc")
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


async def _store(api: Api, doc: dict[str, Any]) -> None:
    """Write the batch object as a server that then died would have left it."""
    state = _state(api)
    key = state.pipeline.keys.server_batch("acme", doc["id"])
    await state.pipeline.redis.hset(key, "doc", orjson.dumps(doc))


async def _pending(api: Api) -> int:
    """Items waiting in any group of this test's queue."""
    state = _state(api)
    p = state.pipeline
    groups = [g.decode() for g in await p.redis.zrange(p.keys.groups(), 0, -1)]
    return sum([await p.redis.llen(p.keys.group_items(g)) for g in groups])


async def _error_codes(client: openai.AsyncOpenAI, file_id: str | None) -> dict[str, str]:
    assert file_id
    rows = [orjson.loads(r) for r in (await client.files.content(file_id)).content.splitlines()]
    return {r["custom_id"]: r["error"]["code"] for r in rows}


async def test_a_batch_left_finalizing_by_a_dead_server_is_finished_by_the_next_read(
    redis_url: str, fake: FakeProvider
) -> None:
    prompts = {"a": "first question", "b": "second question"}
    async with api_server(_settings(redis_url, fake)) as api, api.sdk(KEY_A) as client:
        batch_id = await _queued_batch(api, client, _jsonl(prompts))
        p = _state(api).pipeline
        await p.runs.wait(batch_id, timeout_s=20)  # every line answered; nobody read the batch
        # a server marked it finalizing and died; its lease has a second left to run out
        doc = await _stored(api, batch_id)
        await _store(api, {**doc, "status": "finalizing", "finalizing_at": doc["created_at"]})
        await p.redis.set(p.keys.server_batch_lease("acme", batch_id), "dead", px=1000)
        assert (await client.batches.retrieve(batch_id)).status == "finalizing"
        for _ in range(100):
            done = await client.batches.retrieve(batch_id)
            if done.status != "finalizing":
                break
            await asyncio.sleep(0.05)
        assert done.status == "completed" and done.completed_at
        assert done.request_counts is not None and done.request_counts.completed == 2
        assert done.output_file_id and done.error_file_id is None
        output = (await client.files.content(done.output_file_id)).content.splitlines()
        assert sorted(orjson.loads(r)["custom_id"] for r in output) == ["a", "b"]
        again = await client.batches.retrieve(batch_id)  # written once: the same file
        assert again.status == "completed" and again.output_file_id == done.output_file_id


async def test_a_batch_left_validating_mid_queue_fails_and_withdraws_its_lines(
    redis_url: str, fake: FakeProvider
) -> None:
    prompts = {f"q{i}": f"question number {i}" for i in range(3)}
    settings = _settings(redis_url, fake)
    async with api_server(settings, worker=False) as api, api.sdk(KEY_A) as client:
        batch_id = await _queued_batch(api, client, _jsonl(prompts))
        assert await _pending(api) == 3
        # the server died while queueing: the batch says validating, its run is not sealed
        p = _state(api).pipeline
        await _store(api, {**await _stored(api, batch_id), "status": "validating"})
        await p.redis.hset(p.keys.run(batch_id), "sealed", 0)
        failed = await client.batches.retrieve(batch_id)
        assert failed.status == "failed" and failed.failed_at
        assert failed.errors and failed.errors.data
        assert "create it again" in (failed.errors.data[0].message or "")
        assert await _pending(api) == 0  # nothing it had queued will run
        assert await p.runs.progress(batch_id) == (3, 3, True)  # and the run has ended
        records = [r async for r in p.runs.records(batch_id)]
        assert {r["error"]["code"] for r in records} == {"batch_failed"}
        async with running(in_process_worker(settings, p.redis, poll_delay=0.02), 5):
            await asyncio.sleep(0.3)
    assert fake.stats()["requests"] == 0


async def test_a_batch_left_validating_after_queueing_moves_on(
    redis_url: str, fake: FakeProvider
) -> None:
    content = _jsonl({"a": "one question", "b": "another question"}) + b"not json\n"
    async with api_server(_settings(redis_url, fake), worker=False) as api:
        async with api.sdk(KEY_A) as client:
            batch_id = await _queued_batch(api, client, content)
            # the server died after queueing every line, before saying so
            await _store(api, {**await _stored(api, batch_id), "status": "validating"})
            batch = await client.batches.retrieve(batch_id)
            assert batch.status == "in_progress" and batch.in_progress_at
            assert batch.request_counts is not None
            assert (batch.request_counts.total, batch.request_counts.failed) == (3, 1)
            assert await _pending(api) == 2


async def test_cancelling_withdraws_the_lines_not_started(
    redis_url: str, fake: FakeProvider
) -> None:
    prompts = {f"q{i}": f"question number {i}" for i in range(3)}
    settings = _settings(redis_url, fake)
    async with api_server(settings, worker=False) as api, api.sdk(KEY_A) as client:
        batch_id = await _queued_batch(api, client, _jsonl(prompts))
        async with api.http(KEY_A) as http:  # another run waits on the same question
            same = _jsonl({"s": "question number 0"})
            created = await http.post("/v1/tasks", content=same)
        assert await _pending(api) == 3  # the same question is one item for both
        cancelled = await client.batches.cancel(batch_id)
        assert cancelled.status == "cancelled" and cancelled.cancelled_at
        assert cancelled.output_file_id is None
        codes = await _error_codes(client, cancelled.error_file_id)
        assert codes == dict.fromkeys(prompts, "batch_cancelled")
        assert await _pending(api) == 1  # the question the other run still waits on
        p = _state(api).pipeline
        run_id = created.json()["run_id"]
        async with running(in_process_worker(settings, p.redis, poll_delay=0.02), 5):
            await p.runs.wait(run_id, timeout_s=20)
        (answer,) = [r async for r in p.runs.records(run_id)]
        assert answer["status"] == "ok"
    assert fake.stats()["requests"] == 1


async def test_expiry_withdraws_the_lines_not_started(redis_url: str, fake: FakeProvider) -> None:
    prompts = {f"q{i}": f"question number {i}" for i in range(2)}
    async with api_server(_settings(redis_url, fake), worker=False) as api:
        async with api.sdk(KEY_A) as client:
            batch_id = await _queued_batch(api, client, _jsonl(prompts))
            await _store(api, {**await _stored(api, batch_id), "expires_at": 0})
            expired = await client.batches.retrieve(batch_id)
            assert expired.status == "expired"
            codes = await _error_codes(client, expired.error_file_id)
            assert codes == dict.fromkeys(prompts, "batch_expired")
            assert await _pending(api) == 0


async def test_a_cancel_while_the_lines_are_queued_withdraws_every_line(
    redis_url: str, fake: FakeProvider
) -> None:
    prompts = {f"q{i}": f"question number {i}" for i in range(1200)}  # queued in three chunks
    async with api_server(_settings(redis_url, fake), worker=False) as api:
        store = _state(api).batches
        uploaded = await _state(api).files.put("acme", "in.jsonl", "batch", _jsonl(prompts))
        request = {
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        created = await store.create(Principal("acme"), request)
        cancelling = await store.cancel("acme", created["id"])  # the lines are still queueing
        assert cancelling["status"] in ("cancelling", "cancelled")
        await store.aclose()  # queueing has finished
        cancelled = await store.get("acme", created["id"])
        assert cancelled["status"] == "cancelled"
        assert cancelled["request_counts"] == {"total": 1200, "completed": 0, "failed": 1200}
        assert await _pending(api) == 0


async def test_a_page_of_batches_or_files_is_read_in_the_same_round_trips_at_any_size(
    redis_url: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = 0
    send = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        nonlocal sent
        sent += 1  # one per round trip: a pipeline sends all its commands at once
        await send(self, command, check_health)

    async with (
        api_server(_settings(redis_url, fake), worker=False) as api,
        api.sdk(KEY_A) as client,
    ):
        for n in range(3):
            await _queued_batch(api, client, _jsonl({"q": f"question {n}"}))
        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
        trips = []
        async with api.http(KEY_A) as http:
            for limit in (1, 3):
                sent = 0
                for path in ("/v1/batches", "/v1/files"):
                    listed = await http.get(path, params={"limit": limit})
                    assert len(listed.json()["data"]) == limit
                trips.append(sent)
    assert trips[0] == trips[1]
