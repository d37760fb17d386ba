"""Where a run stands, and its results with a flag that says whether the run was complete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .models import Result

if TYPE_CHECKING:
    from .client import BatchwiseClient


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

    def __init__(self, client: BatchwiseClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.progress: RunProgress | None = None

    @property
    def complete(self) -> bool | None:
        return None if self.progress is None else self.progress.complete

    async def __aiter__(self) -> AsyncIterator[Result]:
        self.progress = await self.client.progress(self.run_id)
        async with self.client.lost_redis(f"reading the results of run {self.run_id}"):
            async for result in self.client.pipeline.runs.results(self.run_id):
                yield result
