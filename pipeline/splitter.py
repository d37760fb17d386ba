"""Splitting a packed answer back into per-item outputs, checked against the ids that were sent.

The model's text may be the object `{"results": [...]}`, a bare array, either inside a fenced
block, or JSON with prose around it. Each result must carry an id that was sent. An id that is
missing, unknown, or present twice with different outputs yields no output: the item is retried.
An output is only ever given to the id it was returned under.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_decoder = json.JSONDecoder()


@dataclass
class Split:
    """Outputs by sent id, and a reason for every sent id that got none."""

    outputs: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    unknown_ids: list[str] = field(default_factory=list)


def _candidates(text: str) -> list[Any]:
    """Every JSON value the text plausibly holds, most likely first."""
    found: list[Any] = []
    stripped = text.strip()
    try:
        found.append(json.loads(stripped))
        return found
    except ValueError:
        pass
    for block in _FENCE.findall(text):
        try:
            found.append(json.loads(block.strip()))
        except ValueError:
            continue
    if found:
        return found
    for start, char in enumerate(text):
        if char in "{[":
            try:
                value, _ = _decoder.raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(value, dict | list) and value:
                found.append(value)
                break
    return found


def _result_list(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("results"), list):
            return list(value["results"])
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(value) == 1 and len(lists) == 1:
            return lists[0]
    return None


def split(text: str, sent_ids: Sequence[str], *, truncated: bool = False) -> Split:
    """Assign outputs in `text` to `sent_ids`. Never gives an output to an id it was not under."""
    result = Split()
    sent = set(sent_ids)
    entries: list[Any] | None = None
    for candidate in _candidates(text):
        entries = _result_list(candidate)
        if entries is not None:
            break
    if entries is None:
        reason = "answer truncated at the output limit" if truncated else "no JSON results found"
        result.failures = dict.fromkeys(sent_ids, reason)
        return result

    seen: dict[str, Any] = {}
    conflicted: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry or "output" not in entry:
            continue
        raw_id = entry["id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            continue
        item_id = str(raw_id)
        if item_id not in sent:
            result.unknown_ids.append(item_id)
            continue
        output = entry["output"]
        if item_id in seen and seen[item_id] != output:
            conflicted.add(item_id)
        seen.setdefault(item_id, output)

    for item_id in sent_ids:
        if item_id in conflicted:
            result.failures[item_id] = "returned twice with different outputs"
        elif item_id in seen:
            result.outputs[item_id] = seen[item_id]
        else:
            result.failures[item_id] = "missing from the answer" + (
                " (truncated at the output limit)" if truncated else ""
            )
    return result


def parse_single(text: str, *, want_json: bool) -> tuple[bool, Any, str]:
    """A batch of one: (ok, output, reason). Plain text passes as is; a schema task needs JSON."""
    if not want_json:
        return True, text, ""
    for candidate in _candidates(text):
        return True, candidate, ""
    return False, None, "answer is not valid JSON"


def enforce_schema(outcome: Split, schema: dict[str, Any] | None) -> Split:
    """Move outputs whose JSON type differs from the schema's into the failures."""
    if schema is None:
        return outcome
    for item_id, value in list(outcome.outputs.items()):
        if not matches_schema_type(value, schema):
            del outcome.outputs[item_id]
            outcome.failures[item_id] = f"output is not of the schema's type {schema.get('type')!r}"
    return outcome


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def matches_schema_type(value: Any, schema: dict[str, Any]) -> bool:
    """Whether `value` has the JSON type the schema's top level asks for (no deeper check)."""
    kinds = schema.get("type")
    if kinds is None:
        return True
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    for name in names:
        allowed = _JSON_TYPES.get(name)
        if allowed is None:
            return True
        if isinstance(value, bool) and name in ("integer", "number"):
            continue
        if isinstance(value, allowed):
            return True
    return False
