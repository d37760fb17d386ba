"""Admission: what a shaped task must pass before it is queued, and how it may change.

In order: under budget pressure (the monthly budget's pace is critical and `budget_degrade` is
on) a routed task moves one tier cheaper, through `Router.shape(degrade=True)`; the switch is
logged once and counted in Redis for reports. Under the `reject` breaker policy, a task whose
global or tenant breaker is open is rejected at once. Then its plan (quotas.py): per-task limits,
the allowed models (a task on a model outside its plan runs on the best allowed one), and the
shared counters. Every refusal names its limit.
"""

from __future__ import annotations

import logging
import time

from pipeline.budgets.breaker import BreakerState, Budgets
from pipeline.budgets.quotas import DEFAULT_PLANS, PlanStore, PlanVerdict, subject_of
from pipeline.config.records import Plan
from pipeline.errors import ConfigError
from pipeline.models import Task
from pipeline.routing.router import TIER_ORDER, Rejection, Router
from pipeline.tokens import count_messages

logger = logging.getLogger("batchwise.budget")


class Admission:
    """Budget pressure, open breakers and plan limits, applied to tasks at submission."""

    def __init__(self, budgets: Budgets, router: Router) -> None:
        self.budgets = budgets
        self.router = router
        self.redis = budgets.redis
        self.keys = budgets.keys
        self.settings = settings = budgets.settings
        self.plans = {**DEFAULT_PLANS, **settings.plans}
        named = [settings.plan_default, *settings.plan_assignments.values()]
        unknown = sorted({p for p in named if p is not None and p not in self.plans})
        if unknown:
            raise ConfigError(f"unknown plan(s) {unknown}; defined: {sorted(self.plans)}")
        self.plan_store = PlanStore(
            budgets.redis,
            budgets.keys,
            self.plans,
            dict(settings.plan_assignments),
            settings.plan_default,
            clock=lambda: budgets.clock(),  # noqa: PLW0108  (follows Budgets.set_clock)
        )

    async def admit(self, tasks: list[Task]) -> tuple[list[Task], list[Rejection]]:
        """Budget pressure and plan limits for shaped tasks: (admitted, rejected)."""
        if not tasks:
            return tasks, []
        if await self.degrading():
            tasks = await self._degrade(tasks)
        refused: list[Rejection] = []
        if self.settings.breaker_policy == "reject":
            open_scopes = {b.scope: b for b in await self.budgets.open_breakers()}
            if open_scopes:
                kept = []
                for task in tasks:
                    state = open_scopes.get("global") or open_scopes.get(f"tenant:{task.tenant}")
                    if state is None:
                        kept.append(task)
                        continue
                    refused.append(Rejection(task, "budget_exceeded", _open_message(state)))
                tasks = kept
        admitted, over_plan = await self._plan_check(tasks)
        return admitted, refused + over_plan

    async def _plan_check(self, tasks: list[Task]) -> tuple[list[Task], list[Rejection]]:
        overrides = await self.plan_store.overrides()
        if not (self.plan_store.enabled or overrides):
            return tasks, []
        refused: list[Rejection] = []
        pending: list[tuple[Task, tuple[str, str, Plan, int]]] = []
        admitted: list[Task] = []
        for task in tasks:
            name = self.plan_store.plan_name(task.user_id, task.tenant, overrides)
            if name is None:
                admitted.append(task)
                continue
            plan = self.plans.get(name)
            if plan is None:
                refused.append(Rejection(task, "plan_unknown", f"plan {name!r} is not defined"))
                continue
            shaped, problem = self._fit_plan(task, name, plan)
            if problem is not None:
                refused.append(Rejection(task, problem.code, problem.message))
                continue
            contents = [m.content for m in shaped.messages]
            tokens = count_messages(shaped.system, contents) + shaped.max_tokens
            pending.append((shaped, (subject_of(task.user_id, task.tenant), name, plan, tokens)))
        verdicts = await self.plan_store.charge([req for _, req in pending])
        for (task, _), problem in zip(pending, verdicts, strict=True):
            if problem is None:
                admitted.append(task)
            else:
                refused.append(Rejection(task, problem.code, problem.message))
        return admitted, refused

    def _fit_plan(self, task: Task, name: str, plan: Plan) -> tuple[Task, PlanVerdict | None]:
        default_max = self.settings.default_max_tokens.get(task.task_type, 400)
        problem, max_tokens = self.plan_store.static_check(
            name,
            plan,
            task.system,
            [m.content for m in task.messages],
            task.max_tokens,
            defaulted_max_tokens=task.max_tokens == default_max,
        )
        if problem is not None:
            return task, problem
        if max_tokens != task.max_tokens:
            task = task.model_copy(update={"max_tokens": max_tokens})
        if plan.allows(task.model):
            return task, None
        model = self.best_allowed(task, plan)
        if model is None:
            return task, PlanVerdict(
                "plan_allowed_models",
                "allowed_models",
                1,
                f"plan {name!r} limit allowed_models: model {task.model!r} is not allowed and no "
                f"allowed model ({', '.join(plan.allowed_models)}) has a configured provider",
            )
        logger.debug("task %s: plan %r runs it on %s, not %s", task.id, name, model, task.model)
        return task.model_copy(update={"model": model}), None

    def best_allowed(self, task: Task, plan: Plan) -> str | None:
        """The allowed model closest below the task's tier (then above), in tier order."""
        tier = self.router.tier(task)
        start = TIER_ORDER.index(tier) if tier in TIER_ORDER else 1
        order = [*reversed(TIER_ORDER[: start + 1]), *TIER_ORDER[start + 1 :]]
        for name in order:
            for model in self.router.eligible(name):
                if plan.allows(model):
                    return str(model)
        return None

    # -- budget pressure ---------------------------------------------------------------------

    async def degrading(self) -> bool:
        """True while the monthly budget is critical and `budget_degrade` is on; logs switches."""
        if not self.settings.budget_degrade or await self.budgets.monthly.budget_nusd() is None:
            return False
        pace = await self.budgets.monthly.pace(self.budgets.clock())
        on = pace.status == "critical"
        before = await self.redis.getset(self.keys.degrade_state(), "1" if on else "0")
        if (before == b"1") != on:
            if on:
                logger.warning(
                    "budget critical (%.2fx pace, $%s of $%s): routed tasks move to a cheaper tier",
                    pace.ratio or 0.0,
                    pace.spent_usd,
                    pace.budget_usd,
                )
            elif before is not None:
                logger.warning("budget no longer critical: routing back to normal tiers")
            await self.redis.hset(
                self.keys.degraded(), "last_switch", f"{int(on)}@{self.budgets.clock()}"
            )
        return bool(on)

    async def _degrade(self, tasks: list[Task]) -> list[Task]:
        out: list[Task] = []
        switches: dict[str, int] = {}
        for task in tasks:
            cheaper = self.router.shape(task, degrade=True)
            if isinstance(cheaper, Rejection) or cheaper.model == task.model:
                out.append(task)
                continue
            switch = f"{task.model}>{cheaper.model}"
            switches[switch] = switches.get(switch, 0) + 1
            out.append(cheaper)
        if switches:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.keys.degraded(), "total", sum(switches.values()))
                for name, n in switches.items():
                    pipe.hincrby(self.keys.degraded(), name, n)
                await pipe.execute()
            moved = sum(switches.values())
            logger.info("budget pressure: %d task(s) moved to a cheaper model %s", moved, switches)
        return out

    async def degraded_counts(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.degraded())
        return {k.decode(): v.decode() for k, v in raw.items()}


def _open_message(state: BreakerState) -> str:
    return (
        f"cost breaker {state.scope} is open: its {state.window} limit of ${state.limit_usd} "
        f"would be crossed; it closes at "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(state.until))}"
    )
