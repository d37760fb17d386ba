"""Providers: one protocol, interchangeable clients, and the chain that calls them."""

from __future__ import annotations

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.providers.anthropic import AnthropicMessages
from pipeline.providers.base import ChatRequest, ChatResponse, Provider
from pipeline.providers.openai import OpenAICompatible
from pipeline.providers.simulated import SimulatedProvider

__all__ = ["ChatRequest", "ChatResponse", "Provider", "build_providers"]


def build_providers(settings: Settings) -> list[Provider]:
    """The configured providers in order; the simulated one when none is configured."""
    providers: list[Provider] = []
    for config in settings.providers:
        if config.kind == "openai":
            providers.append(OpenAICompatible(config))
        elif config.kind == "anthropic":
            providers.append(AnthropicMessages(config))
        elif config.kind == "simulated":
            providers.append(SimulatedProvider())
        else:
            raise ConfigError(f"provider {config.name!r}: kind {config.kind!r} is not supported")
    if not providers:
        providers.append(SimulatedProvider())
    return providers
