"""Which pending items leave together as one batch: the packer's selection rule, in one place.

A batch takes the group's items in arrival order, up to the task type's max items, while their
input tokens fit the model's input budget and their output caps fit its output budget; the first
item always goes, whatever its size. The pending queue applies the rule inside Redis, atomically
with the take (`TAKE_LOOP`, part of the queue's take script); `batchwise plan` applies the same
rule in Python (`select`). Both get their budgets from `budgets_for`, and a test runs the two on
the same sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from pipeline.config.settings import Settings
from pipeline.keys import Keys
from pipeline.models import Item
from pipeline.packing.wire import ITEM_OVERHEAD_TOKENS, PACK_INSTRUCTIONS, WRAPPER_OUTPUT_TOKENS
from pipeline.tokens import count_tokens

# Packed items fill at most this share of the model's context window: the rest is headroom for
# the provider's tokenizer counting differently from ours, and for the reply's own framing.
CONTEXT_SHARE = 0.8
# The request's framing around the system prompt (role markers, separators), in tokens.
SCAFFOLD_TOKENS = 16

# The selection loop of the take script. Entries are `key|input tokens|output cap`; ARGV[3] and
# ARGV[4] are the input and output budgets. Leaves `taken` (the keys) and `full` (true when the
# group holds more than this batch).
TAKE_LOOP = """
local taken, in_sum, out_sum, full = {}, 0, 0, #entries >= tonumber(ARGV[2])
for _, e in ipairs(entries) do
  local key, tin, tout = string.match(e, '^([^|]+)|(%d+)|(%d+)$')
  tin, tout = tonumber(tin), tonumber(tout)
  if #taken > 0 and (in_sum + tin > tonumber(ARGV[3]) or out_sum + tout > tonumber(ARGV[4])) then
    full = true
    break
  end
  in_sum, out_sum = in_sum + tin, out_sum + tout
  taken[#taken + 1] = key
end
"""


@dataclass(frozen=True)
class Budgets:
    """Token budgets of one packed call: its items' input and their output caps."""

    input_tokens: int
    output_tokens: int


def budgets_for(settings: Settings, model: str, system: str) -> Budgets:
    """The budgets of a batch on `model` whose group's system prompt is `system`."""
    limits = settings.limits_for(model)
    system_tokens = count_tokens(system) + count_tokens(PACK_INSTRUCTIONS) + SCAFFOLD_TOKENS
    return Budgets(
        input_tokens=max(1, int(limits.context_tokens * CONTEXT_SHARE) - system_tokens),
        output_tokens=max(1, limits.output_tokens - WRAPPER_OUTPUT_TOKENS),
    )


def sizes_of(item: Item) -> tuple[int, int]:
    """What the rule weighs of an item: its input tokens and its output cap in a packed reply."""
    return item.input_tokens, item.max_tokens + ITEM_OVERHEAD_TOKENS


def select(sizes: Sequence[tuple[int, int]], max_items: int, budgets: Budgets) -> int:
    """How many of the pending items, given as (input tokens, output cap) in arrival order, the
    next batch takes (`TAKE_LOOP` in Python)."""
    taken = in_sum = out_sum = 0
    for tin, tout in sizes[:max_items]:
        over = in_sum + tin > budgets.input_tokens or out_sum + tout > budgets.output_tokens
        if taken and over:
            break
        in_sum, out_sum, taken = in_sum + tin, out_sum + tout, taken + 1
    return taken


async def batch_limit(redis: Redis, keys: Keys, task_type: str) -> int | None:
    """The task type's maximum batch size as lowered by the packing audit, or None if never
    lowered."""
    raw = await redis.hget(keys.packing_limits(), task_type)
    return None if raw is None else int(raw)
