"""Settings for one test: its own key prefix and queue on a shared Redis, fast retries, and the
fake provider as the only provider, so tests on one Redis never see each other's state."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.config.settings import Settings
from pipeline.testing.provider import FakeProvider


def fake_openai_provider(fake: FakeProvider, **fields: Any) -> ProviderConfig:
    """`fake` as an OpenAI-protocol provider serving every `gpt-*` model; `fields` override."""
    values: dict[str, Any] = {
        "name": "fake-openai",
        "kind": "openai",
        "base_url": fake.openai_base_url,
        "api_key": SecretStr(fake.key),
        "models": ("gpt-*",),
        "read_timeout_s": 2.0,
    }
    values.update(fields)
    return ProviderConfig(**values)


def make_settings(redis_url: str, fake: FakeProvider | None = None, **overrides: Any) -> Settings:
    """Settings isolated to one test: own key prefix and queue; the fake provider if given.

    The environment is not read; `overrides` are Settings fields."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": f"t{tag}",
        "queue_name": f"t{tag}:queue",
        "state_dir": Path("/nonexistent"),
        "linger_ms": 20,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.2,
        "job_timeout_s": 20,
        "providers": (fake_openai_provider(fake),) if fake is not None else (),
        # the semantic cache (and its model) runs only where a test asks for it
        "cache_semantic": False,
        # a test of packed batches packs its few short tasks; the decision to send a group alone
        # where packing does not pay is tested where a test asks for it
        "pack_only_when_cheaper": False,
    }
    values.update(overrides)
    return load_settings(env={}, **values)
