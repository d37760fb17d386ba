"""arq entry points: `arq workers.WorkerSettings` (or `batchwise worker`) runs a worker."""

from __future__ import annotations

from typing import Any

from workers.settings import arq_settings, worker_settings

__all__ = ["WorkerSettings", "worker_settings"]


def __getattr__(name: str) -> Any:
    """`WorkerSettings` is built when arq looks it up, so importing `workers` reads no settings."""
    if name == "WorkerSettings":
        return arq_settings()
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
