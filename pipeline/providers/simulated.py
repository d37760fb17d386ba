"""The simulated provider: deterministic answers with realistic token counts, no network.

It answers when no real provider is configured, so `batchwise run` works on a fresh machine. Every
result and summary it touches is labelled "simulated": its costs are what the named model *would*
have cost, never real spend.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson

from pipeline.cache.verdicts import asked_pairs, offline_verdicts
from pipeline.models import Usage
from pipeline.packing.wire import (
    ITEM_OVERHEAD_TOKENS,
    WRAPPER_OUTPUT_TOKENS,
    decode_items,
    encode_answers,
)
from pipeline.providers.base import ChatRequest, ChatResponse
from pipeline.tokens import count_messages, count_tokens

_WORDS = (
    "the order ships within two business days and you can track it from your account page "
    "refunds are issued to the original payment method once the item is received our team "
    "reviews every request and replies by email with the next steps for your case"
).split()
_LABELS = ("positive", "negative", "neutral")


def simulated_answer(text: str, max_tokens: int) -> str:
    """A deterministic answer for `text` of about 60% of `max_tokens`."""
    digest = hashlib.sha256(text.encode()).digest()
    if max_tokens <= 10:
        return _LABELS[digest[0] % len(_LABELS)]
    target = max(4, int(max_tokens * 0.6))
    words = [f"[simulated {digest[:3].hex()}]"]
    # o200k splits before each space-led word, so the counts add up word by word: linear time
    tokens = count_tokens(words[0])
    i = digest[1]
    while tokens < target:
        word = _WORDS[i % len(_WORDS)]
        words.append(word)
        tokens += count_tokens(" " + word)
        i += 7
    return " ".join(words)


class SimulatedProvider:
    """Serves every model name; answers packed and plain requests alike."""

    name = "simulated"
    simulated = True

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.calls = 0

    def serves(self, model: str) -> bool:
        return True

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        last = request.messages[-1].content
        items = decode_items(request.system, last)
        schema = request.response_schema
        if asked_pairs(request.system, last) is not None:
            text = offline_verdicts(last)
        elif items is None:
            text = simulated_answer(last, request.max_tokens)
            if schema is not None:
                text = orjson.dumps(schema_instance(schema, text)).decode()
        else:
            per_item = (request.max_tokens - WRAPPER_OUTPUT_TOKENS) // len(items)
            answers: dict[str, Any] = {}
            for item_id, prompt in items.items():
                answer: Any = simulated_answer(prompt, max(1, per_item - ITEM_OVERHEAD_TOKENS))
                answers[item_id] = answer if schema is None else schema_instance(schema, answer)
            text = encode_answers(answers)
        usage = Usage(
            input_tokens=count_messages(request.system, [m.content for m in request.messages]),
            output_tokens=count_tokens(text),
        )
        return ChatResponse(
            text=text,
            usage=usage,
            truncated=False,
            provider=self.name,
            model=request.model,
            latency_ms=int(self.latency_s * 1000),
            simulated=True,
        )

    async def aclose(self) -> None:
        return None


def schema_instance(schema: dict[str, Any], text: str) -> Any:
    """A small value that conforms to a JSON Schema's types, filled from `text`."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: schema_instance(sub, text) for name, sub in props.items()}
    if kind == "array":
        return [schema_instance(schema.get("items") or {}, text)]
    if kind in ("integer", "number"):
        return len(text) % 100
    if kind == "boolean":
        return len(text) % 2 == 0
    return text[:40]
