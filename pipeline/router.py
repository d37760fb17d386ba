"""Model choice and response length: the cheapest model that meets the task's need.

A task type maps to a tier (fast_cheap, balanced, high_quality, best); a high quality requirement
lifts the tier; each tier lists its models in preference order, and only models whose provider is
configured are eligible. An explicit model on the task wins. `budget_sensitive` tasks take the
cheapest eligible model of their tier. max_tokens defaults by task type when a task gives none.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .models import Task
from .prices import PriceTable
from .providers.fallback import ProviderChain

TIER_ORDER = ("fast_cheap", "balanced", "high_quality", "best")


@dataclass(frozen=True)
class Rejection:
    task: Task
    code: str
    message: str


class Router:
    def __init__(self, settings: Settings, chain: ProviderChain, prices: PriceTable) -> None:
        self.settings = settings
        self.chain = chain
        self.prices = prices

    def tier(self, task: Task) -> str:
        tier = self.settings.task_tiers.get(task.task_type, "balanced")
        if task.quality >= 0.9:
            floor = "best"
        elif task.quality >= 0.75:
            floor = "high_quality"
        else:
            return tier
        return max(tier, floor, key=TIER_ORDER.index)

    def eligible(self, tier: str) -> list[str]:
        return [m for m in self.settings.tiers.get(tier, ()) if self.chain.serves(m)]

    def _cost_per_mtok(self, model: str) -> float:
        price = self.prices.model_price(model)
        return float("inf") if price is None else float(price.input + price.output)

    def choose(self, task: Task, *, degrade: bool = False) -> str | Rejection:
        """The model for a task. `degrade` (budget pressure, see budgets.py) routes it one tier
        cheaper and to the cheapest model of that tier; an explicit model is never changed."""
        if task.requested_model:
            if not self.chain.serves(task.requested_model):
                return Rejection(
                    task,
                    "no_provider",
                    f"no configured provider serves model {task.requested_model!r}; "
                    "configure one (see the README) or leave 'model' out to route",
                )
            return task.requested_model
        tier = self.tier(task)
        if degrade and tier in TIER_ORDER:
            tier = TIER_ORDER[max(TIER_ORDER.index(tier) - 1, 0)]
        start = TIER_ORDER.index(tier) if tier in TIER_ORDER else 1
        for name in (tier, *TIER_ORDER[start + 1 :]):
            models = self.eligible(name)
            if models:
                cheapest = task.budget_sensitive or degrade
                return min(models, key=self._cost_per_mtok) if cheapest else models[0]
        return Rejection(task, "no_provider", f"no configured provider serves any {tier} model")

    def shape(self, task: Task, *, degrade: bool = False) -> Task | Rejection:
        """The task with its model and max_tokens decided, or why it cannot run."""
        model = self.choose(task, degrade=degrade)
        if isinstance(model, Rejection):
            return model
        max_tokens = task.max_tokens or self.settings.default_max_tokens.get(task.task_type, 400)
        return task.model_copy(update={"model": model, "max_tokens": max_tokens})
