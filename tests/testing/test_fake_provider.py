"""The fake provider speaks both protocols, checks keys and injects faults, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.testing import FakeProvider, expected_output

OPENAI_HEADERS = {"Authorization": "Bearer test-key"}
ANTHROPIC_HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeProvider) -> FakeProvider:
    server.reset()
    return server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def packed(*inputs: str) -> str:
    return json.dumps({str(i): t for i, t in enumerate(inputs, 1)})


def pairs(text: str) -> list[tuple[str, Any]]:
    """(id, output) of a keyed answer in text order, duplicates kept."""
    found: list[tuple[str, Any]] = []

    def keep(entries: list[tuple[str, Any]]) -> dict[str, Any]:
        found.extend(entries)
        return dict(entries)

    json.loads(text, object_pairs_hook=keep)
    return found


def openai(client: httpx.Client, fake: FakeProvider, content: str, **body: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **body}
    headers = body.pop("headers", OPENAI_HEADERS)
    return client.post(f"{fake.openai_base_url}/chat/completions", json=body, headers=headers)


def anthropic(
    client: httpx.Client, fake: FakeProvider, content: str, **body: Any
) -> httpx.Response:
    body = {
        "model": "claude-haiku",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": content}],
        **body,
    }
    headers = body.pop("headers", ANTHROPIC_HEADERS)
    return client.post(f"{fake.anthropic_base_url}/v1/messages", json=body, headers=headers)


def openai_content(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


def test_openai_plain_prompt_is_answered_in_openai_shape(fake: FakeProvider, client: httpx.Client):
    r = openai(client, fake, "What is 2+2?")
    doc = r.json()
    assert doc["object"] == "chat.completion" and doc["model"] == "gpt-4o-mini"
    assert doc["choices"][0]["message"]["content"] == expected_output("What is 2+2?")
    assert doc["choices"][0]["finish_reason"] == "stop"
    usage = doc["usage"]
    assert usage["prompt_tokens"] == 3 and usage["completion_tokens"] == 5
    assert usage["total_tokens"] == 8 and usage["prompt_tokens_details"]["cached_tokens"] == 0


def test_packed_prompt_gets_one_result_per_item(fake: FakeProvider, client: httpx.Client):
    r = openai(client, fake, packed("a", "b", "c"), response_format={"type": "json_object"})
    answers = json.loads(openai_content(r))
    assert answers == {str(i): expected_output(t) for i, t in enumerate("abc", 1)}
    stats = fake.stats()
    assert stats["items"] == 3 and stats["requests"] == 1 and stats["by_path"] == {"openai": 1}
    assert stats["bodies"][0]["response_format"] == {"type": "json_object"}


def test_anthropic_messages_with_system_blocks(fake: FakeProvider, client: httpx.Client):
    system = [{"type": "text", "text": "You are terse."}]
    r = anthropic(client, fake, packed("x", "y"), system=system)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["type"] == "message" and doc["role"] == "assistant"
    assert doc["stop_reason"] == "end_turn"
    answers = json.loads(doc["content"][0]["text"])
    assert answers == {"1": expected_output("x"), "2": expected_output("y")}
    assert set(doc["usage"]) == {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }


def test_wrong_or_missing_key_is_401_in_each_protocol(fake: FakeProvider, client: httpx.Client):
    r = openai(client, fake, "hi", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = anthropic(client, fake, "hi", headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401
    assert r.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": r.json()["error"]["message"]},
    }
    assert fake.stats()["unauthorized"] == 2


def test_anthropic_requires_version_header_and_max_tokens(fake: FakeProvider, client: httpx.Client):
    assert anthropic(client, fake, "hi", headers={"x-api-key": "test-key"}).status_code == 400
    r = anthropic(client, fake, "hi", max_tokens=None)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_max_tokens_cuts_the_answer(fake: FakeProvider, client: httpx.Client):
    r = openai(client, fake, packed("a", "b"), max_completion_tokens=5)
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert len(openai_content(r)) <= 20
    r = anthropic(client, fake, "hello", max_tokens=2)
    assert r.json()["stop_reason"] == "max_tokens" and r.json()["usage"]["output_tokens"] <= 2


def test_429_fault_sets_retry_after_and_runs_out(fake: FakeProvider, client: httpx.Client):
    fake.add_faults({"kind": "429", "times": 2, "retry_after": 1.5, "model": "gpt-4o-mini"})
    assert openai(client, fake, "hi", model="other").status_code == 200
    for _ in range(2):
        r = openai(client, fake, "hi")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1.5" and r.headers["retry-after-ms"] == "1500"
        assert "Please try again in 1.5s." in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert openai(client, fake, "hi").status_code == 200
    assert fake.stats()["by_status"] == {"200": 2, "429": 2}


@pytest.mark.parametrize(
    ("kind", "openai_type", "anthropic_type"),
    [
        ("500", "server_error", "api_error"),
        ("503", "server_error", "api_error"),
        ("529", "server_error", "overloaded_error"),
        ("400", "invalid_request_error", "invalid_request_error"),
        ("404", "invalid_request_error", "not_found_error"),
    ],
)
def test_status_faults_use_each_protocols_error_body(
    fake: FakeProvider, client: httpx.Client, kind: str, openai_type: str, anthropic_type: str
):
    fake.add_faults({"kind": kind, "path": "openai"}, {"kind": kind, "path": "anthropic"})
    r = openai(client, fake, "hi")
    assert r.status_code == int(kind) and r.json()["error"]["type"] == openai_type
    r = anthropic(client, fake, "hi")
    assert r.status_code == int(kind)
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == anthropic_type
    assert openai(client, fake, "hi").status_code == 200


def test_content_faults_bend_packed_answers(fake: FakeProvider, client: httpx.Client):
    """Each fault once, in queue order, on the same three-item prompt."""
    kinds = ["malformed", "truncated", "fenced", "prose", "bare_array", "drop"]
    kinds += ["duplicate_conflict", "duplicate_same", "reorder", "unknown_id", "wrong_output"]
    kinds += ["results_object"]
    fake.add_faults(*({"kind": k} for k in kinds))
    a, b, c = (expected_output(t) for t in "abc")
    got = {}
    for kind in kinds:
        r = openai(client, fake, packed("a", "b", "c"))
        got[kind] = (openai_content(r), r.json()["choices"][0]["finish_reason"])

    def results(kind: str) -> list[tuple[str, str]]:
        if kind in ("bare_array", "results_object"):
            doc = json.loads(got[kind][0])
            return [
                (x["id"], x["output"]) for x in (doc if kind == "bare_array" else doc["results"])
            ]
        return pairs(got[kind][0])

    with pytest.raises(ValueError):
        json.loads(got["malformed"][0])
    with pytest.raises(ValueError):
        json.loads(got["truncated"][0])
    assert got["truncated"][1] == "length"
    assert got["fenced"][0].count("```") == 2 and not got["fenced"][0].startswith("{")
    assert got["prose"][0].startswith("Here are the results: {")
    assert results("bare_array") == [("1", a), ("2", b), ("3", c)]
    assert results("drop") == [("1", a), ("2", b)]
    assert results("duplicate_conflict")[:2] == [("1", a), ("1", expected_output("a#conflict"))]
    assert results("duplicate_same")[:2] == [("1", a), ("1", a)]
    assert results("reorder") == [("3", c), ("2", b), ("1", a)]
    assert results("unknown_id")[-1][0] not in {"1", "2", "3"}
    assert results("wrong_output") == [("1", b), ("2", a), ("3", c)]
    assert results("results_object") == [("1", a), ("2", b), ("3", c)]
    assert fake.stats()["faults_fired"] == dict.fromkeys(kinds, 1)


def test_packed_only_fault_waits_for_a_packed_prompt(fake: FakeProvider, client: httpx.Client):
    fake.add_faults({"kind": "drop"})
    assert openai_content(openai(client, fake, "plain")) == expected_output("plain")
    assert fake.stats()["faults_pending"] == [{"kind": "drop", "times": 1, "retry_after": 1.0}]
    assert len(json.loads(openai_content(openai(client, fake, packed("a", "b"))))) == 1


def test_timeout_and_latency_faults_delay_the_answer(fake: FakeProvider, client: httpx.Client):
    fake.add_faults({"kind": "timeout", "delay_s": 0.5}, {"kind": "latency", "delay_s": 0.2})
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            f"{fake.openai_base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers=OPENAI_HEADERS,
            timeout=0.1,
        )
    started = time.perf_counter()
    assert openai_content(openai(client, fake, "hi")) == expected_output("hi")
    assert time.perf_counter() - started >= 0.2


def test_rate_limit_per_model_answers_429_until_the_window_ends(
    fake: FakeProvider, client: httpx.Client
):
    fake.set_rate_limit({"gpt-4o-mini": 2}, window_s=3600)
    assert [openai(client, fake, "hi").status_code for _ in range(3)] == [200, 200, 429]
    r = openai(client, fake, "hi")
    assert r.status_code == 429 and 0 < float(r.headers["retry-after"]) <= 3600
    assert openai(client, fake, "hi", model="gpt-4o").status_code == 200
    stats = fake.stats()
    assert stats["rate_limited"] == 2 and sum(n for _, n in stats["windows"]) == 5


def test_control_api_over_http(fake: FakeProvider, client: httpx.Client):
    specs = [{"kind": "503", "path": "anthropic"}, {"kind": "reorder"}]
    assert client.post(f"{fake.url}/_control/faults", json=specs).json() == {"queued": 2}
    assert client.post(f"{fake.url}/_control/faults", json={"kind": "nope"}).status_code == 400
    assert anthropic(client, fake, "hi").status_code == 503
    client.post(f"{fake.url}/_control/rate_limit", json={"rpm": 1, "window_s": 3600})
    assert openai(client, fake, "hi").status_code == 200
    assert openai(client, fake, "hi").status_code == 429
    stats = client.get(f"{fake.url}/_control/stats").json()
    assert stats["by_status"] == {"503": 1, "200": 1, "429": 1} and len(stats["bodies"]) == 3
    assert stats["faults_pending"][0]["kind"] == "reorder"
    assert "bodies" not in client.get(f"{fake.url}/_control/stats?bodies=0").json()
    assert client.post(f"{fake.url}/_control/reset").status_code == 200
    assert client.get(f"{fake.url}/_control/stats").json()["requests"] == 0


def test_prompt_cache_is_simulated_for_a_repeated_system_prompt(
    fake: FakeProvider, client: httpx.Client
):
    system = "rules " * 1000  # 6000 bytes: 1500 tokens
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "q"}]
    cached = [
        openai(client, fake, "", messages=messages).json()["usage"]["prompt_tokens_details"]
        for _ in range(2)
    ]
    assert [c["cached_tokens"] for c in cached] == [0, 1500]
    blocks = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    usage = [anthropic(client, fake, "q", system=blocks).json()["usage"] for _ in range(2)]
    assert usage[0]["cache_creation_input_tokens"] == 1500 and usage[0]["input_tokens"] == 1
    assert usage[1]["cache_read_input_tokens"] == 1500 and usage[1]["input_tokens"] == 1


def test_many_concurrent_requests_each_get_their_own_answer(fake: FakeProvider):
    async def run() -> list[tuple[str, str]]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(limits=limits, headers=OPENAI_HEADERS) as client:

            async def one(i: int) -> tuple[str, str]:
                body = {"model": "m", "messages": [{"role": "user", "content": f"task {i}"}]}
                r = await client.post(f"{fake.openai_base_url}/chat/completions", json=body)
                return f"task {i}", r.json()["choices"][0]["message"]["content"]

            return await asyncio.gather(*(one(i) for i in range(100)))

    answers = asyncio.run(run())
    assert all(got == expected_output(prompt) for prompt, got in answers)
    assert fake.stats()["by_status"] == {"200": 100}


def test_runs_as_a_process(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.testing", "--port", "0", "--key", "k2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        assert httpx.get(f"{url}/_control/health").json() == {"ok": True}
        headers = {"x-api-key": "k2", "anthropic-version": "2023-06-01"}
        body = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{url}/v1/messages", json=body, headers=headers)
        assert r.json()["content"][0]["text"] == expected_output("hi")
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        assert proc.stdout is not None
        proc.stdout.close()
