"""Where a run stands, and its results with a flag that says whether the run was complete."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from pipeline.core.runs import RunStore
from pipeline.models import Result


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: `complete` once it is sealed and every task has its result."""

    run_id: str
    done: int
    total: int
    sealed: bool

    @property
    def complete(self) -> bool:
        return self.sealed and self.done >= self.total


class RunResults:
    """A run's results in submission order (`async for`); `complete` says, once iteration has
    begun, whether the run had finished when reading began (False: more results will come)."""

    def __init__(
        self,
        run_id: str,
        runs: RunStore,
        progress: Callable[[str], Awaitable[RunProgress]],
        guard: Callable[[], contextlib.AbstractAsyncContextManager[None]],
    ) -> None:
        self.run_id = run_id
        self.runs = runs
        self._progress = progress
        self._guard = guard  # turns Redis lost for good into one line saying what to do
        self.progress: RunProgress | None = None

    @property
    def complete(self) -> bool | None:
        return None if self.progress is None else self.progress.complete

    async def __aiter__(self) -> AsyncIterator[Result]:
        self.progress = await self._progress(self.run_id)
        async with self._guard():
            async for result in self.runs.results(self.run_id):
                yield result
