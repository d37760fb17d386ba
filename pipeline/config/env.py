"""The environment's part of the settings: which env var sets which field, and the providers
configured the way the official SDKs are, by their API-key variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    # budgets, plans and the cost circuit breaker
    "BATCHWISE_BREAKER_POLICY": "breaker_policy",
    "BATCHWISE_BREAKER_RECHECK_S": "breaker_recheck_s",
    "BATCHWISE_PLAN_DEFAULT": "plan_default",
    "BATCHWISE_BUDGET_MONTHLY_USD": "budget_monthly_usd",
    "BATCHWISE_BUDGET_WEBHOOK_URL": "budget_webhook_url",
    "BATCHWISE_BUDGET_DEGRADE": "budget_degrade",
    # providers and resilience
    "BATCHWISE_HEALTH_FAILURES": "health_failures",
    "BATCHWISE_HEALTH_COOLDOWN_S": "health_cooldown_s",
    "BATCHWISE_HEALTH_AUTH_COOLDOWN_S": "health_auth_cooldown_s",
    "BATCHWISE_RATE_WINDOW_S": "rate_window_s",
    "BATCHWISE_RATE_GUARD_S": "rate_guard_s",
    "BATCHWISE_RATE_WAIT_MAX_S": "rate_wait_max_s",
    # provider batch APIs and nightly runs
    "BATCHWISE_BATCH_API": "batch_api",
    "BATCHWISE_BATCH_API_POLL_S": "batch_api_poll_s",
    "BATCHWISE_BATCH_API_LINGER_S": "batch_api_linger_s",
    "BATCHWISE_BATCH_API_MAX_REQUESTS": "batch_api_max_requests",
    "BATCHWISE_BATCH_API_MAX_BYTES": "batch_api_max_bytes",
    "BATCHWISE_NIGHTLY_INBOX": "nightly_inbox",
    "BATCHWISE_NIGHTLY_OUTBOX": "nightly_outbox",
    "BATCHWISE_NIGHTLY_POLL_S": "nightly_poll_s",
    # ledger reports, anomaly alerts, worker metrics
    "BATCHWISE_METRICS_PORT": "metrics_port",
    "BATCHWISE_METRICS_HOST": "metrics_host",
    "BATCHWISE_ANOMALY_SIGMA_WARNING": "anomaly_sigma_warning",
    "BATCHWISE_ANOMALY_SIGMA_CRITICAL": "anomaly_sigma_critical",
    "BATCHWISE_LEDGER_RETENTION_S": "ledger_retention_s",
    "BATCHWISE_LEDGER_ARCHIVE_DIR": "ledger_archive_dir",
    "BATCHWISE_LEDGER_ARCHIVE_EVERY_S": "ledger_archive_every_s",
    # routing and optimisation
    "BATCHWISE_AUDIT_SHARE": "audit_share",
    "BATCHWISE_AUDIT_THRESHOLD": "audit_threshold",
    "BATCHWISE_AUDIT_MIN_SAMPLES": "audit_min_samples",
    "BATCHWISE_PROMPT_CACHE_MIN_TOKENS": "prompt_cache_min_tokens",
    "BATCHWISE_PACK_ONLY_WHEN_CHEAPER": "pack_only_when_cheaper",
    # response cache
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
    # durability
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


def env_values(env: Mapping[str, str]) -> dict[str, str]:
    """The scalar settings the environment sets; an empty variable sets nothing."""
    return {field: env[var] for var, field in ENV_FIELDS.items() if env.get(var)}


OPENAI_MODELS = ("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*")
ANTHROPIC_MODELS = ("claude-*",)
GEMINI_MODELS = ("gemini-*",)
GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai"


# The providers the official SDKs' variables configure: name, kind, the API-key variable, the
# base-URL variable and its default, the models served. Anthropic speaks its native Messages API,
# Gemini its OpenAI-compatible endpoint.
SDK_PROVIDERS = (
    (
        "openai",
        "openai",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "https://api.openai.com/v1",
        OPENAI_MODELS,
    ),
    (
        "anthropic",
        "anthropic",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "https://api.anthropic.com",
        ANTHROPIC_MODELS,
    ),
    ("gemini", "openai", "GEMINI_API_KEY", "GEMINI_BASE_URL", GEMINI_BASE_URL, GEMINI_MODELS),
)


def env_providers(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Providers configured the way the official SDKs are: by their API-key variables."""
    return [
        {
            "name": name,
            "kind": kind,
            "base_url": env.get(url_var) or default_url,
            "api_key": env[key_var],
            "models": models,
        }
        for name, kind, key_var, url_var, default_url, models in SDK_PROVIDERS
        if env.get(key_var)
    ]
