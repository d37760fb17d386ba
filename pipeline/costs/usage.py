"""Provider usage reports, normalised to one `Usage` meaning.

Providers count prompt-cache tokens differently. OpenAI counts cached tokens inside
`prompt_tokens`; Anthropic reports `input_tokens` without cache reads and writes and lists those
apart. `Usage.input_tokens` always counts every prompt token, and `cached_input_tokens` and
`cache_write_tokens` are the parts of it read from and written to the prompt cache.

A usage block that cannot be read never fails a call that was already paid for: an unreadable
count is logged and taken as 0, and a part is never allowed to exceed the whole.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from pipeline.models import Usage

__all__ = ["from_anthropic", "from_openai"]

logger = logging.getLogger("batchwise.usage")


def from_openai(usage: Mapping[str, Any] | None) -> Usage:
    """Normalise an OpenAI usage block: Chat Completions, Batch API or Responses style.

    Chat Completions (and Batch API result lines) report `prompt_tokens`, `completion_tokens` and
    `prompt_tokens_details.cached_tokens`; the Responses API reports `input_tokens`,
    `output_tokens` and `input_tokens_details.cached_tokens`. Cached tokens are already counted in
    the prompt tokens, and OpenAI does not bill cache writes.
    """
    if not usage:
        return Usage()
    chat_style = "prompt_tokens" in usage or "completion_tokens" in usage
    prefix = "prompt" if chat_style else "input"
    output_key = "completion_tokens" if chat_style else "output_tokens"
    input_tokens = _count(usage, f"{prefix}_tokens")
    cached = _count(_mapping(usage.get(f"{prefix}_tokens_details")), "cached_tokens")
    return Usage(
        input_tokens=input_tokens,
        cached_input_tokens=min(cached, input_tokens),
        cache_write_tokens=0,
        output_tokens=_count(usage, output_key),
    )


def from_anthropic(usage: Mapping[str, Any] | None) -> Usage:
    """Normalise an Anthropic Messages (or Message Batches) usage block.

    Anthropic's `input_tokens` excludes `cache_read_input_tokens` and
    `cache_creation_input_tokens`, so the total prompt is their sum. When only the per-TTL
    `cache_creation` breakdown is present, its parts are summed.
    """
    if not usage:
        return Usage()
    cache_read = _count(usage, "cache_read_input_tokens")
    if usage.get("cache_creation_input_tokens") is not None:
        cache_write = _count(usage, "cache_creation_input_tokens")
    else:
        breakdown = _mapping(usage.get("cache_creation"))
        cache_write = sum(_count(breakdown, key) for key in breakdown)
    return Usage(
        input_tokens=_count(usage, "input_tokens") + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=_count(usage, "output_tokens"),
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _count(block: Mapping[str, Any], key: str) -> int:
    """A token count from `block[key]`: missing or None is 0; anything unreadable is logged as 0."""
    value = block.get(key)
    if value is None:
        return 0
    readable = (
        (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and math.isfinite(value))
        or (isinstance(value, str) and value.strip().isdigit())
    )
    if readable:
        count = int(value)
    else:
        logger.warning("usage field %r has an unreadable value %r; counted as 0", key, value)
        return 0
    if count < 0:
        logger.warning("usage field %r is negative (%d); counted as 0", key, count)
        return 0
    return count
