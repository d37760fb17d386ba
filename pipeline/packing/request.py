"""What a group's task becomes: its pending item, its group's meta, and the provider request
for a batch of items (alone, or packed in the wire format)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from pipeline.fingerprint import group_key, item_key
from pipeline.models import Batch, Item, Message, Task
from pipeline.packing.wire import (
    ITEM_OVERHEAD_TOKENS,
    PACK_INSTRUCTIONS,
    SCHEMA_INSTRUCTIONS,
    WRAPPER_OUTPUT_TOKENS,
    encode_items,
)
from pipeline.providers.base import ChatRequest
from pipeline.tokens import count_messages, count_tokens


def group_meta(task: Task) -> dict[str, Any]:
    return {
        "tenant": task.tenant,
        "model": task.model,
        "system": task.system,
        "temperature": task.temperature,
        "response_schema": task.response_schema,
        "ttl_class": task.ttl_class.value,
        "task_type": task.task_type,
        "batch_api": task.batch_api,
    }


def build_item(task: Task) -> Item:
    prompt = task.prompt
    return Item(
        key=item_key(task),
        group=group_key(task),
        prompt=prompt,
        messages=task.messages,
        max_tokens=task.max_tokens,
        input_tokens=sum(count_tokens(m.content) for m in task.messages) + ITEM_OVERHEAD_TOKENS,
        task_type=task.task_type,
        user_id=task.user_id,
        endpoint=task.endpoint,
        requested_model=task.requested_model,
    )


def build_messages(batch: Batch, items: Sequence[Item]) -> tuple[str, list[Message], bool]:
    """The request for a batch: (system prompt, messages, packed?).

    A batch of one is sent as its task's own messages. A packed batch carries the group's system
    prompt first (byte-identical for every batch of the group, so provider prompt caches reuse it),
    then the packing instructions, and one user message holding the items as JSON.
    """
    if len(items) == 1:
        return batch.system, list(items[0].messages), False
    instructions = PACK_INSTRUCTIONS
    if batch.response_schema is not None:
        schema = orjson.dumps(batch.response_schema, option=orjson.OPT_SORT_KEYS).decode()
        instructions = f"{instructions} {SCHEMA_INSTRUCTIONS}{schema}"
    system = f"{batch.system}\n\n{instructions}" if batch.system else instructions
    content = encode_items([item.prompt for item in items])
    return system, [Message(role="user", content=content)], True


def build_request(
    batch: Batch, items: Sequence[Item], *, cache_min_tokens: int
) -> tuple[ChatRequest, bool]:
    """The provider request for a batch of these items, and whether it is packed. A shared
    system block of at least `cache_min_tokens` is marked for the provider's prompt cache."""
    system, messages, packed = build_messages(batch, items)
    request = ChatRequest(
        model=batch.model,
        system=system,
        messages=tuple(messages),
        max_tokens=output_cap(items),
        temperature=batch.temperature,
        json_mode=packed or batch.response_schema is not None,
        response_schema=batch.response_schema,
        cache_prefix=count_tokens(system) >= cache_min_tokens,
    )
    return request, packed


def output_cap(items: Sequence[Item]) -> int:
    """The call's max_tokens: every item's cap plus the JSON around each answer."""
    if len(items) == 1:
        return items[0].max_tokens
    return sum(i.max_tokens + ITEM_OVERHEAD_TOKENS for i in items) + WRAPPER_OUTPUT_TOKENS


def naive_input_tokens(system: str, item: Item) -> int:
    """Prompt tokens the item's task would use sent alone: the baseline for savings."""
    return count_messages(system, [m.content for m in item.messages])
