"""The HTTP API driven by the official OpenAI SDK over real HTTP, against the fake provider."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest

from pipeline.config.records import ServerKey
from pipeline.core.intake import validate
from pipeline.models import Task
from pipeline.server.auth import key_hash
from pipeline.server.chat import chat_line
from pipeline.testing import FakeProvider, expected_output, make_settings
from tests.server.harness import API_KEYS, KEY_A, api_server


def _settings(redis_url: str, fake: FakeProvider, **overrides: Any) -> Any:
    values = {"server_api_keys": API_KEYS, "server_batch_api_min_window_h": 0, **overrides}
    return make_settings(redis_url, fake, **values)


def _line(custom_id: str, prompt: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": prompt}]},
    }


def _jsonl(lines: list[Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def _until_done(client: openai.AsyncOpenAI, batch_id: str) -> Any:
    seen = []
    for _ in range(400):
        batch = await client.batches.retrieve(batch_id)
        seen.append(batch.status)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch, seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch never finished: {seen[-5:]}")


async def test_openai_batch_script_runs_unchanged(redis_url: str, fake: FakeProvider) -> None:
    prompts = {f"req-{i}": f"What is the capital of country {i}?" for i in range(5)}
    lines = [_line(cid, text) for cid, text in prompts.items()]
    lines.append({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", "body": {}})
    async with api_server(_settings(redis_url, fake)) as api:
        async with api.sdk(KEY_A) as client:
            uploaded = await client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
            assert (await client.files.retrieve(uploaded.id)).bytes == len(_jsonl(lines))
            batch = await client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"job": "nightly"},
            )
            assert batch.status == "validating"
            done, _ = await _until_done(client, batch.id)
            assert done.status == "completed"
            assert done.metadata == {"job": "nightly"}
            assert done.request_counts is not None
            counts = done.request_counts
            assert (counts.total, counts.completed, counts.failed) == (6, 5, 1)
            assert done.output_file_id and done.error_file_id
            output = (await client.files.content(done.output_file_id)).content
            rows = [orjson.loads(r) for r in output.splitlines()]
            assert {r["custom_id"] for r in rows} == set(prompts)
            for row in rows:
                body = row["response"]["body"]
                assert row["response"]["status_code"] == 200 and row["error"] is None
                assert body["object"] == "chat.completion"
                answer = body["choices"][0]["message"]["content"]
                assert answer == expected_output(prompts[row["custom_id"]])
                assert body["usage"]["total_tokens"] > 0
            errors = [
                orjson.loads(r)
                for r in (await client.files.content(done.error_file_id)).content.splitlines()
            ]
            assert [e["custom_id"] for e in errors] == ["bad"]
            assert errors[0]["response"] is None and errors[0]["error"]["code"] == "invalid_input"
            with pytest.raises(openai.NotFoundError):  # not a way into the server's own keys
                await client.batches.retrieve(done.id + ":finalize")


async def test_batches_list_pages_newest_first(redis_url: str, fake: FakeProvider) -> None:
    async with api_server(_settings(redis_url, fake)) as api:
        async with api.sdk(KEY_A) as client:
            uploaded = await client.files.create(
                file=("in.jsonl", _jsonl([_line("a", "hello there")])), purpose="batch"
            )
            ids = []
            for _ in range(3):
                batch = await client.batches.create(
                    input_file_id=uploaded.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                )
                ids.append(batch.id)
            first = await client.batches.list(limit=2)
            assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
            rest = await client.batches.list(limit=2, after=first.data[-1].id)
            assert [b.id for b in rest.data] == [ids[0]] and not rest.has_more
            every = [b.id async for b in client.batches.list(limit=1)]  # the SDK's auto-paging
            assert every == ids[::-1]


async def test_batch_of_only_bad_lines_fails(redis_url: str, fake: FakeProvider) -> None:
    async with api_server(_settings(redis_url, fake)) as api:
        async with api.sdk(KEY_A) as client:
            uploaded = await client.files.create(file=("in.jsonl", b"not json\n"), purpose="batch")
            batch = await client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            assert batch.status == "validating"
            batch, seen = await _until_done(client, batch.id)
            assert batch.status == "failed" and "in_progress" not in seen
            assert batch.errors and batch.errors.data and batch.errors.data[0].line == 1
            assert batch.request_counts and batch.request_counts.failed == 1
            with pytest.raises(openai.ConflictError):
                await client.batches.cancel(batch.id)


async def test_chat_completion_uses_cache_and_reports_it(
    redis_url: str, fake: FakeProvider
) -> None:
    prompt = "Where is my order #1234?"
    async with api_server(_settings(redis_url, fake)) as api:
        async with api.sdk(KEY_A) as client:
            messages: Any = [{"role": "user", "content": prompt}]
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=messages
            )
            first = raw.parse()
            assert first.choices[0].message.content == expected_output(prompt)
            assert first.model.startswith("gpt-")  # the router chose one the fake serves
            assert first.usage is not None and first.usage.prompt_tokens > 0
            assert raw.headers["x-batchwise-cache"] == "miss"
            assert float(raw.headers["x-batchwise-cost-usd"]) > 0
            again = await client.chat.completions.with_raw_response.create(
                model="auto", messages=messages
            )
            assert again.parse().choices[0].message.content == expected_output(prompt)
            assert again.headers["x-batchwise-cache"] == "exact"
            assert float(again.headers["x-batchwise-cost-usd"]) == 0
            explicit = await client.chat.completions.create(model="gpt-4o", messages=messages)
            assert explicit.model == "gpt-4o"


async def test_concurrent_chats_share_provider_calls(redis_url: str, fake: FakeProvider) -> None:
    prompts = [f"Classify ticket number {i}: my parcel is late" for i in range(12)]
    async with api_server(_settings(redis_url, fake, server_chat_linger_ms=50)) as api:
        async with api.sdk(KEY_A) as client:
            answers = await asyncio.gather(
                *(
                    client.chat.completions.with_raw_response.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": p}],
                        extra_body={"task_type": "classification"},
                    )
                    for p in prompts
                )
            )
            for prompt, raw in zip(prompts, answers, strict=True):
                assert raw.parse().choices[0].message.content == expected_output(prompt)
            assert max(int(r.headers["x-batchwise-batch-size"]) for r in answers) > 1
            assert fake.stats()["requests"] < len(prompts)


async def test_errors_surface_as_sdk_exceptions(redis_url: str, fake: FakeProvider) -> None:
    async with api_server(_settings(redis_url, fake)) as api:
        async with api.sdk("sk-wrong") as stranger:
            with pytest.raises(openai.AuthenticationError):
                await stranger.batches.list()
        async with api.http() as anonymous:
            response = await anonymous.get("/v1/batches")
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "missing_api_key"
        async with api.sdk(KEY_A) as client:
            with pytest.raises(openai.NotFoundError):
                await client.batches.retrieve("batch_nope")
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(
                    model="llama-unserved", messages=[{"role": "user", "content": "hi"}]
                )
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
                )


async def test_plan_limit_is_429_with_retry_after(redis_url: str, fake: FakeProvider) -> None:
    """A key carries a plan for its user; other keys of the tenant are not limited by it."""
    free_key = "sk-acme-free-tier"
    hashed = {key_hash(free_key): ServerKey(tenant="acme", user_id="trial", plan="free")}
    plans = {"free": {"requests_per_min": 2}}
    settings = _settings(redis_url, fake, plans=plans, server_key_hashes=hashed)
    async with api_server(settings) as api:
        async with api.sdk(free_key) as client:
            for i in range(2):
                await client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": f"question {i}"}]
                )
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "question 3"}]
                )
            assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
            assert caught.value.code == "plan_requests_per_min"
        async with api.sdk(KEY_A) as other:  # the tenant's other key has no plan
            await other.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "question 4"}]
            )


async def test_a_24h_window_goes_through_the_provider_batch_api(
    redis_url: str, fake: FakeProvider
) -> None:
    fast = {"batch_api_poll_s": 1, "batch_api_linger_s": 0.2}
    settings = _settings(redis_url, fake, server_batch_api_min_window_h=24, **fast)
    prompts = {f"r{i}": f"Summarise review {i}" for i in range(3)}
    lines = [_line(cid, text) for cid, text in prompts.items()]
    async with api_server(settings) as api, api.sdk(KEY_A) as client:
        uploaded = await client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
        short = await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="1h",  # batchwise's extension: too short to wait for a batch API
        )
        assert (await _until_done(client, short.id))[0].status == "completed"
        assert fake.batch_api.stats()["created"] == 0
        prompts = {cid: text + " again" for cid, text in prompts.items()}  # no cache hits
        lines = [_line(cid, text) for cid, text in prompts.items()]
        uploaded = await client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
        day = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done, _ = await _until_done(client, day.id)
        assert done.status == "completed" and done.output_file_id
        assert fake.batch_api.stats()["created"] == 1
        rows = [
            orjson.loads(r)
            for r in (await client.files.content(done.output_file_id)).content.splitlines()
        ]
        answers = {
            r["custom_id"]: r["response"]["body"]["choices"][0]["message"]["content"] for r in rows
        }
        assert answers == {cid: expected_output(text) for cid, text in prompts.items()}


async def test_a_batch_past_its_window_expires_with_what_is_answered(
    redis_url: str, fake: FakeProvider
) -> None:
    settings = _settings(redis_url, fake)
    prompts = {"fast": "answered in time", "slow": "answered too late"}
    async with api_server(settings) as api, api.sdk(KEY_A) as client:
        async with api.http(KEY_A) as http:  # "fast" is in the cache before the batch starts
            chat = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "answered in time"}],
            }
            assert (await http.post("/v1/chat/completions", json=chat)).status_code == 200
        fake.add_faults({"kind": "latency", "delay_s": 3})
        lines = [_line(cid, text) for cid, text in prompts.items()]
        uploaded = await client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1h"
        )
        assert batch.expires_at == batch.created_at + 3600
        while batch.status == "validating":  # queued: from here on the run decides
            batch = await client.batches.retrieve(batch.id)
        state = api.app.state.batchwise  # the window passes: move the deadline into the past
        key = state.pipeline.keys.server_batch("acme", batch.id)
        doc = orjson.loads(await state.pipeline.redis.hget(key, "doc"))
        await state.pipeline.redis.hset(key, "doc", orjson.dumps({**doc, "expires_at": 0}))
        expired = await client.batches.retrieve(batch.id)
        assert expired.status == "expired" and expired.expired_at
        assert expired.request_counts is not None
        assert (expired.request_counts.completed, expired.request_counts.failed) == (1, 1)
        assert expired.output_file_id and expired.error_file_id
        output = (await client.files.content(expired.output_file_id)).content
        assert [orjson.loads(r)["custom_id"] for r in output.splitlines()] == ["fast"]
        error = orjson.loads((await client.files.content(expired.error_file_id)).content)
        assert error["custom_id"] == "slow" and error["error"]["code"] == "batch_expired"


def test_a_chat_body_and_a_batch_line_become_the_same_task() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_completion_tokens": 7,
        "temperature": 0.2,
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
        "metadata": {"team": "ops"},
        "top_p": 0.5,  # accepted, not used
    }
    line = validate({"custom_id": "x", "method": "POST", "body": body}, 1, set(), source="t")
    chat = validate(chat_line({**body, "task_type": "faq"}, "x"), 1, set(), source="t")
    assert isinstance(line, Task) and isinstance(chat, Task)
    fields = {"id", "messages", "model", "max_tokens", "temperature", "response_schema"}
    assert line.model_dump(include=fields) == chat.model_dump(include=fields)
    assert (line.max_tokens, line.response_schema, line.metadata) == (
        7,
        {"type": "object"},
        body["metadata"],
    )
    assert chat.task_type == "faq"
    for odd in ("text", {"type": "json_schema", "json_schema": "none"}):  # not what batchwise uses
        plain = {**body, "response_format": odd}
        checked = validate({"custom_id": "y", "body": plain}, 2, set(), source="t")
        assert isinstance(checked, Task) and checked.response_schema is None
