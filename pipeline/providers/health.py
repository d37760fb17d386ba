"""Provider health: a circuit per provider, shared by every worker through Redis.

closed ──(N consecutive failures)──▶ open ──(cool-down over)──▶ half-open ──(probe ok)──▶ closed
   └──(auth or quota refusal: at once, longer cool-down)──▶ open    ◀──(probe fails)──┘

While a provider is open every worker skips it and its traffic goes down the fallback chain. When
the cool-down ends exactly one worker gets the probe lease and sends one real request; its outcome
decides for all. Failures that say nothing about the provider's health (a 429, which the rate
limiter handles, or a bad request) are not counted. A cool-down is only ever extended.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from pipeline.config.settings import Settings
from pipeline.keys import Keys

# KEYS: health hash, probe lease.  ARGV: lease_ms.  -> {state, ms, reason, account}
# state 0: closed, call (ms: the failures so far).  1: half-open and this caller holds the probe.
# 2: open, skip for ms.
_ADMIT = """
redis.replicate_commands()
local h = redis.call('HMGET', KEYS[1], 'open_until', 'reason', 'failures', 'account')
local until_ms = tonumber(h[1] or '0')
if until_ms == 0 then return {0, tonumber(h[3] or '0'), '', 0} end  -- closed: no clock needed
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local account = tonumber(h[4] or '0')
if now < until_ms then return {2, until_ms - now, h[2] or '', account} end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', tonumber(ARGV[1])) then return {1, 0, '', 0} end
-- another worker is probing: ask again soon
return {2, math.min(math.max(redis.call('PTTL', KEYS[2]), 1), 1000), h[2] or '', account}
"""

# KEYS: health hash, probe lease.  ARGV: threshold, cooldown_ms, force, reason, ttl_ms
# -> 1 when the circuit is (now) open
_FAIL = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
if ARGV[3] == '1' or failures >= tonumber(ARGV[1]) or until_ms > 0 then
  local new_until = now + tonumber(ARGV[2])
  -- only a failure that sets the cool-down also sets its reason: a straggler's shorter one
  -- neither shortens nor relabels an auth lock-out
  if new_until > until_ms then
    redis.call('HSET', KEYS[1], 'open_until', new_until, 'reason', ARGV[4], 'account', ARGV[3])
    redis.call('DEL', KEYS[2])
  end
  return 1
end
return 0
"""

# KEYS: health hash, probe lease.  A success closes the circuit.
_SUCCEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class CircuitGate:
    """Whether a worker may call a provider now. `probe`: this call decides a half-open circuit."""

    allowed: bool
    probe: bool = False
    failures: int = 0
    retry_in_s: float = 0.0
    reason: str = ""
    account: bool = False


class ProviderHealth:
    """The shared circuits of all providers."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.keys = keys
        self._redis = redis
        self.threshold = settings.health_failures
        self.cooldown_ms = int(settings.health_cooldown_s * 1000)
        self.auth_cooldown_ms = int(settings.health_auth_cooldown_s * 1000)
        # a probe whose worker died must not hold the circuit half-open for ever
        self.lease_ms = int((settings.job_timeout_s + 1) * 1000)
        self._admit = redis.register_script(_ADMIT)
        self._fail = redis.register_script(_FAIL)
        self._succeed = redis.register_script(_SUCCEED)

    def _keys(self, provider: str) -> list[str]:
        return [self.keys.provider_health(provider), self.keys.provider_probe(provider)]

    async def gate(self, provider: str) -> CircuitGate:
        """Closed: call. Open: skip. Cool-down over: one caller probes, the others skip."""
        state, ms, reason, account = await self._admit(
            keys=self._keys(provider), args=[self.lease_ms]
        )
        if int(state) == 0:
            return CircuitGate(True, failures=int(ms))
        if int(state) == 1:
            return CircuitGate(True, probe=True)
        text = reason.decode() if isinstance(reason, bytes) else str(reason)
        return CircuitGate(
            False, retry_in_s=int(ms) / 1000, reason=text, account=bool(int(account))
        )

    async def failed(self, provider: str, reason: str, *, account: bool = False) -> bool:
        """Count a failure; `account` (auth, quota) opens the circuit at once. True when open."""
        cooldown_ms = self.auth_cooldown_ms if account else self.cooldown_ms
        ttl_ms = max(cooldown_ms * 10, 600_000)
        opened = await self._fail(
            keys=self._keys(provider),
            args=[self.threshold, cooldown_ms, "1" if account else "0", reason, ttl_ms],
        )
        return bool(int(opened))

    async def succeeded(self, provider: str, gate: CircuitGate) -> None:
        """A success closes the circuit and resets the failure count."""
        if gate.probe or gate.failures:  # else there is nothing to reset
            await self._succeed(keys=self._keys(provider))

    async def status(self, provider: str) -> dict[str, object]:
        """The circuit as an operator sees it: state, failures, seconds left open, reason."""
        raw = await self._redis.hgetall(self.keys.provider_health(provider))
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        seconds, micros = await self._redis.time()
        now_ms = seconds * 1000 + micros // 1000
        until_ms = int(fields.get("open_until", 0))
        probing = bool(await self._redis.exists(self.keys.provider_probe(provider)))
        if not until_ms:
            state = "closed"
        elif now_ms < until_ms:
            state = "open"
        else:
            state = "probing" if probing else "half-open"
        return {
            "state": state,
            "failures": int(fields.get("failures", 0)),
            "open_for_s": round(max(until_ms - now_ms, 0) / 1000, 1),
            "reason": fields.get("reason", ""),
            "account": fields.get("account") == "1",
        }

    async def reset(self, provider: str) -> bool:
        """Close a provider's circuit now (after fixing its key, say). True if it was not closed."""
        return bool(await self._succeed(keys=self._keys(provider)))
