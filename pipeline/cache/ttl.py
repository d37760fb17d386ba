"""TTL policy: which class a task's answer belongs to, and how long a cache entry lives.

A task that names no `ttl_class` gets one from its prompt and task type. Tasks whose answer is a
pure function of their input text (classification, sentiment, extraction, translation, summaries)
never go stale: `static_knowledge`. Questions go by keywords, English and Japanese: words about
the present (today, latest, 現在, 最新 ...) make them `real_time`; words about definitions and
history (what is, definition, とは, 定義, 歴史 ...) make them `static_knowledge`; anything else
keeps the task type's default.

Adaptive TTL: an entry starts with its class's TTL and each hit lengthens its life, never past the
class's maximum age (counted from when the answer was produced). An explicit `ttl_s` is taken as
given: no inference, no adaptation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.models import TTL_SECONDS, TTLClass

DAY_S = 86400

# Answers determined by the input text alone: they cannot go stale.
INPUT_BOUND_TYPES = frozenset(
    {"classification", "sentiment", "extraction", "translation", "summary", "long_summary"}
)

TYPE_DEFAULTS: dict[str, TTLClass] = {t: TTLClass.static_knowledge for t in INPUT_BOUND_TYPES}

REAL_TIME_WORDS = re.compile(
    r"\b(?:today|tonight|latest|current|currently|right now|this week|breaking|live score|"
    r"up to date|up-to-date|as of now|at the moment)\b"
    r"|今日|本日|現在|最新|リアルタイム|速報|いま現在",
    re.IGNORECASE,
)
STATIC_WORDS = re.compile(
    r"\b(?:what is|what are|what's|what does .{1,40} mean|definition|define|meaning of|"
    r"history of|explain the concept|basics of|overview of)\b|定義|とは|基本|概要|歴史|意味",
    re.IGNORECASE,
)

# (longest life an entry of the class may reach through hits, in seconds)
MAX_AGE_S: dict[TTLClass, int] = {
    TTLClass.static_knowledge: 90 * DAY_S,
    TTLClass.semi_static: 14 * DAY_S,
    TTLClass.daily_update: DAY_S,  # a daily answer is stale the next day, however popular
    TTLClass.real_time: TTL_SECONDS[TTLClass.real_time],
    TTLClass.no_cache: 0,
}
GROWTH_PER_HIT = 0.5  # each hit adds half the class TTL, up to the class's maximum age


def infer_ttl_class(task_type: str, prompt: str) -> TTLClass:
    """The TTL class of a task that named none, from its task type and prompt keywords."""
    if task_type in INPUT_BOUND_TYPES:
        return TTLClass.static_knowledge
    if REAL_TIME_WORDS.search(prompt):
        return TTLClass.real_time
    if STATIC_WORDS.search(prompt):
        return TTLClass.static_knowledge
    return TYPE_DEFAULTS.get(task_type, TTLClass.semi_static)


@dataclass(frozen=True)
class TTLPolicy:
    """The life of one cache entry: `base_s` at first, up to `max_s` from creation through hits."""

    base_s: int
    max_s: int

    @classmethod
    def for_task(cls, ttl_class: TTLClass, ttl_s: int | None, *, adaptive: bool) -> TTLPolicy:
        """The policy for a task; `base_s == 0` means the answer is not cached."""
        if ttl_class is TTLClass.no_cache:
            return cls(0, 0)
        if ttl_s is not None:
            return cls(ttl_s, ttl_s)
        base = TTL_SECONDS[ttl_class]
        return cls(base, max(base, MAX_AGE_S[ttl_class]) if adaptive else base)

    @property
    def cacheable(self) -> bool:
        return self.base_s > 0

    def remaining_s(self, *, age_s: float, hits: int) -> int:
        """Seconds an entry of this age should still live after its `hits`-th hit."""
        life = min(self.max_s, self.base_s * (1 + GROWTH_PER_HIT * hits))
        return max(int(life - age_s), 0)
