from __future__ import annotations

import logging

import pytest

from pipeline.costs.usage import from_anthropic, from_openai
from pipeline.models import Usage


def test_openai_chat_counts_cached_tokens_inside_the_prompt() -> None:
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert from_openai(usage) == Usage(
        input_tokens=2006, cached_input_tokens=1920, cache_write_tokens=0, output_tokens=300
    )


def test_openai_batch_api_result_line_uses_the_chat_usage_shape() -> None:
    line = {
        "id": "batch_req_1",
        "custom_id": "task-7",
        "response": {
            "status_code": 200,
            "body": {
                "model": "gpt-4o-mini-2024-07-18",
                "usage": {
                    "prompt_tokens": 1200,
                    "completion_tokens": 80,
                    "prompt_tokens_details": {"cached_tokens": 1024},
                },
            },
        },
    }
    assert from_openai(line["response"]["body"]["usage"]) == Usage(
        input_tokens=1200, cached_input_tokens=1024, output_tokens=80
    )


def test_openai_responses_style_keys() -> None:
    usage = {
        "input_tokens": 5000,
        "input_tokens_details": {"cached_tokens": 4096},
        "output_tokens": 120,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 5120,
    }
    assert from_openai(usage) == Usage(
        input_tokens=5000, cached_input_tokens=4096, output_tokens=120
    )


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, Usage()),
        ({}, Usage()),
        ({"prompt_tokens": 10, "completion_tokens": 2}, Usage(input_tokens=10, output_tokens=2)),
        (
            {"prompt_tokens": 10, "completion_tokens": None, "prompt_tokens_details": None},
            Usage(input_tokens=10),
        ),
        (
            {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": None}},
            Usage(input_tokens=10),
        ),
        ({"completion_tokens": 7}, Usage(output_tokens=7)),
        ({"input_tokens": None, "output_tokens": 3}, Usage(output_tokens=3)),
        (
            {"prompt_tokens": 12.0, "completion_tokens": "4"},
            Usage(input_tokens=12, output_tokens=4),
        ),
    ],
)
def test_openai_missing_and_none_fields_count_as_zero(
    usage: dict[str, object] | None, expected: Usage
) -> None:
    assert from_openai(usage) == expected


def test_openai_cached_never_exceeds_the_prompt() -> None:
    usage = {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 128}}
    assert from_openai(usage).cached_input_tokens == 100


def test_unreadable_count_is_logged_and_taken_as_zero(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="batchwise.usage"):
        usage = from_openai({"prompt_tokens": "lots", "completion_tokens": -5})
    assert usage == Usage()
    messages = [r.getMessage() for r in caplog.records if r.name == "batchwise.usage"]
    assert len(messages) == 2
    assert "'prompt_tokens'" in messages[0] and "'lots'" in messages[0]
    assert "negative" in messages[1]


def test_anthropic_adds_cache_reads_and_writes_to_the_prompt() -> None:
    usage = {
        "input_tokens": 50,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 2000,
        "output_tokens": 200,
    }
    assert from_anthropic(usage) == Usage(
        input_tokens=3050, cached_input_tokens=2000, cache_write_tokens=1000, output_tokens=200
    )


def test_anthropic_null_cache_fields() -> None:
    usage = {
        "input_tokens": 25,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": None,
        "output_tokens": 9,
        "service_tier": "batch",
    }
    assert from_anthropic(usage) == Usage(input_tokens=25, output_tokens=9)


def test_anthropic_cache_creation_breakdown_alone_is_summed() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 200},
        "output_tokens": 1,
    }
    assert from_anthropic(usage) == Usage(input_tokens=510, cache_write_tokens=500, output_tokens=1)


def test_anthropic_total_cache_creation_wins_over_its_breakdown() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 500,
        "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 200},
        "output_tokens": 1,
    }
    assert from_anthropic(usage).cache_write_tokens == 500
    assert from_anthropic(usage).input_tokens == 510


@pytest.mark.parametrize("usage", [None, {}])
def test_anthropic_empty(usage: dict[str, object] | None) -> None:
    assert from_anthropic(usage) == Usage()
