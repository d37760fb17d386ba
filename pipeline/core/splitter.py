"""Splitting a packed answer back into per-item outputs, checked against the ids that were sent.

The model's text is read as the keyed object of the wire format (`{"1": ..., "2": ...}`, see
`wire.py`), that object under a single key, the older `{"results": [{"id", "output"}]}` or a bare
array of such entries; any of them inside a fenced block or with prose around it. Each output must
be under an id that was sent. An id that is missing, unknown, or present twice with different
outputs yields no output: the item is retried. An output is only ever given to the id it was
returned under.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


@dataclass
class Split:
    """Outputs by sent id, and a reason for every sent id that got none."""

    outputs: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    unknown_ids: list[str] = field(default_factory=list)


class _Reader:
    """Parses JSON and remembers, per object, the keys that appeared twice with different values
    (a plain parse keeps the last one silently, which would hide a conflicting answer)."""

    def __init__(self) -> None:
        self.conflicts: dict[int, set[str]] = {}
        self.decoder = json.JSONDecoder(object_pairs_hook=self._pairs)

    def _pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        twice: set[str] = set()
        for key, value in pairs:
            if key in obj and obj[key] != value:
                twice.add(key)
            obj.setdefault(key, value)
        if twice:
            self.conflicts[id(obj)] = twice
        return obj

    def loads(self, text: str) -> Any:
        value, end = self.decoder.raw_decode(text)
        if text[end:].strip():
            raise ValueError("extra data")
        return value

    def candidates(self, text: str) -> list[Any]:
        """Every JSON value the text plausibly holds, most likely first."""
        found: list[Any] = []
        try:
            found.append(self.loads(text.strip()))
            return found
        except ValueError:
            pass
        for block in _FENCE.findall(text):
            try:
                found.append(self.loads(block.strip()))
            except ValueError:
                continue
        if found:
            return found
        for start in _top_level_starts(text):
            try:
                value, _ = self.decoder.raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(value, dict | list) and value:
                found.append(value)
                break
        return found


def _top_level_starts(text: str) -> list[int]:
    """Where a JSON object or array may start in prose: at a bracket outside every other bracket
    and string. A value cut short leaves the rest of the text nested, so a value inside an answer
    (an output that is itself an object) is never read as the answer."""
    starts: list[int] = []
    depth, in_string, escaped = 0, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = depth > 0  # quotes in prose do not open JSON strings
        elif char in "{[":
            if depth == 0:
                starts.append(i)
            depth += 1
        elif char in "}]":
            depth = max(depth - 1, 0)
    return starts


def _entries(value: Any, sent: set[str], reader: _Reader) -> list[tuple[Any, Any]] | None:
    """(id, output) pairs of an answer in any shape the splitter reads, or None."""
    if isinstance(value, list):
        return [(e["id"], e["output"]) for e in value if _is_entry(e)]
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("results"), list):
        return _entries(value["results"], sent, reader)
    if value and (set(value) & sent or all(k.isdecimal() for k in value)):
        twice = reader.conflicts.get(id(value), set())
        pairs = [(k, v) for k, v in value.items()]
        return pairs + [(k, _Conflict()) for k in twice]
    if len(value) == 1:
        (inner,) = value.values()
        if isinstance(inner, dict | list):
            return _entries(inner, sent, reader)
    return None


def _is_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and "id" in entry and "output" in entry


class _Conflict:
    """Stands for the second, different output of an id that was returned twice."""


def split(text: str, sent_ids: Sequence[str], *, truncated: bool = False) -> Split:
    """Assign outputs in `text` to `sent_ids`. Never gives an output to an id it was not under."""
    result = Split()
    sent = set(sent_ids)
    reader = _Reader()
    entries: list[tuple[Any, Any]] | None = None
    for candidate in reader.candidates(text):
        entries = _entries(candidate, sent, reader)
        if entries is not None:
            break
    if entries is None:
        reason = "answer truncated at the output limit" if truncated else "no JSON results found"
        result.failures = dict.fromkeys(sent_ids, reason)
        return result

    seen: dict[str, Any] = {}
    conflicted: set[str] = set()
    for raw_id, output in entries:
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            continue
        item_id = str(raw_id)
        if item_id not in sent:
            result.unknown_ids.append(item_id)
            continue
        if item_id in seen and (isinstance(output, _Conflict) or seen[item_id] != output):
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
    for candidate in _Reader().candidates(text):
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
