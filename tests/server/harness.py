"""The HTTP API in the test's event loop: uvicorn on a free port, an in-process worker, and the
official OpenAI SDK pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import httpx
import uvicorn
from arq.connections import RedisSettings, create_pool
from openai import AsyncOpenAI
from starlette.applications import Starlette

from pipeline.config.settings import Settings
from pipeline.server import create_app
from workers.lifecycle import in_process_worker, running

KEY_A = "sk-acme-0123456789abcdef"
KEY_B = "sk-globex-fedcba9876543210"
KEY_OPS = "sk-ops-5555555555555555"
API_KEYS = f"acme={KEY_A},globex={KEY_B},ops={KEY_OPS}"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the test runner owns the signals


@dataclass
class Api:
    base_url: str  # ends in /v1, as the SDK wants it
    app: Starlette

    def sdk(self, key: str) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=30)

    def http(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.base_url[:-3], headers=headers, timeout=30)


@contextlib.asynccontextmanager
async def api_server(settings: Settings, *, worker: bool = True) -> AsyncIterator[Api]:
    """`batchwise serve` with an in-process worker (unless `worker` is False: then queued
    lines stay pending) on `settings`, over real HTTP."""
    pool = await create_pool(RedisSettings.from_dsn(settings.redis_url or ""))
    background = running(in_process_worker(settings, pool, poll_delay=0.02), 5) if worker else None
    app = create_app(settings, pool, background=background)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        yield Api(f"http://127.0.0.1:{port}/v1", app)
    finally:
        server.should_exit = True
        await serving
        sock.close()
        await pool.aclose()
