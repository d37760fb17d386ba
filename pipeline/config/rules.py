"""What a valid setting is, and how a bad one is reported.

Settings are checked once, at load: a bad value stops the command with one line naming the
setting, where its value came from (an env var, the TOML file, or the caller) and what is wrong,
instead of an empty run, a hang or a crash much later.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def check_http_url(url: str) -> None:
    """Raise ValueError unless `url` is an http(s) URL with a host and a valid port. The
    message never repeats the URL: it may carry credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc}); give one like https://host:port/v1") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host; give one like https://host:port/v1")
    if port == 0:
        raise ValueError("port 0 is not a port to connect to; give the server's port")


# Lower bounds of numeric settings (of each value, for a table). Below them a run would be empty,
# would hang or would spin.
MINIMUM: dict[str, float] = {
    "max_line_bytes": 1,
    "submit_chunk": 1,
    "worker_max_jobs": 1,
    "job_timeout_s": 1,
    "job_max_tries": 1,
    "results_ttl_s": 1,
    "linger_ms": 0,
    "worker_drain_s": 0,
    "max_alone_attempts": 0,
    "provider_retries": 0,
    "backoff_base_s": 0,
    "backoff_cap_s": 0,
    "batch_api_poll_s": 1,
    "batch_api_linger_s": 0,
    "batch_api_max_requests": 1,
    "batch_api_max_bytes": 1,
    "batch_api_lease_s": 1,
    "nightly_poll_s": 1,
    "nightly_max_age_s": 1,
    "default_max_tokens": 1,
    "max_items": 1,
}


def check_redis_url(url: str) -> None:
    """Raise ValueError unless `url` is a redis://, rediss:// or unix:// URL. The message
    never repeats the URL: it may hold a password."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss:// or unix://")


def describe_problem(
    error: Any,
    data: dict[str, Any],
    env: Mapping[str, str],
    env_of: Mapping[str, str],
    path: Path | None,
    overrides: Mapping[str, Any],
) -> str:
    """`setting X (env BATCHWISE_X): what is wrong`, naming where the bad value came from."""
    loc = [str(p) for p in error["loc"]]
    name = loc[0] if loc else "?"
    if name == "providers" and len(loc) > 1 and loc[1].isdigit():
        provider = data["providers"][int(loc[1])].get("name", loc[1])
        name = ".".join(["providers", str(provider), *loc[2:]])
        var = f"{str(provider).upper()}_{loc[2].upper()}" if len(loc) > 2 else ""
    else:
        name = ".".join(loc)
        var = env_of.get(loc[0], "") if loc else ""
    if var and env.get(var) and loc[0] not in overrides:
        where = f"env {var}"
    elif loc and loc[0] in overrides:
        where = "passed in"
    elif path is not None:
        where = f"in {path}"
    else:
        where = "default"
    message = str(error["msg"]).removeprefix("Value error, ")
    secret = any(word in name for word in ("key", "url", "secret"))
    if error["type"] not in ("value_error", "assertion_error") and "input" in error and not secret:
        message += f", got {str(error['input'])[:60]!r}"
    return f"setting {name} ({where}): {message}"
