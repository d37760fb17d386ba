"""`python -m pipeline.testing --port N [--key K] [--rpm N] [--window-s S] [--latency-ms MS]
[--ms-per-token MS]`: the fake provider as its own process. It prints `fake provider listening on
URL` once it accepts requests, and is driven over its control API (provider.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from pipeline.testing.provider import FAKE_KEY, FakeProvider


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.testing", description="Fake OpenAI/Anthropic provider for tests."
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--key", default=FAKE_KEY, help="the accepted API key")
    parser.add_argument("--rpm", type=int, default=None, help="requests per window, all models")
    parser.add_argument("--window-s", type=float, default=60.0, help="rate-limit window")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed time per answer")
    parser.add_argument(
        "--ms-per-token", type=float, default=0.0, help="added time per output token"
    )
    args = parser.parse_args(argv)
    fake = FakeProvider(
        key=args.key,
        port=args.port,
        rate_limit_rpm=args.rpm,
        window_s=args.window_s,
        latency_s=args.latency_ms / 1000,
        latency_per_token_s=args.ms_per_token / 1000,
    )

    def ready() -> None:
        print(f"fake provider listening on {fake.url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fake.serve_forever(on_ready=ready))


if __name__ == "__main__":
    main()
