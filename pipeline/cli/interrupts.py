"""SIGINT and SIGTERM for a command in the foreground (`batchwise run`): the first signal asks
it to stop gracefully, a second one cuts the graceful part short. Both signals mean the same, so
a service manager's SIGTERM is as clean as a Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Use as a context manager inside the event loop: `first` is set by the first signal,
    `again` by any later one."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.again = asyncio.Event()
        self.received: signal.Signals | None = None

    def __enter__(self) -> Interrupts:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.first.is_set():
            self.again.set()
            return
        self.received = sig
        self.first.set()

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal's number."""
        return 128 + int(self.received or signal.SIGINT)

    async def until_signal(self, work: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
        """Run `work` unless a signal comes first; then cancel it. Returns (interrupted, result)."""
        task = asyncio.ensure_future(work)
        signalled = asyncio.ensure_future(self.first.wait())
        try:
            await asyncio.wait({task, signalled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            signalled.cancel()
        if task.done():
            return False, task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return True, None
