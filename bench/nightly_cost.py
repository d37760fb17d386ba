"""Cost of one job file sent synchronously and through the batch-API route, in the same process.

    python -m bench.nightly_cost [--tasks 500]

Both runs use the fake provider (same token counts), a private Redis and an in-process worker,
and price calls with the real price table; the ratio is what the batch API saves on top of
packing. Prints both ledger totals, the ratio, and the wall time of each route on the fake.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings, create_pool

from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.core.client import BatchwiseClient
from pipeline.core.wiring import Pipeline
from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing import FakeProvider
from workers.lifecycle import in_process_worker, running


async def run_once(redis_url: str, fake: FakeProvider, n: int, batch_api: bool) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        env={},
        redis_url=redis_url,
        key_prefix=f"b{tag}",
        queue_name=f"b{tag}:queue",
        linger_ms=20,
        batch_api=batch_api,
        batch_api_poll_s=1,
        batch_api_linger_s=0.2,
        providers=(
            ProviderConfig(
                name="fake",
                kind="openai",
                base_url=fake.openai_base_url,
                api_key=fake.key,
                models=("gpt-*",),
            ),
        ),
    )
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = in_process_worker(settings, pool, poll_delay=0.02)
    client = BatchwiseClient(Pipeline(settings, pool))
    tasks = [
        {"id": f"t{i}", "task_type": "faq", "system": "Answer briefly.", "prompt": f"question {i}"}
        for i in range(n)
    ]
    started = time.perf_counter()
    try:
        async with running(worker, grace_s=5):
            run_id = await client.submit(tasks, complete=True)
            await client.wait(run_id, timeout_s=120)
            elapsed_s = time.perf_counter() - started
            records = [r async for r in client.pipeline.ledger.records()]
            ok = len([r async for r in client.results(run_id) if r.status == "ok"])
    finally:
        await client.pipeline.aclose()
    return {
        "ok": ok,
        "calls": len(records),
        "batch_api_calls": sum(1 for r in records if r.batch_api),
        "cost_usd": sum((r.cost_usd or Decimal(0) for r in records), Decimal(0)),
        "elapsed_s": elapsed_s,
    }


async def main_async(n: int) -> None:
    with tempfile.TemporaryDirectory() as state, FakeProvider() as fake:
        server = EmbeddedRedis(Path(state))
        url = server.start()
        try:
            sync = await run_once(url, fake, n, batch_api=False)
            batch = await run_once(url, fake, n, batch_api=True)
        finally:
            server.stop()
    for name, row in (("synchronous", sync), ("batch API", batch)):
        print(
            f"{name:12s} ok={row['ok']:5d} calls={row['calls']:4d} "
            f"(batch api {row['batch_api_calls']:4d})  cost=${row['cost_usd']:.6f}  "
            f"wall={row['elapsed_s']:.2f}s"
        )
    ratio = batch["cost_usd"] / sync["cost_usd"] if sync["cost_usd"] else Decimal(0)
    print(f"batch API / synchronous cost: {ratio:.3f}  (saving {1 - ratio:.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main_async(args.tasks))


if __name__ == "__main__":
    main()
