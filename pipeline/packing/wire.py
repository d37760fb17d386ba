"""The packed wire format: several tasks in one prompt, their answers in one reply.

A packed request carries its items as one JSON object keyed by id, `{"1": "...", "2": "..."}`, in
the last user message, and the model answers with the same ids, `{"1": <answer>, "2": <answer>}`.
Ids are short decimal strings, so an item costs about three tokens of JSON on the way in and as
many on the way out (the older `{"items": [{"id": .., "input": ..}]}` shape costs about nine each
way). JSON escaping means a task's text can never forge a boundary between items, and answers are
joined on ids, never on order (see `splitter.py`, which also reads the older shapes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

PACK_INSTRUCTIONS = (
    "The user message is a JSON object of separate requests keyed by id. Answer each as if it "
    "were sent alone, following the instructions above. Reply with only a JSON object mapping "
    "each id to its answer."
)
SCHEMA_INSTRUCTIONS = "Each answer must be a JSON value that conforms to this JSON Schema: "

# What the JSON adds, in o200k tokens: per item (`"12":"` and `",`, on the way in and again on
# the way out; an upper bound for budgets, and the mean for cost estimates) and once per answer
# (the braces). bench/wire_format.py measures them.
ITEM_OVERHEAD_TOKENS = 4
ITEM_OVERHEAD_MEAN_TOKENS = 3
WRAPPER_OUTPUT_TOKENS = 2


def item_ids(n: int) -> list[str]:
    """The ids of a packed batch of `n` items, in the order the items were taken."""
    return [str(i + 1) for i in range(n)]


def encode_items(prompts: Sequence[str]) -> str:
    """The user message of a packed request."""
    return orjson.dumps(dict(zip(item_ids(len(prompts)), prompts, strict=True))).decode()


def encode_answers(outputs: dict[str, Any]) -> str:
    """A packed answer, as a model following the instructions writes it."""
    return orjson.dumps(outputs).decode()


def decode_items(system: str, content: str) -> dict[str, str] | None:
    """The items of a packed request (its system prompt and last user message), or None when
    the request is a plain one. Used by the providers that answer without a model."""
    if PACK_INSTRUCTIONS not in system or not content.startswith("{"):
        return None
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not doc:
        return None
    if not all(k.isdecimal() and isinstance(v, str) for k, v in doc.items()):
        return None
    return doc
