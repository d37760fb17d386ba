"""A batch whose items go alone: one provider call per item, concurrently, inside the batch's job.

The packer marks a batch `alone` when packing its items would cost more than sending them one by
one (packing/gain.py). The batch still leaves as one arq job, so job slots and pickup stay per
batch, not per task; each item becomes a batch of one (`<batch>.s<i>`, `i` its place in the
batch), which the executor runs like any other batch (budgets, ledger, audit, cascade, retries),
all at once. These one-item batches live in memory only: an answered item is gone from Redis,
and a stored answer is reused, so a job that runs again re-runs only the items still pending,
without calling twice for any of them. The calls of one try of the batch's job share one budget
hold (`budgets/shared.py`, `<batch>:alone:<try>`) when the breaker has room for them all at once,
and their answers go out together (`Together`) once every call has ended: one write of results
and cache entries for the batch, not one per item, and one set of savings records for the try
(a try that follows a failed one writes the savings of the calls it made).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis

from pipeline.budgets.shared import Hold
from pipeline.core.attribution import CallBook
from pipeline.costs.savings import Answered
from pipeline.keys import Keys
from pipeline.models import Batch, Item
from pipeline.providers.base import ChatResponse


class Runner(Protocol):
    redis: Redis
    keys: Keys
    book: CallBook

    async def run(self, batch_id: str, *, last_try: bool = False, attempt: int = 1) -> list[str]:
        """Run a batch; return the ids of child batches to enqueue."""
        ...

    async def hand_out(self, settled: Settled) -> list[Answered]:
        """Cost, cache and hand out answers to the tasks waiting on them."""
        ...

    async def execute(
        self,
        batch: Batch,
        items: Sequence[Item],
        stored: bytes | None,
        *,
        last_try: bool = False,
        answer: ChatResponse | None = None,
        batch_api: bool = False,
        attempt: int = 1,
        hand_out: HandOut | None = None,
        hold: Hold | None = None,
    ) -> list[str]:
        """Run a loaded batch; return the ids of child batches to enqueue."""
        ...

    async def share_hold(
        self, batch: Batch, calls: Sequence[tuple[Batch, Item]], attempt: int
    ) -> Hold | None:
        """One budget hold for these calls of `batch`, or None."""
        ...


Settled = Sequence[tuple[Item, dict[str, Any]]]
HandOut = Callable[[Settled], Awaitable[list[Answered]]]


class Together:
    """Hands out the answers of several calls in one go, once each call has answered or ended.

    Each call takes a `Ticket`; the last one in writes every answer with `hand_out` (the
    executor's), and each caller gets back what its own answers became."""

    def __init__(self, hand_out: HandOut) -> None:
        self.hand_out = hand_out
        self.tickets = 0
        self.settled: list[tuple[Item, dict[str, Any]]] = []
        self.done: asyncio.Future[list[Answered]] = asyncio.get_running_loop().create_future()

    def ticket(self) -> Ticket:
        self.tickets += 1
        return Ticket(self)

    async def _in(self) -> None:
        self.tickets -= 1
        if self.tickets == 0 and not self.done.done():
            try:
                self.done.set_result(await self.hand_out(self.settled) if self.settled else [])
            except Exception as exc:  # each caller waiting on its answers raises it
                self.done.set_exception(exc)


class Ticket:
    """One call's place in a `Together`: `hand_out` once it has answers, `leave` in any case."""

    def __init__(self, together: Together) -> None:
        self.together = together
        self.left = False

    async def hand_out(self, settled: Settled) -> list[Answered]:
        start = len(self.together.settled)
        self.together.settled += settled
        await self.leave()
        answered = await asyncio.shield(self.together.done)
        return answered[start : start + len(settled)]

    async def leave(self) -> None:
        if not self.left:
            self.left = True
            await self.together._in()


def alone_batch(batch: Batch, item: Item) -> Batch:
    """The one-item batch that sends `item` of the alone `batch` on its own."""
    return batch.model_copy(
        update={
            "id": f"{batch.id}.s{batch.item_keys.index(item.key)}",
            "item_keys": (item.key,),
            "alone_attempts": 0,
            "alone": False,
            "recorded": False,
        }
    )


async def run_alone(
    runner: Runner, batch: Batch, items: Sequence[Item], *, last_try: bool, attempt: int
) -> list[str]:
    """Send every item of `batch` as its own call, concurrently; return the retry batches to
    enqueue. A transient failure of any call is raised once every call has ended."""
    singles = [alone_batch(batch, item) for item in items]
    # Not open batches of their own either: the sweeper would give a slow call a second job.
    # The parent stays open until they all end, and its job reruns them.
    stored = await runner.redis.mget([runner.keys.batch_response(b.id) for b in singles])
    answers = zip(singles, items, stored, strict=True)
    calling = [(one, item) for one, item, answer in answers if answer is None]
    hold = await runner.share_hold(batch, calling, attempt)
    together = Together(runner.hand_out)

    async def run(single: Batch, item: Item, answer: bytes | None, ticket: Ticket) -> list[str]:
        try:
            return await runner.execute(
                single,
                [item],
                answer,
                last_try=last_try,
                attempt=attempt,
                hand_out=ticket.hand_out,
                hold=hold,
            )
        finally:
            await ticket.leave()

    # every call holds its ticket before any starts: one that answers at once (its answer was
    # stored by an earlier try) must not be the last one in while the others have yet to start
    tickets = [together.ticket() for _ in singles]
    runs = [run(*one) for one in zip(singles, items, stored, tickets, strict=True)]
    children, failure = await gathered(runs)
    if together.done.done() and not together.done.exception():
        this_try = batch.model_copy(update={"id": f"{batch.id}:alone:{attempt}"})
        await runner.book.record_savings(this_try, together.done.result())
    if failure is not None:
        raise failure
    return children


async def run_children(
    runner: Runner, ids: Sequence[str], *, last_try: bool, attempt: int
) -> list[str]:
    """Run these child batches at once; return their retry batches. A failure of any is
    raised once every child has ended (the parent's job then reruns them all)."""
    runs = [runner.run(child, last_try=last_try, attempt=attempt) for child in ids]
    children, failure = await gathered(runs)
    if failure is not None:
        raise failure
    return children


async def gathered(
    runs: Sequence[Awaitable[list[str]]],
) -> tuple[list[str], BaseException | None]:
    """Await every run; (the retry batches of those that ended, the first failure or None)."""
    children: list[str] = []
    failure: BaseException | None = None
    for outcome in await asyncio.gather(*runs, return_exceptions=True):
        if isinstance(outcome, BaseException):
            failure = failure or outcome
        else:
            children += outcome
    return children, failure
