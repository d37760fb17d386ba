"""Loading the settings: defaults, then the TOML file, then the environment, then the caller."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.config.env import ENV_FIELDS, env_providers, env_values
from pipeline.config.rules import describe_problem
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError


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

    providers = {p["name"]: p for p in env_providers(env)}
    for name, raw_spec in (data.pop("providers", None) or {}).items():
        spec = dict(raw_spec)
        key_env = spec.pop("api_key_env", None)
        if key_env:
            spec["api_key"] = env.get(key_env, "")
        providers[name] = {"name": name, **spec}
    data["providers"] = tuple(providers.values())

    data.update(env_values(env))
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
