"""What every command shares: the two consoles, a plain line on stderr, the one `error:` line a
failed command ends with, and the state of a process that runs a worker.

Exit codes: 0 done; 2 an error the user can fix (one `error: ...` line on stderr); 3 `results`
of a run still in progress; 130 / 143 a run stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal, InvalidOperation

from redis.asyncio import Redis
from rich.console import Console

from pipeline.config.settings import Settings
from pipeline.redaction import redact, secret_values
from pipeline.state.embedded import EmbeddedRedis
from pipeline.state.opening import attach
from pipeline.terminal import printable, terminal_safe

err = Console(stderr=True)
out = Console()

ERROR_EXIT = 2


def say(message: str) -> None:
    """A line on stderr, as it is (no markup, no wrapping: paths stay whole; controls escaped)."""
    err.print(printable(message), markup=False, highlight=False, soft_wrap=True)


def fail(message: str, settings: Settings | None, code: int = ERROR_EXIT) -> int:
    """Print `error: ...` (keys masked; data escaped, never read as markup); returns `code`.
    A message that already starts with `error: ` is not prefixed twice."""
    secrets = secret_values(settings) if settings else ()
    message = message.removeprefix("error: ")
    text = terminal_safe(redact(message, secrets), keep_lines=True)
    err.print(f"[red]error:[/red] {text}", highlight=False, soft_wrap=True)
    return code


def iso_day(text: str) -> date:
    """An argument that is a day, YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


@contextlib.asynccontextmanager
async def worker_state(settings: Settings) -> AsyncIterator[Settings]:
    """The state for a process that runs a worker (`run`, `worker`, `serve`): `REDIS_URL`, or the
    embedded server attached as a worker host. Yields settings whose `redis_url` points at it.

    On the embedded server with no other worker host attached, no earlier worker can be alive
    (the kernel dropped a killed one's flocks): the in-progress marks its batches left are
    cleared, so they run again now rather than when their leases run out."""
    with attach(settings, hosts_worker=True) as attached:
        if attached.embedded is not None:
            await _take_over(attached.embedded, attached.settings)
        yield attached.settings


async def _take_over(embedded: EmbeddedRedis, settings: Settings) -> None:
    from workers.recovery import release_dead_jobs

    if embedded.adopted:
        say(
            f"reusing the Redis server (pid {embedded.pid}) an earlier process left running "
            f"in {embedded.dir}"
        )
    if embedded.other_workers:
        return
    redis = Redis.from_url(embedded.url)
    try:
        released = await release_dead_jobs(redis, settings.queue_name)
    finally:
        await redis.aclose()
    if released:
        say(
            f"an earlier run or worker stopped with {released} batch(es) in progress; running "
            "them again now"
        )


def usd_amount(text: str) -> Decimal:
    """A finite, non-negative amount in USD (`12.50`, `$12.50`), for argparse."""
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"not an amount in USD (e.g. 12.50): {text!r}")
    return value
