"""batchwise: an asynchronous batch pipeline that cuts the cost of LLM API work.

The public API is the names in `__all__`. They load on first use: Python runs this module
before any `pipeline.*` submodule, so importing them here would make every import of the
package (a worker, a CLI command, `pipeline.errors` alone) pay for the client, the cache and
the routing tables.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config.loading import load_settings
    from pipeline.config.settings import Settings
    from pipeline.core.client import BatchwiseClient
    from pipeline.errors import (
        AccountRefused,
        BreakerOpen,
        BudgetBusy,
        CallOverLimit,
        ConfigError,
        ContextTooLong,
        InputError,
        PermanentError,
        PipelineError,
        ProviderError,
        ProviderRefused,
        RateLimited,
        TransientError,
    )
    from pipeline.models import Result, Task
    from pipeline.routing.cascade import register_evaluator
    from pipeline.state.connecting import RedisUnavailable
    from pipeline.state.durable import NotOnDisk

__version__ = "0.1.0"

_HOMES: dict[str, str] = {
    "BatchwiseClient": "pipeline.core.client",
    "Settings": "pipeline.config.settings",
    "load_settings": "pipeline.config.loading",
    "Task": "pipeline.models",
    "Result": "pipeline.models",
    "register_evaluator": "pipeline.routing.cascade",
    "RedisUnavailable": "pipeline.state.connecting",
    "NotOnDisk": "pipeline.state.durable",
    **{
        name: "pipeline.errors"
        for name in (
            "PipelineError",
            "InputError",
            "ConfigError",
            "ProviderError",
            "TransientError",
            "RateLimited",
            "BreakerOpen",
            "BudgetBusy",
            "CallOverLimit",
            "PermanentError",
            "ProviderRefused",
            "AccountRefused",
            "ContextTooLong",
        )
    },
}

__all__ = [
    "AccountRefused",
    "BatchwiseClient",
    "BreakerOpen",
    "BudgetBusy",
    "CallOverLimit",
    "ConfigError",
    "ContextTooLong",
    "InputError",
    "NotOnDisk",
    "PermanentError",
    "PipelineError",
    "ProviderError",
    "ProviderRefused",
    "RateLimited",
    "RedisUnavailable",
    "Result",
    "Settings",
    "Task",
    "TransientError",
    "__version__",
    "load_settings",
    "register_evaluator",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
