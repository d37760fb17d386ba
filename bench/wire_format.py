"""Per-item overhead of the packed wire format, old shape against the keyed one, in o200k tokens.

    python bench/wire_format.py

For each prompt set (the example file's prompts; the simulated provider's answers to them) it
packs batches of 8 and prints what the JSON adds per item on the way in (prompt tokens, billed at
input prices) and on the way out (answer tokens, billed at output prices), plus the packing
instructions each call carries. The old shape is `{"items": [{"id", "input"}]}` answered by
`{"results": [{"id", "output"}]}`; the keyed one is `{"1": ..., "2": ...}` both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from pipeline.packing.wire import (
    ITEM_OVERHEAD_MEAN_TOKENS,
    ITEM_OVERHEAD_TOKENS,
    PACK_INSTRUCTIONS,
    encode_answers,
    encode_items,
)
from pipeline.providers.simulated import simulated_answer
from pipeline.tokens import count_tokens

EXAMPLE = Path(__file__).resolve().parent.parent / "jobs.example.jsonl"
OLD_INSTRUCTIONS = (
    'You will receive a JSON document {"items": [{"id": ..., "input": ...}, ...]}. '
    "Treat each item's input as a separate, independent request and answer it exactly as you "
    "would answer it alone, following the instructions above. Reply with only a JSON object "
    '{"results": [{"id": <the item\'s id>, "output": <your answer>}, ...]} with one result '
    "for every item, each under the id it was given."
)
BATCH = 8


def old_items(texts: Sequence[str]) -> str:
    items = [{"id": str(i + 1), "input": t} for i, t in enumerate(texts)]
    return orjson.dumps({"items": items}).decode()


def old_answers(texts: Sequence[str]) -> str:
    results = [{"id": str(i + 1), "output": t} for i, t in enumerate(texts)]
    return orjson.dumps({"results": results}).decode()


def new_answers(texts: Sequence[str]) -> str:
    return encode_answers({str(i + 1): t for i, t in enumerate(texts)})


def overhead(texts: list[str], wrap: Callable[[Sequence[str]], str]) -> tuple[float, int]:
    """Mean and worst tokens the wrapping adds per item, over batches of BATCH."""
    per_item: list[float] = []
    worst = 0
    for start in range(0, len(texts), BATCH):
        chunk = texts[start : start + BATCH]
        extra = count_tokens(wrap(chunk)) - sum(count_tokens(t) for t in chunk)
        per_item.append(extra / len(chunk))
        for one in chunk:
            worst = max(worst, count_tokens(wrap([one, one])) // 2 - count_tokens(one))
    return sum(per_item) / len(per_item), worst


def prompt_of(line: dict[str, Any]) -> str:
    """A job line's prompt: `prompt`, or the last message (native or OpenAI Batch API line)."""
    messages = line.get("messages") or line.get("body", {}).get("messages") or [{}]
    return str(line.get("prompt") or messages[-1].get("content", ""))


def main() -> int:
    lines = [orjson.loads(line) for line in EXAMPLE.read_text().splitlines() if line.strip()]
    prompts = [prompt_of(line) for line in lines]
    answers = [simulated_answer(p, 60) for p in prompts] + [simulated_answer(p, 5) for p in prompts]
    print(f"per-item overhead in o200k tokens ({len(prompts)} example prompts, batches of {BATCH})")
    print(f"{'':<22}{'old mean':>10}{'old worst':>11}{'new mean':>10}{'new worst':>11}")
    rows = (
        ("request (input)", prompts, old_items, encode_items),
        ("answer (output)", answers, old_answers, new_answers),
    )
    for label, texts, old, new in rows:
        old_mean, old_worst = overhead(texts, old)
        new_mean, new_worst = overhead(texts, new)
        print(f"{label:<22}{old_mean:>10.2f}{old_worst:>11}{new_mean:>10.2f}{new_worst:>11}")
        assert new_worst <= ITEM_OVERHEAD_TOKENS, "wire.ITEM_OVERHEAD_TOKENS is no upper bound"
        assert new_mean <= ITEM_OVERHEAD_MEAN_TOKENS + 0.5, "wire.ITEM_OVERHEAD_MEAN_TOKENS is off"
    old_tokens, new_tokens = count_tokens(OLD_INSTRUCTIONS), count_tokens(PACK_INSTRUCTIONS)
    print(f"{'instructions per call':<22}{old_tokens:>10}{'':>11}{new_tokens:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
