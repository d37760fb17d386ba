"""Routing decisions: tiers, quality lifts, budget sensitivity, explicit models, max_tokens."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config.loading import load_settings
from pipeline.config.records import CascadeSpec
from pipeline.costs.prices import PriceTable
from pipeline.models import Message, Task
from pipeline.providers.base import ChatRequest, ChatResponse
from pipeline.providers.chain import ProviderChain
from pipeline.routing.router import Rejection, Router

ISSUE_MAX_TOKENS = {
    "classification": 10,
    "sentiment": 5,
    "yes_no": 3,
    "short_answer": 50,
    "summary": 200,
    "long_summary": 500,
    "article": 1000,
    "code_snippet": 300,
    "full_code": 2000,
    "analysis": 800,
}
PRICES = {
    "gpt-4o-mini": {"input": "0.15", "output": "0.60"},
    "gpt-4.1-mini": {"input": "0.40", "output": "1.60"},
    "gpt-4o": {"input": "2.50", "output": "10"},
    "gpt-4.1": {"input": "2.00", "output": "8"},
    "claude-3-5-haiku-latest": {"input": "0.80", "output": "4"},
    "claude-sonnet-4-0": {"input": "3", "output": "15"},
    "claude-opus-4-0": {"input": "15", "output": "75"},
    "gemini-2.0-flash": {"input": "0.10", "output": "0.40"},
    "gemini-2.5-flash": {"input": "0.30", "output": "2.50"},
    "gemini-2.5-pro": {"input": "1.25", "output": "5"},
}


class PrefixProvider:
    """Serves model names with one of its prefixes; never called by these tests."""

    simulated = True

    def __init__(self, *prefixes: str) -> None:
        self.name = "+".join(prefixes)
        self.prefixes = prefixes

    def serves(self, model: str) -> bool:
        return model.startswith(self.prefixes)

    async def complete(self, request: ChatRequest) -> ChatResponse:  # pragma: no cover
        raise AssertionError("routing never calls a provider")

    async def aclose(self) -> None:  # pragma: no cover
        return None


def router(*prefixes: str, **overrides: Any) -> Router:
    settings = load_settings(env={}, prices=PRICES, **overrides)
    chain = ProviderChain([PrefixProvider(*(prefixes or ("gpt-", "claude", "gemini")))], settings)
    return Router(settings, chain, PriceTable(settings.prices))


def task(**fields: Any) -> Task:
    values: dict[str, Any] = {"id": "t", "messages": (Message(role="user", content="hi"),)}
    values.update(fields)
    return Task(**values)


@pytest.mark.parametrize(
    ("task_type", "model"),
    [
        ("faq", "gpt-4o-mini"),
        ("sentiment", "gpt-4o-mini"),
        ("summary", "gpt-4.1-mini"),
        ("translation", "gpt-4.1-mini"),
        ("analysis", "gpt-4o"),
        ("full_code", "gpt-4o"),
    ],
)
def test_task_type_picks_its_tiers_first_model(task_type: str, model: str) -> None:
    assert router().choose(task(task_type=task_type)) == model


@pytest.mark.parametrize(
    ("quality", "tier", "model"),
    [
        (0.5, "fast_cheap", "gpt-4o-mini"),
        (0.74, "fast_cheap", "gpt-4o-mini"),
        (0.75, "high_quality", "gpt-4o"),
        (0.9, "best", "gpt-4.1"),
    ],
)
def test_quality_lifts_the_tier(quality: float, tier: str, model: str) -> None:
    r = router()
    t = task(task_type="faq", quality=quality)
    assert r.tier(t) == tier
    assert r.choose(t) == model


def test_quality_never_lowers_a_tier() -> None:
    assert router().tier(task(task_type="analysis", quality=0.0)) == "high_quality"


def test_quality_floors_come_from_settings() -> None:
    r = router(quality_floors={"balanced": 0.6, "best": 0.99})
    assert r.choose(task(task_type="faq", quality=0.6)) == "gpt-4.1-mini"
    assert r.choose(task(task_type="faq", quality=0.95)) == "gpt-4.1-mini"
    assert r.choose(task(task_type="faq", quality=0.99)) == "gpt-4.1"


def test_budget_sensitive_takes_the_cheapest_model_meeting_the_need() -> None:
    r = router()
    # fast_cheap need: the cheapest model of any tier is gemini-2.0-flash
    assert r.choose(task(task_type="faq", budget_sensitive=True)) == "gemini-2.0-flash"
    # high_quality need: gemini-2.5-pro (high_quality and best) is cheaper than gpt-4o, and the
    # cheaper fast_cheap / balanced models do not meet the need
    lifted = task(task_type="faq", quality=0.8, budget_sensitive=True)
    assert r.choose(lifted) == "gemini-2.5-pro"
    assert r.choose(task(task_type="faq", quality=0.8)) == "gpt-4o"


def test_budget_sensitive_only_considers_configured_providers() -> None:
    r = router("gpt-")
    assert r.choose(task(task_type="faq", budget_sensitive=True)) == "gpt-4o-mini"
    assert r.choose(task(task_type="analysis", budget_sensitive=True)) == "gpt-4.1"


def test_unserved_models_are_skipped_and_higher_tiers_fill_in() -> None:
    r = router("claude", tiers={"fast_cheap": ("gpt-4o-mini",), "balanced": ("claude-x",)})
    assert r.choose(task(task_type="faq")) == "claude-x"
    none = router("mistral").choose(task(task_type="faq"))
    assert isinstance(none, Rejection) and none.code == "no_provider"


def test_explicit_model_wins_over_tier_quality_and_budget() -> None:
    r = router()
    t = task(task_type="faq", quality=1.0, budget_sensitive=True, requested_model="gpt-4o")
    assert r.choose(t) == "gpt-4o"
    refused = router("gpt-").choose(task(requested_model="claude-opus-4-0"))
    assert isinstance(refused, Rejection)
    assert refused.code == "no_provider" and "claude-opus-4-0" in refused.message


def test_max_tokens_defaults_match_the_issue() -> None:
    r = router()
    for task_type, expected in ISSUE_MAX_TOKENS.items():
        shaped = r.shape(task(task_type=task_type))
        assert isinstance(shaped, Task)
        assert shaped.max_tokens == expected, task_type
    own = r.shape(task(task_type="sentiment", max_tokens=42))
    assert isinstance(own, Task) and own.max_tokens == 42


def test_cascaded_task_type_starts_cheap_and_escalates_a_tier_at_a_time() -> None:
    r = router("gpt-", cascades={"analysis": CascadeSpec(evaluators=("non_empty",))})
    assert r.choose(task(task_type="analysis", quality=0.95)) == "gpt-4o-mini"
    assert r.next_model("gpt-4o-mini") == "gpt-4.1-mini"
    assert r.next_model("gpt-4.1-mini") == "gpt-4o"
    assert r.next_model("gpt-4o") == "gpt-4.1"
    assert r.next_model("gpt-4.1") is None
    assert r.next_model("gpt-4o-mini", max_tier="balanced") == "gpt-4.1-mini"
    assert r.next_model("gpt-4.1-mini", max_tier="balanced") is None
    assert r.next_model("some-explicit-model") is None


def test_compression_is_opt_in_and_touches_only_instructions() -> None:
    system = "Please answer the question. It is very important that you reply in one sentence."
    prompt = "Please tell me, in order to plan: is it very cold in Oslo?"
    plain = router().shape(task(task_type="faq", system=system, messages=_user(prompt)))
    squeezed = router(compress_task_types=("faq",)).shape(
        task(task_type="faq", system=system, messages=_user(prompt))
    )
    assert isinstance(plain, Task) and isinstance(squeezed, Task)
    assert plain.system == system
    assert squeezed.system == "Answer the question. Reply in one sentence."
    assert squeezed.messages == plain.messages


def _user(text: str) -> tuple[Message, ...]:
    return (Message(role="user", content=text),)
