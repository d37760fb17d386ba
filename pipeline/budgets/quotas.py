"""Plans per user: what a user (or, without a user id, a tenant) may ask for, checked at admission.

A plan caps requests per minute, requests and tokens per day, input and output tokens per task,
and the models a task may run on. A task over its plan is rejected with a reason that names the
limit and by how much; a task whose only problem is its model runs on the best allowed model
instead. The counters live in Redis and are checked and charged in one Lua step per task, so
every producer sees the same totals. Rejected tasks are not counted.

Which plan applies: the user's assignment, else the tenant's (operator overrides in Redis first,
then `plan_assignments` in the settings), else `plan_default`; with no plan, nothing is limited.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from pipeline.config.records import Plan
from pipeline.keys import Keys
from pipeline.tokens import count_messages

Clock = Callable[[], float]


_CHEAP = ("gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash")
_BALANCED = ("gpt-4.1-mini", "gemini-2.5-flash")

DEFAULT_PLANS: dict[str, Plan] = {
    "free": Plan(
        requests_per_min=10,
        daily_requests=100,
        daily_tokens=100_000,
        max_input_tokens=2_000,
        max_output_tokens=500,
        allowed_models=_CHEAP,
    ),
    "starter": Plan(
        requests_per_min=60,
        daily_requests=2_000,
        daily_tokens=2_000_000,
        max_input_tokens=8_000,
        max_output_tokens=2_000,
        allowed_models=_CHEAP + _BALANCED,
    ),
    "pro": Plan(
        requests_per_min=600,
        daily_requests=50_000,
        daily_tokens=50_000_000,
        max_input_tokens=64_000,
        max_output_tokens=8_000,
        allowed_models=(*_CHEAP, *_BALANCED, "gpt-4o", "claude-sonnet-4-0", "gemini-2.5-pro"),
    ),
    "enterprise": Plan(),
}

# -- KEYS: requests-per-minute, daily requests, daily tokens counters
# -- ARGV: the three limits (-1: none), tokens of this task
_CHARGE = """
local adds = {1, 1, tonumber(ARGV[4])}
local ttls = {120, 172800, 172800}
local names = {'requests_per_min', 'daily_requests', 'daily_tokens'}
for i = 1, 3 do
  local limit = tonumber(ARGV[i])
  if limit >= 0 then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used + adds[i] > limit then return {names[i], used + adds[i], limit} end
  end
end
for i = 1, 3 do
  redis.call('INCRBY', KEYS[i], adds[i])
  redis.call('EXPIRE', KEYS[i], ttls[i])
end
return {}
"""


@dataclass(frozen=True)
class PlanVerdict:
    """Why a task is refused: `limit` names the plan limit, `over` by how much it is crossed."""

    code: str
    limit: str
    over: int
    message: str


def subject_of(user_id: str, tenant: str) -> str:
    """Whose counters a task charges: its user, or its tenant when it names no user."""
    return f"user:{user_id}" if user_id else f"tenant:{tenant}"


def verdict(plan_name: str, limit: str, value: int, allowed: int, unit: str) -> PlanVerdict:
    over = value - allowed
    return PlanVerdict(
        code=f"plan_{limit}",
        limit=limit,
        over=over,
        message=(
            f"plan {plan_name!r} limit {limit}: {value:,} {unit}, the plan allows {allowed:,} "
            f"({over:,} over); ask for a bigger plan or try later"
        ),
    )


class PlanStore:
    """Plan definitions, assignments and the shared per-user counters."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        plans: dict[str, Plan],
        assignments: dict[str, str],
        default: str | None,
        *,
        clock: Clock = time.time,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.plans = plans
        self.assignments = assignments
        self.default = default
        self.clock = clock
        self._charge = redis.register_script(_CHARGE)

    @property
    def enabled(self) -> bool:
        """Whether the settings give any task a plan (operator overrides may add more)."""
        return self.default is not None or bool(self.assignments)

    async def assign(self, subject: str, plan: str | None) -> None:
        """Give a user or tenant a plan (None removes the override)."""
        if plan is None:
            await self.redis.hdel(self.keys.plan_assignments(), subject)
        else:
            await self.redis.hset(self.keys.plan_assignments(), subject, plan)

    async def overrides(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.plan_assignments())
        return {k.decode(): v.decode() for k, v in raw.items()}

    def plan_name(self, user_id: str, tenant: str, overrides: dict[str, str]) -> str | None:
        """The plan that applies to a task of this user and tenant, or None."""
        for subject in ((f"user:{user_id}",) if user_id else ()) + (f"tenant:{tenant}",):
            for source in (overrides, self.assignments):
                if subject in source:
                    return source[subject]
        return self.default

    def static_check(
        self,
        plan_name: str,
        plan: Plan,
        system: str,
        contents: Sequence[str],
        max_tokens: int,
        defaulted_max_tokens: bool,
    ) -> tuple[PlanVerdict | None, int]:
        """Per-task limits: (refusal or None, the max_tokens to run with)."""
        if plan.max_input_tokens is not None:
            tokens = count_messages(system, list(contents))
            if tokens > plan.max_input_tokens:
                return verdict(
                    plan_name, "max_input_tokens", tokens, plan.max_input_tokens, "input tokens"
                ), max_tokens
        if plan.max_output_tokens is not None and max_tokens > plan.max_output_tokens:
            if defaulted_max_tokens:  # the task asked for nothing: give it what the plan allows
                return None, plan.max_output_tokens
            return verdict(
                plan_name,
                "max_output_tokens",
                max_tokens,
                plan.max_output_tokens,
                "output tokens asked (max_tokens)",
            ), max_tokens
        return None, max_tokens

    async def charge(
        self, requests: Sequence[tuple[str, str, Plan, int]]
    ) -> list[PlanVerdict | None]:
        """Check and count (subject, plan name, plan, tokens) per task, atomically each."""
        if not requests:
            return []
        now = self.clock()
        minute, day = int(now // 60), int(now // 86400)
        async with self.redis.pipeline(transaction=False) as pipe:
            for subject, _name, plan, tokens in requests:
                keys = [
                    self.keys.plan_used(subject, "rpm", minute),
                    self.keys.plan_used(subject, "requests", day),
                    self.keys.plan_used(subject, "tokens", day),
                ]
                limits = [plan.requests_per_min, plan.daily_requests, plan.daily_tokens]
                args: list[Any] = [-1 if v is None else v for v in limits] + [tokens]
                await self._charge(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        out: list[PlanVerdict | None] = []
        for (_subject, name, _plan, tokens), reply in zip(requests, replies, strict=True):
            if not reply:
                out.append(None)
                continue
            limit, value, allowed = reply[0].decode(), int(reply[1]), int(reply[2])
            unit = {
                "requests_per_min": "requests this minute",
                "daily_requests": "requests today",
                "daily_tokens": f"tokens today (this task: {tokens:,})",
            }[limit]
            out.append(verdict(name, limit, value, allowed, unit))
        return out
