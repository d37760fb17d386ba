"""Every error batchwise raises on purpose, split by what the caller must do.

PipelineError
├── InputError            the job file or a task is wrong: fix it (file:line, field, reason)
├── ConfigError           a setting is wrong: fix the env or TOML file
├── RedisUnavailable      Redis stayed out of reach too long (pipeline/state/connecting.py)
├── NotOnDisk             a strict submission is not confirmed on disk (pipeline/state/durable.py)
└── ProviderError         a call went wrong; carries the provider and HTTP status, never a key
    ├── TransientError    try again later (rate limit, 5xx, timeout, connection)
    │   ├── RateLimited   carries the provider's Retry-After
    │   ├── CircuitOpen   the provider's shared circuit is open (pipeline/providers/chain.py)
    │   └── BreakerOpen   a cost breaker is open: wait until it closes (pipeline/budgets/breaker.py)
    │       ├── BudgetBusy    the limit has room only once calls in flight settle: wait briefly
    │       └── CallOverLimit one call's worst case is more than a whole limit: tasks rejected
    └── PermanentError    retrying the same thing will not help
        ├── ProviderRefused   auth, bad request, unknown model, quota
        │   └── AccountRefused  bad key, no permission, no quota: the provider is down for us
        │       └── ProviderDown  skipped, it refused us before (pipeline/providers/chain.py)
        └── ContextTooLong    split the batch instead of retrying it
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error batchwise raises on purpose."""


class InputError(PipelineError):
    """A job line or task is invalid. `where` is `file:line` or a task id."""

    def __init__(self, message: str, *, where: str = "", field: str = "") -> None:
        self.where = where
        self.field = field
        self.reason = message
        prefix = f"{where}: " if where else ""
        suffix = f" (field {field!r})" if field else ""
        super().__init__(f"{prefix}{message}{suffix}")


class ConfigError(PipelineError):
    """A setting is missing or has a bad value."""


class ProviderError(PipelineError):
    """A provider call went wrong. Never carries an API key."""

    def __init__(self, message: str, *, provider: str, status: int | None = None) -> None:
        self.provider = provider
        self.status = status
        code = f" HTTP {status}" if status else ""
        super().__init__(f"{provider}{code}: {message}")


class TransientError(ProviderError):
    """Worth retrying later; `retry_after_s` is the provider's hint when it gave one."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after_s = retry_after_s


class RateLimited(TransientError):
    """HTTP 429 or the provider's equivalent."""


class PermanentError(ProviderError):
    """Retrying the same request will not help."""


class ProviderRefused(PermanentError):
    """Auth failure, bad request, unknown model or exhausted quota."""


class ContextTooLong(PermanentError):
    """The request exceeds the model's context: split the batch, don't retry it."""


class BreakerOpen(TransientError):
    """A cost circuit breaker is open for `scope` until `until` (epoch s): the call must wait."""

    def __init__(self, message: str, *, scope: str, until: float, retry_after_s: float) -> None:
        super().__init__(message, provider="budget", retry_after_s=retry_after_s)
        self.scope = scope
        self.until = until


class BudgetBusy(BreakerOpen):
    """The call fits its limits only once reservations of calls in flight settle: retry soon.
    The breaker stays closed, and the call waits whatever the breaker policy."""


class CallOverLimit(BreakerOpen):
    """One call's worst case exceeds a whole window's limit: it can never run under it, so its
    tasks are rejected (whatever the policy) and the breaker stays closed for the others."""


class AccountRefused(ProviderRefused):
    """The provider refuses this account (bad key, no permission, no quota or credit):
    every request would fail the same way, so the provider is marked down at once."""
