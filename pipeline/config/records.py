"""The records the settings hold: provider endpoints, model limits, cascades, server keys, plans
and cost-breaker limits."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pipeline.config.rules import check_http_url
from pipeline.models import TenantName

ProviderKind = Literal["openai", "anthropic", "simulated"]


class ProviderConfig(BaseModel):
    """One provider endpoint. `models` lists the names it serves; `*` is a wildcard suffix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: ProviderKind = "openai"
    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    models: tuple[str, ...] = ()
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    max_in_flight: int = 128
    # shared rate limits per `Settings.rate_window_s` (a minute by default)
    rpm: int | None = None
    tpm: int | None = None
    model_rpm: dict[str, int] = Field(default_factory=dict)
    model_tpm: dict[str, int] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value:
            check_http_url(value)
        return value

    @field_validator("connect_timeout_s", "read_timeout_s", "max_in_flight", "rpm", "tpm")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(f"must be above 0, got {value}")
        return value

    def serves(self, model: str) -> bool:
        for pattern in self.models:
            if pattern == model or (pattern.endswith("*") and model.startswith(pattern[:-1])):
                return True
        return False


class ModelLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    context_tokens: int = Field(default=128_000, gt=0)
    output_tokens: int = Field(default=16_384, gt=0)


class CascadeSpec(BaseModel):
    """A task type's cascade: start on a cheap tier, escalate what fails its evaluators.

    An evaluator is a name (`json`, `schema`, `non_empty`, or one registered with
    `pipeline.register_evaluator`) or a table with `kind` and its parameters:
    `{kind = "labels", labels = [...]}`, `{kind = "length", min_chars = 1, max_chars = 500}`,
    `{kind = "schema", schema = {...}}`, `{kind = "callable", path = "module:function"}`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    evaluators: tuple[str | dict[str, Any], ...] = ("non_empty",)
    start_tier: str = "fast_cheap"
    max_tier: str = "best"
    on_exhausted: Literal["answer", "fail"] = "fail"


class ServerKey(BaseModel):
    """What an HTTP API key (known only by its SHA-256) stands for: a tenant, optionally a user
    (whose plan then applies) and a plan for that subject."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: TenantName
    user_id: str = ""
    plan: str | None = None


class Plan(BaseModel):
    """Limits of one plan; None means unlimited. An empty `allowed_models` allows every model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_min: int | None = Field(default=None, ge=0)
    daily_requests: int | None = Field(default=None, ge=0)
    daily_tokens: int | None = Field(default=None, ge=0)
    max_input_tokens: int | None = Field(default=None, ge=0)
    max_output_tokens: int | None = Field(default=None, ge=0)
    allowed_models: tuple[str, ...] = ()

    def allows(self, model: str) -> bool:
        """Whether tasks on this plan may run on `model` (`*` is a wildcard suffix)."""
        if not self.allowed_models:
            return True
        return any(
            p == model or (p.endswith("*") and model.startswith(p[:-1]))
            for p in self.allowed_models
        )


class BreakerLimits(BaseModel):
    """A scope's cost limits per clock hour and per UTC day; None means no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hourly_usd: Decimal | None = Field(default=None, ge=0)
    daily_usd: Decimal | None = Field(default=None, ge=0)
