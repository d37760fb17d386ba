"""arq entry points: `arq workers.WorkerSettings` (or `batchwise worker`) runs a worker."""

from __future__ import annotations

from workers.settings import WorkerSettings, worker_settings

__all__ = ["WorkerSettings", "worker_settings"]
