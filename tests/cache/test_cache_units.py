"""Cache units: TTL classes inferred from task type and keywords (English, Japanese), adaptive
TTL, and the in-process semantic index."""

from __future__ import annotations

import pytest

from pipeline.cache.ttl import TTLPolicy, infer_ttl_class
from pipeline.core.intake import validate
from pipeline.models import TTL_SECONDS, Task, TTLClass

DAY = 86400


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("What is the weather today?", TTLClass.real_time),
        ("Show me the latest exchange rate", TTLClass.real_time),
        ("What is the current price of gold?", TTLClass.real_time),
        ("今日の天気は？", TTLClass.real_time),
        ("現在の為替レートを教えて", TTLClass.real_time),
        ("最新のニュースは？", TTLClass.real_time),
        ("リアルタイムの株価", TTLClass.real_time),
        ("What is photosynthesis?", TTLClass.static_knowledge),
        ("Give me the definition of entropy", TTLClass.static_knowledge),
        ("光合成とは何ですか", TTLClass.static_knowledge),
        ("エントロピーの定義を教えて", TTLClass.static_knowledge),
        ("日本の歴史の概要", TTLClass.static_knowledge),
        ("プログラミングの基本", TTLClass.static_knowledge),
        ("Write a haiku about autumn", TTLClass.semi_static),
        ("おすすめのレストランを教えて", TTLClass.semi_static),
    ],
)
def test_keywords_pick_the_class_of_a_question(prompt: str, expected: TTLClass) -> None:
    assert infer_ttl_class("general", prompt) is expected


def test_answers_bound_to_their_input_never_go_stale() -> None:
    for task_type in ("classification", "sentiment", "extraction", "translation", "summary"):
        assert infer_ttl_class(task_type, "Today's latest news: ...") is TTLClass.static_knowledge


def test_intake_infers_the_class_only_when_the_task_names_none() -> None:
    def parsed(**fields: object) -> Task:
        task = validate(fields, 1, set(), source="t")
        assert isinstance(task, Task)
        return task

    assert parsed(prompt="What's the latest score?").ttl_class is TTLClass.real_time
    named = parsed(prompt="What's the latest score?", ttl_class="semi_static")
    assert named.ttl_class is TTLClass.semi_static


def test_adaptive_ttl_grows_with_hits_and_stops_at_the_class_bound() -> None:
    policy = TTLPolicy.for_task(TTLClass.semi_static, None, adaptive=True)
    assert policy.base_s == TTL_SECONDS[TTLClass.semi_static]
    assert policy.remaining_s(age_s=0, hits=0) == 7 * DAY
    assert policy.remaining_s(age_s=DAY, hits=1) == int(10.5 * DAY) - DAY
    assert policy.remaining_s(age_s=0, hits=50) == 14 * DAY
    assert policy.remaining_s(age_s=15 * DAY, hits=50) == 0


def test_explicit_ttl_and_real_time_do_not_grow_and_no_cache_is_not_cached() -> None:
    assert (
        TTLPolicy.for_task(TTLClass.semi_static, 60, adaptive=True).remaining_s(age_s=0, hits=9)
        == 60
    )
    real_time = TTLPolicy.for_task(TTLClass.real_time, None, adaptive=True)
    assert real_time.remaining_s(age_s=0, hits=9) == 300
    assert not TTLPolicy.for_task(TTLClass.no_cache, 600, adaptive=True).cacheable
    assert not TTLPolicy.for_task(TTLClass.semi_static, 0, adaptive=True).cacheable
    fixed = TTLPolicy.for_task(TTLClass.static_knowledge, None, adaptive=False)
    assert fixed.remaining_s(age_s=0, hits=9) == 30 * DAY


# the in-process semantic index


def test_index_returns_the_best_rows_above_the_threshold_best_first() -> None:
    import numpy as np

    from pipeline.cache.bruteforce import ScopeIndex
    from pipeline.cache.vectors import CANDIDATES

    index = ScopeIndex(dim=3)
    rows = np.eye(3, dtype=np.float32)
    for i in range(100):  # grows past its first capacity
        index.add(f"k{i}", rows[i % 3], f"text {i}")
    query = np.array([[0.8, 0.6, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]], dtype=np.float32)
    first, second, none = index.best(query, [0.75, 0.75, 0.75])
    assert len(first) == CANDIDATES and all(
        index.keys[r] in {f"k{i}" for i in range(0, 100, 3)} for _s, r in first
    )
    assert [s for s, _r in first] == sorted((s for s, _r in first), reverse=True)
    assert all(
        index.keys[r].startswith("k") and int(index.keys[r][1:]) % 3 == 2 for _s, r in second
    )
    assert none == []
    index.keep_last(2)
    assert index.keys == ["k98", "k99"]
    assert [index.keys[r] for _s, r in index.best(query[1:2], [0.75])[0]] == ["k98"]
