"""The Anthropic Messages client and the error classification, against the fake server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.errors import (
    AccountRefused,
    ContextTooLong,
    ProviderRefused,
    RateLimited,
    TransientError,
)
from pipeline.models import Message
from pipeline.providers import build_providers
from pipeline.providers.anthropic import AnthropicMessages
from pipeline.providers.base import ChatRequest, classify_http, error_fields, retry_after_s
from pipeline.providers.openai import OpenAICompatible
from pipeline.testing import FAKE_KEY, FakeProvider, expected_output


def request(text: str = "hello", *, system: str = "", max_tokens: int = 50) -> ChatRequest:
    return ChatRequest(
        model="claude-3-5-haiku-latest",
        system=system,
        messages=(Message(role="user", content=text),),
        max_tokens=max_tokens,
    )


@pytest.fixture
async def claude(fake: FakeProvider) -> AsyncIterator[AnthropicMessages]:
    config = ProviderConfig(
        name="claude",
        kind="anthropic",
        base_url=fake.anthropic_base_url,
        api_key=FAKE_KEY,
        models=("claude-*",),
        read_timeout_s=2.0,
    )
    client = AnthropicMessages(config)
    yield client
    await client.aclose()


async def test_answers_with_top_level_system_and_sdk_headers(
    claude: AnthropicMessages, fake: FakeProvider
) -> None:
    response = await claude.complete(request("what is 2+2?", system="Be brief."))
    assert response.text == expected_output("what is 2+2?")
    assert (response.provider, response.model, response.truncated) == (
        "claude",
        "claude-3-5-haiku-latest",
        False,
    )
    body = fake.stats()["bodies"][0]
    assert body["system"] == [{"type": "text", "text": "Be brief."}]  # short: not cache-marked
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


async def test_long_system_prompt_is_cached_and_usage_counts_cache_reads(
    claude: AnthropicMessages,
) -> None:
    system = "You are a careful support agent. " * 400  # well over 1,024 tokens
    first = await claude.complete(request("a", system=system))
    second = await claude.complete(request("b", system=system))
    assert first.usage.cache_write_tokens > 1000 and first.usage.cached_input_tokens == 0
    assert second.usage.cached_input_tokens == first.usage.cache_write_tokens
    # normalised: input counts every prompt token, the cached part included
    assert second.usage.input_tokens > second.usage.cached_input_tokens


async def test_max_tokens_stop_is_truncation(claude: AnthropicMessages) -> None:
    response = await claude.complete(request("x" * 400, max_tokens=2))
    assert response.truncated


async def test_consecutive_same_role_messages_are_merged(
    claude: AnthropicMessages, fake: FakeProvider
) -> None:
    req = ChatRequest(
        model="claude-3-5-haiku-latest",
        system="",
        messages=(Message(role="user", content="one"), Message(role="user", content="two")),
        max_tokens=20,
    )
    await claude.complete(req)
    body = fake.stats()["bodies"][0]
    assert body["messages"] == [{"role": "user", "content": "one\n\ntwo"}]
    assert "system" not in body


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ({"kind": "529"}, TransientError, 529),
        ({"kind": "500"}, TransientError, 500),
        ({"kind": "429", "retry_after": 0.25}, RateLimited, 429),
        ({"kind": "401", "message": f"invalid x-api-key {FAKE_KEY}"}, AccountRefused, 401),
        ({"kind": "404"}, ProviderRefused, 404),
        (
            {"kind": "400", "message": "prompt is too long: 210000 tokens > 200000 maximum"},
            ContextTooLong,
            400,
        ),
    ],
)
async def test_errors_are_classified_and_never_show_the_key(
    claude: AnthropicMessages,
    fake: FakeProvider,
    fault: dict[str, object],
    error: type[Exception],
    status: int,
) -> None:
    fake.add_faults({**fault, "path": "anthropic"})
    with pytest.raises(error) as caught:
        await claude.complete(request())
    exc = caught.value
    assert type(exc) is error
    assert getattr(exc, "status", None) == status
    assert str(exc).startswith("claude HTTP")
    assert FAKE_KEY not in str(exc)
    if error is RateLimited:
        assert getattr(exc, "retry_after_s", None) == pytest.approx(0.25)


async def test_connection_refused_is_transient() -> None:
    config = ProviderConfig(
        name="down", kind="anthropic", base_url="http://127.0.0.1:9", api_key="k"
    )
    client = AnthropicMessages(config)
    try:
        with pytest.raises(TransientError, match="down: connection failed"):
            await client.complete(request())
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            429,
            b'{"error": {"message": "You exceeded your quota", "code": "insufficient_quota"}}',
            AccountRefused,
        ),
        (
            400,
            b'{"type": "error", "error": {"type": "invalid_request_error", '
            b'"message": "Your credit balance is too low"}}',
            AccountRefused,
        ),
        (
            403,
            b'{"type": "error", "error": {"type": "permission_error", "message": "no"}}',
            AccountRefused,
        ),
        (
            400,
            b'{"error": {"message": "This model\'s maximum context length is 128000 tokens", '
            b'"code": "context_length_exceeded"}}',
            ContextTooLong,
        ),
        (
            429,
            b'[{"error": {"code": 429, "message": "Quota exceeded for metric", '
            b'"status": "RESOURCE_EXHAUSTED"}}]',
            RateLimited,
        ),
        (408, b"", TransientError),
        (409, b"", TransientError),
        (400, b'{"error": {"message": "bad"}}', ProviderRefused),
    ],
)
def test_classification_of_provider_error_bodies(
    status: int, body: bytes, error: type[Exception]
) -> None:
    message, code = error_fields(body, "Reason")
    exc = classify_http("p", status, message, code, {})
    assert type(exc) is error


def test_gemini_error_body_in_a_list_is_read() -> None:
    body = (
        b'[{"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}]'
    )
    assert error_fields(body, "Bad Request") == ("API key not valid", "400 INVALID_ARGUMENT")


def test_anthropic_and_gemini_are_configured_from_sdk_variables() -> None:
    settings = load_settings(
        env={
            "ANTHROPIC_API_KEY": "sk-ant-xyz",
            "ANTHROPIC_BASE_URL": "http://proxy.local",
            "GEMINI_API_KEY": "AIzaFAKE",
        }
    )
    by_name = {p.name: p for p in settings.providers}
    assert by_name["anthropic"].kind == "anthropic"
    assert by_name["anthropic"].base_url == "http://proxy.local"
    assert by_name["anthropic"].serves("claude-sonnet-4-0")
    gemini = by_name["gemini"]
    assert gemini.kind == "openai"
    assert gemini.base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert gemini.serves("gemini-2.5-flash") and not gemini.serves("gpt-4o")
    kinds = {type(p) for p in build_providers(settings)}
    assert kinds == {AnthropicMessages, OpenAICompatible}


async def test_rate_limit_headers_reach_the_response() -> None:
    def answer(req: httpx.Request) -> httpx.Response:
        doc = {
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1},
        }
        headers = {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "request-id": "r1",
        }
        return httpx.Response(200, json=doc, headers=headers)

    config = ProviderConfig(name="c", kind="anthropic", base_url="http://x", api_key="k")
    client = AnthropicMessages(config, transport=httpx.MockTransport(answer))
    try:
        response = await client.complete(request())
    finally:
        await client.aclose()
    assert response.rate_headers == {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
    }


def test_retry_after_forms() -> None:
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "3"}) == 3.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after_s({"retry-after": soon}) or 0) <= 31
    assert retry_after_s({}, "Rate limit reached. Please try again in 1.5s.") == 1.5
    assert retry_after_s({}, "Please try again in 20ms") == pytest.approx(0.02)
    assert retry_after_s({"retry-after": "soon"}) is None
