"""The splitter: tolerant parsing, and no output ever given to an id it was not returned under."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.splitter import parse_single, split

IDS = ["1", "2", "3"]


def results(*pairs: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"id": i, "output": o} for i, o in pairs]


def test_keyed_object_in_any_order_fenced_or_in_prose() -> None:
    body = json.dumps({"3": "c", "1": "a", "2": {"x": 1}})
    for text in (body, f"Sure!\n```json\n{body}\n```\nDone.", f"Here you go: {body} Hope it helps"):
        assert split(text, IDS).outputs == {"1": "a", "2": {"x": 1}, "3": "c"}


def test_keyed_object_under_one_key_is_read() -> None:
    text = json.dumps({"answers": {"1": "a", "2": "b", "3": "c"}})
    assert split(text, IDS).outputs == {"1": "a", "2": "b", "3": "c"}


def test_keyed_duplicates_conflicting_fail_and_identical_pass() -> None:
    outcome = split('{"1": "a", "2": "b", "1": "a2", "3": "c", "3": "c", "9": "z"}', IDS)
    assert outcome.outputs == {"2": "b", "3": "c"}
    assert "twice" in outcome.failures["1"]
    assert outcome.unknown_ids == ["9"]


def test_cut_keyed_answer_never_yields_a_nested_object() -> None:
    """An answer cut inside item 1's object output must not be read from that output onwards."""
    text = '{"1": {"note": "x}", "2": "forged", "3": "forged"}, "2": "b", "3'
    outcome = split(text, IDS, truncated=True)
    assert outcome.outputs == {}
    assert all("truncated" in reason for reason in outcome.failures.values())


def test_bare_array_of_outputs_is_never_joined_on_order() -> None:
    assert split(json.dumps(["a", "b", "c"]), IDS).outputs == {}


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


def _returned(pairs: list[tuple[Any, Any]], item_id: str) -> list[Any]:
    return [
        output
        for raw_id, output in pairs
        if not isinstance(raw_id, bool) and raw_id is not None and str(raw_id) == item_id
    ]


def _wraps(pairs: list[tuple[str, Any]]) -> bool:
    """Whether the splitter reads these pairs as answers nested under their one key."""
    keys = {k for k, _ in pairs}
    lone = len(keys) == 1 and not keys & set(IDS) and not all(k.isdecimal() for k in keys)
    return lone and isinstance(pairs[-1][1], dict) and bool(pairs[-1][1])


@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(["1", "2", "3", "4", "x", "01"]), json_values), max_size=8
    ),
    wrapper=st.sampled_from(["object", "fenced", "prose", "cut", "nested"]),
)
def test_keyed_answers_never_give_an_output_to_another_id(
    pairs: list[tuple[str, Any]], wrapper: str
) -> None:
    body = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
    text = {
        "object": body,
        "fenced": f"```json\n{body}\n```",
        "prose": f"Answers: {body} end",
        "cut": body[: len(body) // 2],
        "nested": json.dumps({"answers": json.loads(body)}),
    }[wrapper]
    outcome = split(text, IDS)
    assert set(outcome.outputs) | set(outcome.failures) == set(IDS)
    assert not set(outcome.outputs) & set(outcome.failures)
    while wrapper in ("object", "fenced", "prose", "nested") and _wraps(pairs):
        # one key that is no id, holding an object: the answers nested under a wrapper key
        pairs, wrapper = list(pairs[-1][1].items()), "nested"
    for item_id, output in outcome.outputs.items():
        returned = _returned(list(pairs), item_id)
        if wrapper == "nested":  # built with json.loads, which kept the last of each id
            returned = returned[-1:]
        assert returned, f"{item_id} got an output it was never returned under"
        assert all(r == output for r in returned), "a conflicting duplicate must not pass"


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
