"""What the fake provider answers: deterministic text, so a test can tell every task's answer.

The answer to a prompt `text` is `expected_output(text)`. A packed prompt `{"1": input, ...}`
(the keyed wire format) is answered with `{"1": expected_output(input), ...}`; the older
`{"items": [{"id", "input"}, ...]}` prompt is answered in its own shape, `{"results": [{"id",
"output"}, ...]}`. A content fault (faults.py) bends the answer the way real models go wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def expected_output(text: str) -> str:
    """The answer the fake gives to a task whose prompt is `text`."""
    return "ans:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def estimate_tokens(text: str) -> int:
    """The fake's token count: a quarter of the UTF-8 length, rounded up."""
    return math.ceil(len(text.encode()) / 4)


def text_of(content: Any) -> str:
    """Text of a message content: a string, or a list of OpenAI parts / Anthropic blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user_text(messages: Any) -> str:
    """The text of the last user message of a request's `messages`, or ""."""
    for m in reversed(messages if isinstance(messages, list) else []):
        if isinstance(m, dict) and m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def packed_items(text: str) -> tuple[list[dict[str, Any]], bool] | None:
    """The items of a packed prompt as `{"id", "input"}` entries, and whether the prompt was in
    the keyed format; None when `text` is a plain prompt."""
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not doc:
        return None
    if all(k.isdecimal() and isinstance(v, str) for k, v in doc.items()):
        return [{"id": k, "input": v} for k, v in doc.items()], True
    items = doc.get("items")
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and "id" in i and "input" in i for i in items
    ):
        return None
    return items, False


def verify_pairs(text: str) -> dict[str, Any] | None:
    """The pairs of a semantic-cache verification (`{"pairs": {"1": [a, b], ...}}`), or None."""
    if not text.startswith('{"pairs"'):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    pairs = doc.get("pairs") if isinstance(doc, dict) else None
    return pairs if isinstance(pairs, dict) else None


def _input_text(item: dict[str, Any]) -> str:
    value = item["input"]
    return value if isinstance(value, str) else json.dumps(value)


def _unknown_id(ids: list[Any]) -> str:
    taken = {str(i) for i in ids}
    candidate = "999999"
    while candidate in taken:
        candidate += "9"
    return candidate


def _bent_results(items: list[dict[str, Any]], kind: str | None) -> list[dict[str, Any]]:
    """The `{"id", "output"}` results for packed `items`, bent by a content fault `kind`."""
    results = [{"id": i["id"], "output": expected_output(_input_text(i))} for i in items]
    if kind == "drop" and results:
        results.pop()
    elif kind in ("duplicate_conflict", "duplicate_same") and results:
        twin = dict(results[0])
        if kind == "duplicate_conflict":
            twin["output"] = expected_output(_input_text(items[0]) + "#conflict")
        results.insert(1, twin)
    elif kind == "reorder":
        results.reverse()
    elif kind == "unknown_id":
        ids = [r["id"] for r in results]
        results.append({"id": _unknown_id(ids), "output": expected_output("unknown")})
    elif kind == "wrong_output" and len(results) >= 2:
        results[0]["output"], results[1]["output"] = results[1]["output"], results[0]["output"]
    elif kind == "wrong_output" and results:
        results[0]["output"] = expected_output(_input_text(items[0]) + "#wrong")
    elif kind == "degrade":
        for result, item in zip(results[1:], items[1:], strict=True):
            result["output"] = expected_output(_input_text(item) + "#degraded")
    return results


def packed_answer(items: list[dict[str, Any]], keyed: bool, kind: str | None) -> str:
    """The JSON content answering packed `items`, in the prompt's format, bent by a content
    fault `kind`."""
    results = _bent_results(items, kind)
    if kind == "bare_array":
        return json.dumps(results)
    if keyed and kind != "results_object":  # written by hand: a duplicate id stays in the text
        pairs = (f"{json.dumps(str(r['id']))}: {json.dumps(r['output'])}" for r in results)
        body = "{" + ", ".join(pairs) + "}"
    else:
        body = json.dumps({"results": results})
    if kind == "fenced":
        return f"Sure! Here is the JSON you asked for:\n```json\n{body}\n```\nLet me know."
    if kind == "prose":
        return f"Here are the results: {body} Hope this helps!"
    return body


def plain_answer(text: str, kind: str | None) -> str:
    """The answer to a plain prompt, bent by a content fault `kind`."""
    answer = expected_output(text + "#wrong" if kind == "wrong_output" else text)
    if kind == "fenced":
        return f"Here you go:\n```\n{answer}\n```\nAnything else?"
    if kind == "prose":
        return f"The answer is: {answer} Hope this helps!"
    return answer
