"""Does packing a group pay? Packing saves the repeated system prompt and costs JSON scaffolding.

Sending n tasks alone repeats the system prompt n times; one packed call sends it once, plus the
packing instructions, and wraps every item in JSON on the way in and on the way out. Output
tokens cost several times input tokens, so for a short system prompt and short answers (labels,
yes/no) the wrapper can cost more than the prompt it saves. The packer asks `packing_pays` before
it takes a batch and sends such a group's tasks alone (setting `pack_only_when_cheaper`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from .packer import (
    ITEM_OVERHEAD_TOKENS,
    PACK_INSTRUCTIONS,
    SCHEMA_INSTRUCTIONS,
    WRAPPER_OUTPUT_TOKENS,
)
from .prices import PriceTable
from .tokens import TOKENS_PER_MESSAGE, TOKENS_PER_REQUEST, count_tokens


def packing_gain_usd(meta: dict[str, Any], n: int, prices: PriceTable) -> Decimal | None:
    """What packing `n` items of a group saves against sending them alone (negative: costs more).

    None when the model's price is unknown. `meta` is the group's shared fields (system, model,
    response schema), as the packer stores them.
    """
    price = prices.model_price(meta["model"])
    if price is None or n < 2:
        return None
    system = meta.get("system") or ""
    shared = TOKENS_PER_REQUEST + (count_tokens(system) + TOKENS_PER_MESSAGE if system else 0)
    instructions = count_tokens(PACK_INSTRUCTIONS) + TOKENS_PER_MESSAGE + 2
    if meta.get("response_schema") is not None:
        schema = orjson.dumps(meta["response_schema"], option=orjson.OPT_SORT_KEYS).decode()
        instructions += count_tokens(f" {SCHEMA_INSTRUCTIONS}{schema}")
    alone_input = n * shared
    packed_input = shared + instructions + n * (ITEM_OVERHEAD_TOKENS - TOKENS_PER_MESSAGE)
    extra_output = n * ITEM_OVERHEAD_TOKENS + WRAPPER_OUTPUT_TOKENS
    saved = Decimal(alone_input - packed_input) * price.input - extra_output * price.output
    return saved / Decimal(1_000_000)


def packing_pays(meta: dict[str, Any], n: int, prices: PriceTable) -> bool:
    """True when packing `n` items is expected to cost less than sending them alone.

    An unpriced model packs (the token count falls); a single item never does.
    """
    if n < 2:
        return False
    gain = packing_gain_usd(meta, n, prices)
    return gain is None or gain > 0
