"""The wire format of a semantic-cache verification: "do these two requests ask the same thing?".

A grey-zone candidate (similar, but not similar enough to serve unasked) is checked by a small
model. Many checks travel in one call: the pairs go as one JSON document in the user message
(JSON escaping keeps a prompt from forging another pair), the answer is a JSON object of
"yes"/"no" keyed by the numbers that were sent. Anything but a clear "yes" is a "no": a wrong
answer from the cache costs the user more than a paid call.

This module has no dependencies on the rest of the pipeline, so providers (the simulated one)
can answer the format without importing the cache.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import orjson

VERIFY_SYSTEM = (
    "You check whether two requests to an assistant ask exactly the same thing, so that one "
    "answer serves both. Any difference in numbers, amounts, dates, names, products, places, "
    "relations (within/after, before/after, over/under, at least/at most), actions (add/remove, "
    "enable/disable), direction (A to B vs B to A), negation or language means they differ. "
    'The user message is JSON {"pairs": {"<n>": ["request A", "request B"], ...}}. Reply with '
    'JSON only, one answer per pair: {"<n>": "yes" or "no", ...}.'
)
_OBJECT = re.compile(r"\{.*\}", re.S)
_WORD = re.compile(r"\w+")


def verify_prompt(pairs: Sequence[tuple[str, str]]) -> str:
    """The user message asking about `pairs`, numbered from 1."""
    doc = {"pairs": {str(i): [a, b] for i, (a, b) in enumerate(pairs, 1)}}
    return orjson.dumps(doc).decode()


def read_verdicts(text: str, count: int) -> list[bool]:
    """The model's answers for `count` pairs: True only for an exact "yes" (any case, trimmed)."""
    found = _OBJECT.search(text)
    doc = None
    if found:
        try:
            doc = orjson.loads(found[0])
        except orjson.JSONDecodeError:
            doc = None
    if not isinstance(doc, dict):
        return [False] * count
    return [
        isinstance(doc.get(str(i)), str) and doc[str(i)].strip().lower() == "yes"
        for i in range(1, count + 1)
    ]


def asked_pairs(system: str, content: str) -> list[tuple[str, str]] | None:
    """The pairs of a verification request, or None when this is not one."""
    if not system.startswith(VERIFY_SYSTEM[:60]):
        return None
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    pairs = doc.get("pairs") if isinstance(doc, dict) else None
    if not isinstance(pairs, dict):
        return None
    return [(str(p[0]), str(p[1])) for p in pairs.values() if isinstance(p, list) and len(p) == 2]


def offline_verdicts(content: str) -> str:
    """The simulated provider's answer: "yes" only when both requests are the same words.

    Offline there is no model to judge a paraphrase, so nothing that differs is confirmed and
    no wrong answer can be served from the cache.
    """
    pairs = asked_pairs(VERIFY_SYSTEM, content) or []
    return orjson.dumps(
        {str(i): "yes" if _words(a) == _words(b) else "no" for i, (a, b) in enumerate(pairs, 1)}
    ).decode()


def _words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())
