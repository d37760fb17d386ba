"""Model choice and response length: the cheapest model that meets the task's need.

A task type maps to a tier (fast_cheap, balanced, high_quality, best); a quality requirement at or
above a tier's floor (`Settings.quality_floors`) lifts the tier; each tier lists its models in
preference order, and only models whose provider is configured are eligible. An explicit model on
the task wins. A task type with a cascade starts on the cascade's (cheap) tier instead. Otherwise
the first eligible model of the needed tier is taken, or, for `budget_sensitive` tasks, the
cheapest eligible model of the needed tier or any tier above it. max_tokens defaults by task type
when a task gives none (within the model's output limit); a task asking for more than the chosen
model's output limit (`model_limits`) is rejected with the limit, never sent or cut silently.
Opted-in task types get their instructions compressed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.settings import Settings
from pipeline.costs.prices import PriceTable
from pipeline.models import Task
from pipeline.providers.chain import ProviderChain
from pipeline.routing.compression import compress_task

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
        """The tier a task needs: its type's tier, lifted by its quality requirement."""
        cascade = self.settings.cascades.get(task.task_type)
        if cascade is not None:
            return cascade.start_tier
        tier = self.settings.task_tiers.get(task.task_type, "balanced")
        if tier not in TIER_ORDER:
            tier = "balanced"
        for floor, min_quality in self.settings.quality_floors.items():
            if floor in TIER_ORDER and task.quality >= min_quality:
                tier = max(tier, floor, key=TIER_ORDER.index)
        return tier

    def eligible(self, tier: str) -> list[str]:
        return [m for m in self.settings.tiers.get(tier, ()) if self.chain.serves(m)]

    def _cost_per_mtok(self, model: str) -> float:
        price = self.prices.model_price(model)
        return float("inf") if price is None else float(price.input + price.output)

    def next_model(self, model: str, max_tier: str = "best") -> str | None:
        """The model a cascade escalates to from `model`: the first eligible model of the next
        tier above the lowest tier listing `model` that is a different model, up to `max_tier`."""
        listed = [t for t in TIER_ORDER if model in self.settings.tiers.get(t, ())]
        if not listed:
            return None
        top = TIER_ORDER.index(max_tier) if max_tier in TIER_ORDER else len(TIER_ORDER) - 1
        for name in TIER_ORDER[TIER_ORDER.index(listed[0]) + 1 : top + 1]:
            for candidate in self.eligible(name):
                if candidate != model:
                    return candidate
        return None

    def choose(self, task: Task, *, degrade: bool = False) -> str | Rejection:
        """The model for a task. `degrade` (budget pressure, see budgets/pace.py) routes it one
        tier cheaper and to the cheapest model of that tier; an explicit model is never changed."""
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
        meeting = TIER_ORDER[start:]
        if task.budget_sensitive and task.task_type not in self.settings.cascades:
            # every model of the needed tier or above meets the need: take the cheapest
            models = [m for name in meeting for m in self.eligible(name)]
            if models:
                return min(models, key=self._cost_per_mtok)
        for name in meeting:
            models = self.eligible(name)
            if models:
                return min(models, key=self._cost_per_mtok) if degrade else models[0]
        return Rejection(task, "no_provider", f"no configured provider serves any {tier} model")

    def shape(self, task: Task, *, degrade: bool = False) -> Task | Rejection:
        """The task with its model and max_tokens decided, or why it cannot run."""
        model = self.choose(task, degrade=degrade)
        if isinstance(model, Rejection):
            return model
        limit = self.settings.limits_for(model).output_tokens
        if task.max_tokens > limit:
            return Rejection(
                task,
                "invalid_input",
                f"max_tokens {task.max_tokens} is above the output limit of {model} "
                f"({limit} tokens); lower it, or set model_limits for {model} if it allows more",
            )
        default = self.settings.default_max_tokens.get(task.task_type, 400)
        max_tokens = task.max_tokens or min(default, limit)
        shaped = task.model_copy(update={"model": model, "max_tokens": max_tokens})
        if task.task_type in self.settings.compress_task_types:
            shaped = compress_task(shaped)
        return shaped
