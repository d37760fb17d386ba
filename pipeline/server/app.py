"""The HTTP API application: its routes, and a lifespan that opens the pipeline (and whatever
runs beside it, such as an in-process worker) and closes them after the last request."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from pipeline.config.settings import Settings
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.server import openai_api, ops, tasks
from pipeline.server.auth import KeyRing, read_keys
from pipeline.server.batches import BatchStore
from pipeline.server.chat import ChatBatcher
from pipeline.server.errors import ApiError, handle_api_error, handle_unexpected
from pipeline.server.files import FileStore
from pipeline.server.state import ServerState

ROUTES = [
    Route("/v1/files", openai_api.create_file, methods=["POST"]),
    Route("/v1/files", openai_api.list_files, methods=["GET"]),
    Route("/v1/files/{id}", openai_api.get_file, methods=["GET"]),
    Route("/v1/files/{id}", openai_api.delete_file, methods=["DELETE"]),
    Route("/v1/files/{id}/content", openai_api.get_content, methods=["GET"]),
    Route("/v1/batches", openai_api.create_batch, methods=["POST"]),
    Route("/v1/batches", openai_api.list_batches, methods=["GET"]),
    Route("/v1/batches/{id}", openai_api.get_batch, methods=["GET"]),
    Route("/v1/batches/{id}/cancel", openai_api.cancel_batch, methods=["POST"]),
    Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
    Route("/v1/tasks", tasks.create_tasks, methods=["POST"]),
    Route("/v1/runs/{id}", tasks.get_run, methods=["GET"]),
    Route("/v1/runs/{id}/results", tasks.run_results, methods=["GET"]),
    Route("/healthz", ops.healthz, methods=["GET"]),
    Route("/metrics", ops.metrics, methods=["GET"]),
    Route("/dashboard", ops.dashboard, methods=["GET"]),
]


def server_settings(settings: Settings, keyring: KeyRing) -> Settings:
    """The settings with the plans that API keys carry added to the plan assignments."""
    assigned = {**settings.plan_assignments, **keyring.plan_assignments()}
    return settings.model_copy(update={"plan_assignments": assigned})


def create_app(
    settings: Settings,
    redis: Redis,
    *,
    background: contextlib.AbstractAsyncContextManager[Any] | None = None,
    keyring: KeyRing | None = None,
) -> Starlette:
    """The API over `redis` (`settings.redis_url` must point at it). `background` (an
    in-process worker, say) runs for the life of the app and stops after the last request.
    `keyring` is the settings' keys when already read (else they are read here)."""
    if keyring is None:  # refuses to build a server that no key can use
        keyring, _ = read_keys(settings)
    settings = server_settings(settings, keyring)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pipeline = Pipeline(settings, redis)
        client = BatchwiseClient(pipeline)
        file_store = FileStore(redis, pipeline.keys, settings.results_ttl_s)
        state = ServerState(
            pipeline=pipeline,
            client=client,
            keyring=keyring,
            files=file_store,
            batches=BatchStore(client, file_store),
            chat=ChatBatcher(client, settings.server_chat_linger_ms / 1000),
        )
        app.state.batchwise = state
        try:
            async with background or contextlib.nullcontext():
                yield
        finally:
            await state.batches.aclose()
            await state.chat.aclose()
            await pipeline.aclose()

    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(ops.Guard, max_body_bytes=settings.server_max_body_bytes)],
        exception_handlers={ApiError: handle_api_error, Exception: handle_unexpected},
        lifespan=lifespan,
    )
