"""Does packing a group pay? Packing saves the repeated system prompt and costs JSON scaffolding.

Sending n tasks alone repeats the system prompt n times; one packed call sends it once, plus the
packing instructions, and wraps every item in JSON on the way in and on the way out. The estimate
prices, per group:

- the system prompts packing saves, at the cached-input price when the provider's prompt cache
  would serve the repeated prefix anyway (it is at least `prompt_cache_min_tokens` long);
- the instructions and the per-item JSON (`wire.py`), the answer side at output prices;
- the packing audit's alone re-runs of a share of packed items, each costing what the item costs
  alone, its answer sized as the ledger has seen for this task type and model (else max_tokens).

The packer asks `packing_pays` before it takes a batch and sends the group's tasks alone (one call
per item, through the same executor) when packing is not expected to cost less. A label task
behind a one-line system prompt goes alone; a few-shot rubric shared by many items packs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from redis.asyncio import Redis

from pipeline.costs.prices import PriceTable
from pipeline.keys import Keys
from pipeline.packing.wire import (
    ITEM_OVERHEAD_MEAN_TOKENS,
    ITEM_OVERHEAD_TOKENS,
    PACK_INSTRUCTIONS,
    SCHEMA_INSTRUCTIONS,
    WRAPPER_OUTPUT_TOKENS,
)
from pipeline.tokens import TOKENS_PER_MESSAGE, TOKENS_PER_REQUEST, count_tokens


@dataclass(frozen=True)
class Expected:
    """Tokens an item of the group is expected to use alone: its own prompt, and its answer."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class GainSettings:
    """The settings the estimate reads (see `Settings`)."""

    prompt_cache_min_tokens: int = 1024
    audit_share: float = 0.0


def instruction_tokens(meta: dict[str, Any]) -> int:
    """Tokens the packing instructions add to the group's system prompt."""
    tokens = count_tokens(PACK_INSTRUCTIONS) + 2  # the blank line before them
    if meta.get("response_schema") is not None:
        schema = orjson.dumps(meta["response_schema"], option=orjson.OPT_SORT_KEYS).decode()
        tokens += count_tokens(f" {SCHEMA_INSTRUCTIONS}{schema}")
    return tokens


def packing_gain_usd(
    meta: dict[str, Any],
    n: int,
    prices: PriceTable,
    expected: Expected | None = None,
    gain: GainSettings | None = None,
) -> Decimal | None:
    """What packing `n` items of a group saves against sending them alone (negative: costs more).

    None when the model's price is unknown or `n` < 2. `meta` is the group's shared fields
    (system, model, response schema), as the packer stores them.
    """
    price = prices.model_price(meta["model"])
    if price is None or n < 2:
        return None
    expected = expected or Expected()
    gain = gain or GainSettings()
    cached = price.input if price.cached_input is None else price.cached_input
    system = meta.get("system") or ""
    system_tokens = count_tokens(system) + TOKENS_PER_MESSAGE if system else 0
    instructions = instruction_tokens(meta) + (0 if system else TOKENS_PER_MESSAGE)

    def prefix_price(tokens: int) -> Decimal:
        # providers cache a long repeated prefix: every call after the first reads it cheaply
        return cached if tokens >= max(1, gain.prompt_cache_min_tokens) else price.input

    alone_shared = n * system_tokens * prefix_price(system_tokens)
    packed_shared = (system_tokens + instructions) * prefix_price(system_tokens + instructions)
    # alone, every item is its own user message; packed, they share one and each adds its id
    overhead = ITEM_OVERHEAD_MEAN_TOKENS
    item_input = (n * (overhead - TOKENS_PER_MESSAGE) + TOKENS_PER_MESSAGE) * price.input
    item_output = (n * overhead + WRAPPER_OUTPUT_TOKENS) * price.output
    alone_call = (
        (TOKENS_PER_REQUEST + TOKENS_PER_MESSAGE + expected.input_tokens) * price.input
        + system_tokens * prefix_price(system_tokens)
        + expected.output_tokens * price.output
    )
    audit = Decimal(str(gain.audit_share)) * n * alone_call
    saved = alone_shared - packed_shared - item_input - item_output - audit
    return saved / Decimal(1_000_000)


def packing_pays(
    meta: dict[str, Any],
    n: int,
    prices: PriceTable,
    expected: Expected | None = None,
    gain: GainSettings | None = None,
) -> bool:
    """True when packing `n` items is expected to cost less than sending them alone.

    An unpriced model packs (the token count falls); a single item never does.
    """
    if n < 2:
        return False
    saved = packing_gain_usd(meta, n, prices, expected, gain)
    return saved is None or saved > 0


def _field(task_type: str, model: str) -> str:
    return f"{task_type}\x1f{model}"


async def observe_outputs(
    redis: Redis, keys: Keys, task_type: str, model: str, output_tokens: Sequence[int]
) -> None:
    """Count answered items' output sizes for their task type and model (what `expected`
    reads), in one round trip."""
    if not output_tokens:
        return
    field = _field(task_type, model)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(keys.packing_sizes(), f"{field}:n", len(output_tokens))
        pipe.hincrby(keys.packing_sizes(), f"{field}:out", sum(output_tokens))
        await pipe.execute()


async def expected(
    redis: Redis, keys: Keys, meta: dict[str, Any], entries: Sequence[bytes | str]
) -> Expected:
    """What the group's next items are expected to use: their own prompt tokens and max_tokens
    from the pending entries (`key|input|max output`), the answer size from what the ledger has
    seen for this task type and model once it has seen any."""
    inputs, caps = [], []
    for raw in entries:
        entry = raw.decode() if isinstance(raw, bytes) else raw
        _key, tin, tout = entry.rsplit("|", 2)
        inputs.append(int(tin) - ITEM_OVERHEAD_TOKENS)
        caps.append(int(tout) - ITEM_OVERHEAD_TOKENS)
    if not inputs:
        return Expected()
    field = _field(meta["task_type"], meta["model"])
    n, out = await redis.hmget(keys.packing_sizes(), [f"{field}:n", f"{field}:out"])
    seen = int(n or 0)
    output = int(out) // seen if seen else sum(caps) // len(caps)
    return Expected(input_tokens=sum(inputs) // len(inputs), output_tokens=output)
