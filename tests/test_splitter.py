"""The splitter: tolerant parsing, and no output ever given to an id it was not returned under."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.splitter import parse_single, split

IDS = ["1", "2", "3"]


def results(*pairs: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"id": i, "output": o} for i, o in pairs]


def test_object_with_results() -> None:
    text = json.dumps({"results": results(("1", "a"), ("2", "b"), ("3", "c"))})
    assert split(text, IDS).outputs == {"1": "a", "2": "b", "3": "c"}


def test_bare_array_fenced_block_and_prose() -> None:
    body = json.dumps(results(("3", "c"), ("1", "a"), ("2", "b")))
    for text in (body, f"Sure!\n```json\n{body}\n```\nDone.", f"Here you go: {body} Hope it helps"):
        assert split(text, IDS).outputs == {"1": "a", "2": "b", "3": "c"}


def test_integer_ids_are_matched_as_strings() -> None:
    text = json.dumps({"results": results((1, "a"), (2, "b"), (3, "c"))})
    assert split(text, IDS).outputs == {"1": "a", "2": "b", "3": "c"}


def test_missing_unknown_and_conflicting_ids_fail_only_those_items() -> None:
    text = json.dumps({"results": results(("1", "a"), ("1", "a2"), ("2", "b"), ("9", "z"))})
    outcome = split(text, IDS)
    assert outcome.outputs == {"2": "b"}
    assert "twice" in outcome.failures["1"]
    assert "missing" in outcome.failures["3"]
    assert outcome.unknown_ids == ["9"]


def test_identical_duplicates_are_accepted_once() -> None:
    text = json.dumps({"results": results(("1", "a"), ("1", "a"), ("2", "b"), ("3", "c"))})
    assert split(text, IDS).outputs == {"1": "a", "2": "b", "3": "c"}


def test_truncated_json_fails_every_item_with_the_reason() -> None:
    text = json.dumps({"results": results(("1", "a"), ("2", "b"), ("3", "c"))})[:-15]
    outcome = split(text, IDS, truncated=True)
    assert outcome.outputs == {}
    assert set(outcome.failures) == set(IDS)
    assert all("truncated" in reason for reason in outcome.failures.values())


def test_malformed_answer_fails_every_item() -> None:
    outcome = split("I'm sorry, I cannot help with that.", IDS)
    assert outcome.outputs == {} and set(outcome.failures) == set(IDS)


def test_single_answers() -> None:
    assert parse_single("plain text", want_json=False) == (True, "plain text", "")
    assert parse_single('```json\n{"a": 1}\n```', want_json=True) == (True, {"a": 1}, "")
    assert parse_single("not json", want_json=True)[0] is False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
entry = (
    st.fixed_dictionaries(
        {"id": st.sampled_from(["1", "2", "3", "4", "x", 1, 2, True, None]), "output": json_values}
    )
    | json_values
)


@given(
    entries=st.lists(entry, max_size=8),
    wrapper=st.sampled_from(["object", "array", "fenced", "prose", "cut"]),
)
def test_no_output_ever_reaches_an_id_it_was_not_returned_under(
    entries: list[Any], wrapper: str
) -> None:
    body = json.dumps({"results": entries} if wrapper == "object" else entries)
    text = {
        "object": body,
        "array": body,
        "fenced": f"```json\n{body}\n```",
        "prose": f"Results: {body} end",
        "cut": body[: len(body) // 2],
    }[wrapper]
    outcome = split(text, IDS)
    assert set(outcome.outputs) | set(outcome.failures) == set(IDS)
    assert not set(outcome.outputs) & set(outcome.failures)
    for item_id, output in outcome.outputs.items():
        returned = [
            e["output"]
            for e in entries
            if isinstance(e, dict)
            and "output" in e
            and not isinstance(e.get("id"), bool)
            and e.get("id") is not None
            and str(e.get("id")) == item_id
        ]
        assert returned, f"{item_id} got an output it was never returned under"
        assert all(r == output for r in returned), "a conflicting duplicate must not pass"
