"""A rate limiter shared by every worker: requests and tokens per window, atomic in Redis.

Each scope (a provider as a whole, and one model on a provider) keeps a log of its grants in the
last window in Redis; one Lua script checks every limit that applies to a call and grants all or
none, using Redis's clock so that workers on different hosts agree. A sliding window rather than a
refilling bucket: providers and our fake meter whole windows, and a bucket that starts full lets
up to twice the limit through one window. When there is no room the script answers how long until
there is, and the worker sleeps that long instead of collecting 429s. A grant stays in the log for
`rate_guard_s` longer than the window, for the time a request takes to reach the provider.

Limits come from the settings (`rpm`, `tpm`, `model_rpm`, `model_tpm` per provider) and, for a
model with no configured limit, from the `x-ratelimit-limit-*` / `anthropic-ratelimit-*-limit`
headers the provider sends back. A 429's Retry-After, or a header saying nothing remains, blocks
the scope for every worker until then; a block is only ever extended, never shortened.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from pipeline.config.records import ProviderConfig
from pipeline.config.settings import Settings
from pipeline.errors import RateLimited
from pipeline.keys import Keys

logger = logging.getLogger("batchwise.ratelimit")

# KEYS: n block keys, then (log, sum) per limit.  ARGV: window_ms, member, n, (limit, cost)...
# Returns 0 when granted, else the milliseconds to wait before asking again.
_ACQUIRE = """
redis.replicate_commands()
local window = tonumber(ARGV[1])
local nblocks = tonumber(ARGV[3])
local nlimits = (#KEYS - nblocks) / 2
local blocks, blocked = {}, false
for i = 1, nblocks do
  blocks[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  blocked = blocked or blocks[i] > 0
end
if not blocked and nlimits == 0 then return 0 end  -- nothing to time
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i = 1, nblocks do
  if blocks[i] - now > wait then wait = blocks[i] - now end
end
if wait > 0 then return wait end
local costs = {}
for i = 1, nlimits do
  local log, sum = KEYS[nblocks + 2 * i - 1], KEYS[nblocks + 2 * i]
  local limit, cost = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if cost > limit then cost = limit end
  costs[i] = cost
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - window)
  if #old > 0 then
    local freed = 0
    for _, m in ipairs(old) do freed = freed + tonumber(string.match(m, ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
    redis.call('DECRBY', sum, freed)
  end
  local used = tonumber(redis.call('GET', sum) or '0')
  if used + cost > limit then
    local need, freed, until_ms = used + cost - limit, 0, now + window
    local grants = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    for j = 1, #grants, 2 do
      freed = freed + tonumber(string.match(grants[j], ':(%d+)$'))
      if freed >= need then until_ms = tonumber(grants[j + 1]) + window; break end
    end
    if until_ms - now + 1 > wait then wait = until_ms - now + 1 end
  end
end
if wait > 0 then return wait end
for i = 1, nlimits do
  local log, sum = KEYS[nblocks + 2 * i - 1], KEYS[nblocks + 2 * i]
  redis.call('ZADD', log, now, ARGV[2] .. ':' .. costs[i])
  redis.call('INCRBY', sum, costs[i])
  redis.call('PEXPIRE', log, window + 1000)
  redis.call('PEXPIRE', sum, window + 1000)
end
return 0
"""

# KEYS[1]: block key.  ARGV[1]: block for this many ms from now (only ever extends a block).
_BLOCK = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
  return until_ms
end
return current
"""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
LEARNED_TTL_S = 600
LEARNED_REFRESH_S = 5.0


@dataclass(frozen=True)
class Limit:
    """One limit on one scope: at most `limit` units of `measure` ("req" or "tok") per window."""

    scope: str
    measure: str
    limit: int
    cost: int


def _lookup(table: Mapping[str, int], model: str) -> int | None:
    """A per-model value: an exact name first, then the longest matching `prefix*` pattern."""
    if model in table:
        return table[model]
    matches = [p for p in table if p.endswith("*") and model.startswith(p[:-1])]
    return table[max(matches, key=len)] if matches else None


def parse_reset_s(value: str, now_s: float | None = None) -> float | None:
    """Seconds until a rate-limit window resets: OpenAI's `6m0s` / `20ms` or an RFC 3339 time."""
    value = value.strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if parts and "".join(a + u for a, u in parts) == value:
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(amount) * scale[unit] for amount, unit in parts)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(at.timestamp() - (time.time() if now_s is None else now_s), 0.0)


def header_limits(headers: Mapping[str, str]) -> dict[str, tuple[int | None, int | None, float]]:
    """{"req" | "tok": (limit, remaining, reset_s)} from OpenAI or Anthropic rate-limit headers."""
    found: dict[str, tuple[int | None, int | None, float]] = {}
    names = {
        "req": ("x-ratelimit-{}-requests", "anthropic-ratelimit-requests-{}"),
        "tok": ("x-ratelimit-{}-tokens", "anthropic-ratelimit-tokens-{}"),
    }
    for measure, patterns in names.items():
        for pattern in patterns:
            limit = _int(headers.get(pattern.format("limit")))
            remaining = _int(headers.get(pattern.format("remaining")))
            reset = parse_reset_s(headers.get(pattern.format("reset"), ""))
            if limit is not None or remaining is not None:
                found[measure] = (limit, remaining, reset or 0.0)
    return found


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class RateLimiter:
    """Waits for room under every limit of a (provider, model) call, shared through Redis."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        # a grant counts a little longer than the window: a request reaches the provider some
        # time after its grant, and providers meter arrivals
        self.window_ms = int((settings.rate_window_s + settings.rate_guard_s) * 1000)
        self.wait_max_s = settings.rate_wait_max_s
        self._acquire = redis.register_script(_ACQUIRE)
        self._block = redis.register_script(_BLOCK)
        self._learned: dict[str, tuple[float, dict[str, int]]] = {}

    @staticmethod
    def scopes(provider: str, model: str) -> tuple[str, str]:
        """The provider-wide scope and the provider-and-model scope."""
        return provider, f"{provider}/{model}"

    def needs_tokens(self, config: ProviderConfig | None, model: str) -> bool:
        """Whether a call must be costed in tokens (some token limit applies)."""
        if config is None:
            return False
        if config.tpm is not None or _lookup(config.model_tpm, model) is not None:
            return True
        learned = self._learned.get(self.scopes(config.name, model)[1])
        return learned is not None and "tok" in learned[1]

    async def limits(self, config: ProviderConfig | None, model: str, tokens: int) -> list[Limit]:
        """Every limit on a call of `tokens` tokens (prompt + max output) to `model`."""
        if config is None:
            return []
        whole, one = self.scopes(config.name, model)
        learned = await self._learned_limits(one)
        model_rpm = _lookup(config.model_rpm, model)
        model_tpm = _lookup(config.model_tpm, model)
        candidates = [
            (whole, "req", config.rpm, 1),
            (whole, "tok", config.tpm, tokens),
            (one, "req", model_rpm if model_rpm is not None else learned.get("req"), 1),
            (one, "tok", model_tpm if model_tpm is not None else learned.get("tok"), tokens),
        ]
        return [
            Limit(scope, measure, limit, cost)
            for scope, measure, limit, cost in candidates
            if limit is not None and cost > 0
        ]

    async def acquire(self, config: ProviderConfig | None, model: str, tokens: int = 0) -> float:
        """Wait until the call fits every limit and take its share; return the seconds waited.

        Raises `RateLimited` when the wait would exceed `rate_wait_max_s`.
        """
        if config is None:
            return 0.0
        whole, one = self.scopes(config.name, model)
        limits = await self.limits(config, model, tokens)
        keys = [self.keys.rate_block(whole), self.keys.rate_block(one)]
        args: list[str | int] = [self.window_ms, uuid.uuid4().hex, 2]
        for lim in limits:
            keys += [
                self.keys.rate_log(lim.scope, lim.measure),
                self.keys.rate_sum(lim.scope, lim.measure),
            ]
            args += [lim.limit, lim.cost]
        started = time.monotonic()
        while True:
            wait_ms = int(await self._acquire(keys=keys, args=args))
            waited_s = time.monotonic() - started
            if wait_ms <= 0:
                return waited_s
            if waited_s + wait_ms / 1000 > self.wait_max_s:
                raise RateLimited(
                    f"no capacity for {model} within {self.wait_max_s:g}s (shared rate limit)",
                    provider=config.name,
                    retry_after_s=wait_ms / 1000,
                )
            # a little jitter so that waiters do not all ask again in the same millisecond
            await asyncio.sleep(wait_ms / 1000 + random.uniform(0, 0.005))

    async def block(self, provider: str, model: str | None, seconds: float) -> None:
        """Nobody calls the scope for `seconds` (a 429's Retry-After); never shortens a block."""
        if seconds <= 0:
            return
        scope = provider if model is None else self.scopes(provider, model)[1]
        await self._block(keys=[self.keys.rate_block(scope)], args=[int(seconds * 1000)])

    async def learn(self, provider: str, model: str, headers: Mapping[str, str]) -> None:
        """Take limits and exhaustion from a response's rate-limit headers."""
        found = header_limits(headers)
        if not found:
            return
        one = self.scopes(provider, model)[1]
        learned: dict[str, int] = {}
        block_s = 0.0
        for measure, (limit, remaining, reset_s) in found.items():
            if limit is not None and limit > 0:
                learned[measure] = limit  # per minute, which `rate_window_s` stands for
            if remaining == 0 and reset_s > 0:
                block_s = max(block_s, reset_s)
        if learned:
            cached = self._learned.get(one)
            if cached is None or cached[1] != learned:
                await self.redis.hset(self.keys.rate_learned(one), mapping=learned)
                await self.redis.expire(self.keys.rate_learned(one), LEARNED_TTL_S)
                self._learned[one] = (time.monotonic() + LEARNED_REFRESH_S, learned)
        if block_s:
            await self.block(provider, model, block_s)

    async def _learned_limits(self, scope: str) -> dict[str, int]:
        cached = self._learned.get(scope)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        raw = await self.redis.hgetall(self.keys.rate_learned(scope))
        learned = {k.decode(): int(v) for k, v in raw.items()}
        self._learned[scope] = (time.monotonic() + LEARNED_REFRESH_S, learned)
        return learned

    async def usage(self, scope: str) -> dict[str, object]:
        """What a scope has used of its window now, its learned limits, and any block left."""
        seconds, micros = await self.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        used: dict[str, int] = {}
        for measure in ("req", "tok"):
            grants = await self.redis.zrangebyscore(
                self.keys.rate_log(scope, measure), now_ms - self.window_ms, "+inf"
            )
            used[measure] = sum(int(g.rsplit(b":", 1)[1]) for g in grants)
        block = await self.redis.get(self.keys.rate_block(scope))
        learned = await self.redis.hgetall(self.keys.rate_learned(scope))
        return {
            "requests": used["req"],
            "tokens": used["tok"],
            "blocked_for_s": round(max(int(block or 0) - now_ms, 0) / 1000, 1),
            "learned": {k.decode(): int(v) for k, v in learned.items()},
        }
