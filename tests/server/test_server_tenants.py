"""Tenants over HTTP: the API key decides the tenant; one tenant's key cannot see or reach
another's files, batches, runs or cached answers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import openai
import orjson
import pytest

from pipeline.config.records import ServerKey
from pipeline.server.auth import key_hash
from pipeline.testing import FakeProvider, expected_output, make_settings
from tests.server.harness import API_KEYS, KEY_A, KEY_B, KEY_OPS, api_server


def _settings(redis_url: str, fake: FakeProvider, **overrides: Any) -> Any:
    return make_settings(
        redis_url,
        fake,
        server_api_keys=API_KEYS,
        server_admin_tenants=("ops",),
        server_batch_api_min_window_h=0,
        **overrides,
    )


LINE = {
    "custom_id": "q1",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "secret plan"}]},
}


async def test_files_and_batches_are_invisible_to_other_tenants(
    redis_url: str, fake: FakeProvider
) -> None:
    async with (
        api_server(_settings(redis_url, fake)) as api,
        api.sdk(KEY_A) as acme,
        api.sdk(KEY_B) as globex,
    ):
        uploaded = await acme.files.create(
            file=("in.jsonl", orjson.dumps(LINE) + b"\n"), purpose="batch"
        )
        batch = await acme.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        with pytest.raises(openai.NotFoundError):
            await globex.files.retrieve(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            await globex.files.content(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            await globex.files.delete(uploaded.id)
        with pytest.raises(openai.NotFoundError):  # cannot run a batch on acme's file
            await globex.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
        with pytest.raises(openai.NotFoundError):
            await globex.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            await globex.batches.cancel(batch.id)
        assert (await globex.batches.list()).data == []
        assert (await globex.files.list()).data == []
        async with api.http(KEY_B) as http:  # nor its run, by the batch's run id
            assert (await http.get(f"/v1/runs/{batch.id}")).status_code == 404
        assert (await acme.batches.retrieve(batch.id)).id == batch.id
        assert uploaded.id in [f.id for f in (await acme.files.list()).data]


async def test_runs_belong_to_the_submitting_tenant(redis_url: str, fake: FakeProvider) -> None:
    tasks = [{"id": "t1", "prompt": "first question"}, {"id": "t2", "prompt": "second question"}]
    async with (
        api_server(_settings(redis_url, fake)) as api,
        api.http(KEY_A) as acme,
        api.http(KEY_B) as globex,
    ):
        created = await acme.post("/v1/tasks", json=tasks)
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]
        assert created.json()["accepted"] == 2
        for _ in range(200):
            run = (await acme.get(f"/v1/runs/{run_id}")).json()
            if run["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        assert run["done"] == run["total"] == 2
        async with acme.stream("GET", f"/v1/runs/{run_id}/results") as streamed:
            lines = [orjson.loads(line) async for line in streamed.aiter_lines() if line]
        assert [(r["id"], r["output"]) for r in lines] == [
            ("t1", expected_output("first question")),
            ("t2", expected_output("second question")),
        ]
        for path in (f"/v1/runs/{run_id}", f"/v1/runs/{run_id}/results"):
            refused = await globex.get(path)
            assert refused.status_code == 404
            assert refused.json()["error"]["type"] == "invalid_request_error"


async def test_a_body_cannot_choose_the_tenant(redis_url: str, fake: FakeProvider) -> None:
    async with api_server(_settings(redis_url, fake)) as api, api.http(KEY_A) as acme:
        body = b'{"id": "x", "prompt": "hi", "tenant": "globex"}\n{"id": "y", "prompt": "hello"}\n'
        created = await acme.post(
            "/v1/tasks", content=body, headers={"content-type": "application/x-ndjson"}
        )
        doc = created.json()
        assert (doc["accepted"], doc["rejected"]) == (1, 1)
        strings = (await acme.post("/v1/tasks", json=["hello", {"prompt": "hi"}])).json()
        assert strings["errors"][0]["message"] == "a job line must be a JSON object, got str"
        assert doc["errors"] == [
            {
                "line": 1,
                "field": "tenant",
                "message": "the API key decides the tenant; remove the field",
            }
        ]


async def test_cached_answers_never_cross_tenants(redis_url: str, fake: FakeProvider) -> None:
    messages: Any = [{"role": "user", "content": "What is our refund policy?"}]
    async with (
        api_server(_settings(redis_url, fake)) as api,
        api.sdk(KEY_A) as acme,
        api.sdk(KEY_B) as globex,
    ):
        create = acme.chat.completions.with_raw_response.create
        assert (await create(model="gpt-4o-mini", messages=messages)).headers[
            "x-batchwise-cache"
        ] == "miss"
        other = await globex.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=messages
        )
        assert other.headers["x-batchwise-cache"] == "miss"
        again = await create(model="gpt-4o-mini", messages=messages)
        assert again.headers["x-batchwise-cache"] == "exact"
        assert fake.stats()["requests"] == 2


async def test_keys_configured_as_hashes(redis_url: str, fake: FakeProvider) -> None:
    hashed = {key_hash("sk-hashed-key"): ServerKey(tenant="initech", user_id="ann")}
    settings = _settings(redis_url, fake).model_copy(update={"server_key_hashes": hashed})
    async with api_server(settings) as api, api.http("sk-hashed-key") as client:
        assert (await client.get("/v1/batches")).status_code == 200


async def test_operator_pages_and_limits(
    redis_url: str, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(redis_url, fake, server_max_body_bytes=4096, max_line_bytes=1000)
    caplog.set_level(logging.INFO, logger="batchwise.access")
    async with (
        api_server(settings) as api,
        api.http() as anonymous,
        api.http(KEY_A) as acme,
        api.http(KEY_OPS) as ops,
    ):
        assert (await anonymous.get("/healthz")).json() == {"status": "ok", "redis": True}
        prompt = "a prompt that must never reach the access log"
        chat = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
        assert (await acme.post("/v1/chat/completions", json=chat)).status_code == 200
        long_line = orjson.dumps({"id": "long", "prompt": "y" * 1200})
        lines = await acme.post("/v1/tasks", content=long_line + b'\n{"prompt": "short"}\n')
        assert lines.json()["accepted"] == 1
        assert lines.json()["errors"][0]["message"] == "line longer than the limit of 1000 bytes"
        too_big = await acme.post("/v1/tasks", content=b"x" * 5000)
        assert too_big.status_code == 413
        assert too_big.json()["error"]["message"].startswith("the request body is larger")
        assert (await acme.get("/metrics")).status_code == 403
        assert (await anonymous.get("/dashboard")).status_code == 401
        metrics = await ops.get("/metrics")
        assert 'batchwise_http_requests_total{method="POST",route="/v1/chat/completions"' in (
            metrics.text
        )
        page = await ops.get("/dashboard")
        assert page.status_code == 200 and "<html" in page.text.lower()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "batchwise.access")
    assert '"route":"/v1/chat/completions"' in logged and '"tenant":"acme"' in logged
    assert '"status":413' in logged
    assert KEY_A not in logged and KEY_OPS not in logged and prompt not in logged
