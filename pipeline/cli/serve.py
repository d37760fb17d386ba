"""`batchwise serve`: the HTTP API on uvicorn, over the shared Redis (`REDIS_URL`) or, without
it, the embedded one with an in-process worker, as `batchwise run` does.

SIGTERM or SIGINT: stop accepting connections, let requests in flight finish (up to
`server_drain_s`), then drain the in-process worker (`worker_drain_s`) and close.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from typing import Any

from pipeline.cli.common import worker_state
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.redaction import redact_logs, secret_values
from pipeline.server.auth import KeyRing, key_hash, read_keys


def add_cli(sub: Any) -> None:
    serve = sub.add_parser(
        "serve", help="the HTTP API: OpenAI Files/Batches and chat, native tasks (docs/server.md)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="port (default 8787)")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="run no worker in this process (workers run elsewhere on REDIS_URL)",
    )
    serve.add_argument(
        "--hash-key",
        action="store_true",
        help="print the SHA-256 of the API key read from stdin (for server_key_hashes) and exit",
    )
    serve.set_defaults(handler=cmd_serve)


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.hash_key:
        print(key_hash(sys.stdin.readline().strip()))
        return 0
    keyring, plain_keys = read_keys(settings)  # no usable key: refuse before starting anything
    if args.no_worker and not settings.redis_url:
        raise ConfigError("--no-worker needs REDIS_URL: the workers that answer must share it")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    redact_logs((*secret_values(settings), *plain_keys))
    async with worker_state(settings) as state:
        await _serve(args, state, keyring)
    return 0


async def _serve(args: argparse.Namespace, settings: Settings, keyring: KeyRing) -> None:
    import uvicorn
    from arq.connections import RedisSettings, create_pool

    from pipeline.server.app import create_app
    from workers.lifecycle import in_process_worker, running

    redis = await create_pool(RedisSettings.from_dsn(settings.redis_url or ""))
    # uvicorn restores this handler after its graceful shutdown and re-raises SIGTERM into it:
    # ignoring it there lets the embedded server be stopped before the process exits
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        worker: contextlib.AbstractAsyncContextManager[Any] | None = None
        if not args.no_worker:
            worker = running(in_process_worker(settings, redis), settings.worker_drain_s)
        app = create_app(settings, redis, background=worker, keyring=keyring)
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            access_log=False,  # ours (batchwise.access) leaves out keys and bodies
            log_config=None,
            timeout_graceful_shutdown=int(settings.server_drain_s),
            # longer than clients keep idle connections (httpx: 5 s), so the client closes
            # first: a server closing at the same moment makes a reused connection fail
            timeout_keep_alive=65,
        )
        await uvicorn.Server(config).serve()
    finally:
        signal.signal(signal.SIGTERM, previous)
        await redis.aclose()
