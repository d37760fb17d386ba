"""Strict submissions (`durable_submit`): a submission is acknowledged only once it is on disk.

By default Redis appends every write to its AOF and fsyncs once a second (`appendfsync
everysec`): a Redis process crash loses nothing the kernel already has, a machine crash loses up
to the last second of acknowledged writes. With `durable_submit`, `submit` returns only after
`WAITAOF 1 0` (Redis >= 7.2) confirms that the local AOF holds everything this client wrote,
fsynced. A server without WAITAOF qualifies only when it fsyncs every write itself
(`appendfsync always`). See docs/durability.md.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from pipeline.errors import ConfigError, PipelineError

WAIT_S = 5.0
_NEEDS = (
    "BATCHWISE_DURABLE_SUBMIT needs a Redis with the AOF on that can confirm a write is on "
    "disk: Redis >= 7.2 with `appendonly yes` (WAITAOF), or any Redis with `appendonly yes` "
    "and `appendfsync always`; or turn BATCHWISE_DURABLE_SUBMIT off"
)


class NotOnDisk(PipelineError):
    """Redis did not confirm a submission on disk in time."""


class DiskAck:
    """Waits until Redis has this client's writes on disk; learns once how the server can."""

    def __init__(self, redis: Redis, *, wait_s: float = WAIT_S) -> None:
        self.redis = redis
        self.wait_s = wait_s
        self._waitaof: bool | None = None

    async def wait(self, what: str) -> None:
        """Return once `what` (already written by this client) is fsynced to the AOF."""
        if self._waitaof is None:
            self._waitaof = await self._check()
        if not self._waitaof:
            return  # appendfsync always: every acknowledged write was fsynced first
        local, _replicas = await self._waitaof_call(1, int(self.wait_s * 1000))
        if int(local) < 1:
            raise NotOnDisk(
                f"Redis did not confirm {what} on disk within {self.wait_s:g}s; it is queued "
                "but may not survive a machine crash: check the server's disk"
            )

    async def _waitaof_call(self, numlocal: int, timeout_ms: int) -> list[int]:
        reply: list[int] = await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "WAITAOF", numlocal, 0, timeout_ms
        )
        return reply

    async def _check(self) -> bool:
        """True when WAITAOF works here; False when the server fsyncs every write anyway."""
        try:
            await self._waitaof_call(1, 1)  # answers within 1 ms
            return True
        except ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise ConfigError(f"{_NEEDS} (Redis said: {exc})") from None
        try:
            config = await self.redis.config_get("append*")
        except ResponseError as exc:
            raise ConfigError(f"{_NEEDS} (CONFIG GET refused: {exc})") from None
        if config.get("appendonly") == "yes" and config.get("appendfsync") == "always":
            return False
        raise ConfigError(_NEEDS)
