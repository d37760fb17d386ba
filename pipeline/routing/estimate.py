"""`batchwise plan FILE`: what a job file costs, naively and with each lever, before any call.

Nothing is sent to a model. The file is validated and shaped exactly as `batchwise run` would
(router, max_tokens defaults, compression), grouped and packed with the packer's own limits and
wire format, and every request is answered by the simulated provider's output-length model and
counted with the pipeline's tokenizer, then priced with the price table. Rows are cumulative:

    naive        every task alone on the baseline model (gpt-4o), duplicates and all
    duplicates   identical tasks answered once (single-flight)
    routing      each task on the model the router picks
    compression  shorter instructions for opted-in task types (only when any is)
    packing      tasks packed into shared calls, as the packer builds them: what `run` records
    audit        the packing audit's alone re-runs of a sample of packed items (when enabled)
    batch API    the same calls at the provider's batch-API prices

The packing row (with the audit) is the estimate of what `batchwise run` records on the simulated
provider. Real models answer at other lengths; the estimate is as good as that length model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.config.settings import Settings
from pipeline.core.intake import LineError, read_file
from pipeline.costs.prices import PriceTable
from pipeline.fingerprint import group_key, item_key
from pipeline.models import Batch, Item, Task, Usage
from pipeline.packing.audit import audited
from pipeline.packing.gain import Expected, GainSettings, packing_pays
from pipeline.packing.request import build_item, build_request, group_meta
from pipeline.packing.selection import budgets_for, select, sizes_of
from pipeline.packing.wire import ITEM_OVERHEAD_TOKENS
from pipeline.providers import build_providers
from pipeline.providers.base import ChatRequest
from pipeline.providers.chain import ProviderChain
from pipeline.providers.simulated import SimulatedProvider
from pipeline.routing.router import Rejection, Router
from pipeline.tokens import count_tokens


@dataclass(frozen=True)
class Call:
    """One provider call the plan expects: its model and simulated usage."""

    model: str
    input_tokens: int
    output_tokens: int
    items: int = 1
    task_type: str = ""
    cost_usd: Decimal | None = None  # at standard prices


@dataclass
class Lever:
    """One row of the plan: the cost with this lever and every lever above it."""

    name: str
    description: str
    calls: list[Call] = field(default_factory=list)
    cost_usd: Decimal = Decimal(0)
    unpriced_calls: int = 0

    @property
    def input_tokens(self) -> int:
        return sum(c.input_tokens for c in self.calls)

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.calls)


@dataclass
class Plan:
    """The lever table of a job file, plus what was left out of it."""

    source: str
    tasks: int
    invalid: int
    rejected: int
    levers: list[Lever]
    baseline_model: str = "gpt-4o"
    tokens_saved_by_compression: dict[str, int] = field(default_factory=dict)
    # a provider prompt cache reading each group's shared system block after its first call
    prompt_cache_tokens: int = 0
    prompt_cache_saving_usd: Decimal = Decimal(0)

    @property
    def naive_usd(self) -> Decimal:
        return self.levers[0].cost_usd

    def lever(self, name: str) -> Lever:
        return next(lever for lever in self.levers if lever.name == name)

    @property
    def run_estimate_usd(self) -> Decimal:
        """What `batchwise run` is expected to record: packing plus the audit's re-runs."""
        names = [lever.name for lever in self.levers]
        return self.lever("audit" if "audit" in names else "packing").cost_usd

    def as_dict(self) -> dict[str, Any]:
        naive = self.naive_usd
        return {
            "source": self.source,
            "tasks": self.tasks,
            "invalid": self.invalid,
            "rejected": self.rejected,
            "baseline_model": self.baseline_model,
            "run_estimate_usd": float(self.run_estimate_usd),
            "tokens_saved_by_compression": self.tokens_saved_by_compression,
            "prompt_cache_tokens": self.prompt_cache_tokens,
            "prompt_cache_saving_usd": float(self.prompt_cache_saving_usd),
            "levers": [
                {
                    "lever": lever.name,
                    "calls": len(lever.calls),
                    "input_tokens": lever.input_tokens,
                    "output_tokens": lever.output_tokens,
                    "cost_usd": float(lever.cost_usd),
                    "saving_vs_naive": float(1 - lever.cost_usd / naive) if naive else 0.0,
                    "unpriced_calls": lever.unpriced_calls,
                }
                for lever in self.levers
            ],
        }


class Planner:
    """Builds the lever table for tasks without calling any model."""

    def __init__(self, settings: Settings, prices: PriceTable | None = None) -> None:
        self.settings = settings
        self.prices = prices or PriceTable(settings.prices)
        self.providers = build_providers(settings)
        chain = ProviderChain(self.providers, settings)
        plain = settings.model_copy(update={"compress_task_types": ()})
        self.router = Router(settings, chain, self.prices)
        self.plain_router = Router(plain, chain, self.prices)
        self.simulator = SimulatedProvider()
        self.cache_tokens, self.cache_saving = 0, Decimal(0)

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()

    async def plan(self, entries: Iterable[Task | LineError], *, source: str = "") -> Plan:
        """The lever table for validated tasks (line errors are counted, not costed)."""
        tasks: list[Task] = []
        invalid = 0
        for entry in entries:
            if isinstance(entry, LineError):
                invalid += 1
            else:
                tasks.append(entry.model_copy(update={"run_id": "plan"}))
        routed: list[Task] = []
        compressed: list[Task] = []
        for task in tasks:
            shaped = self.plain_router.shape(task)
            full = self.router.shape(task)
            if isinstance(shaped, Rejection) or isinstance(full, Rejection):
                continue
            routed.append(shaped)
            compressed.append(full)
        kept = {task.id for task in routed}
        baseline = [
            task.model_copy(
                update={
                    "model": self.settings.baseline_model,
                    "max_tokens": task.max_tokens
                    or self.settings.default_max_tokens.get(task.task_type, 400),
                }
            )
            for task in tasks
            if task.id in kept
        ]

        levers = [
            await self._alone(
                "naive", f"every task alone on {self.settings.baseline_model}", baseline
            ),
            await self._alone("duplicates", "identical tasks answered once", _unique(baseline)),
            await self._alone("routing", "each task on its routed model", _unique(routed)),
        ]
        saved: dict[str, int] = {}
        if self.settings.compress_task_types:
            levers.append(
                await self._alone(
                    "compression", "shorter instructions (opted-in types)", _unique(compressed)
                )
            )
            for before, after in zip(routed, compressed, strict=True):
                if before.system != after.system:
                    saved[before.id] = count_tokens(before.system) - count_tokens(after.system)
        packing, packed_items = await self._packed(_unique(compressed))
        levers.append(packing)
        if self.settings.audit_share > 0 and packed_items:
            audit = Lever("audit", f"{self.settings.audit_share:.0%} of packed items re-run alone")
            audit.calls = list(packing.calls)
            audit.cost_usd, audit.unpriced_calls = packing.cost_usd, packing.unpriced_calls
            for task, item in packed_items:
                if audited(item.key, self.settings.audit_share):
                    await self._add_alone_call(audit, task.model, task.system, item, task)
            levers.append(audit)
        last = levers[-1]
        batch_api = Lever("batch API", "the same calls at batch-API prices", calls=last.calls)
        for call in last.calls:
            self._price(batch_api, call, batch_api=True)
        levers.append(batch_api)
        return Plan(
            source=source,
            tasks=len(tasks) + invalid,
            invalid=invalid,
            rejected=len(tasks) - len(routed),
            levers=levers,
            baseline_model=self.settings.baseline_model,
            tokens_saved_by_compression=saved,
            prompt_cache_tokens=self.cache_tokens,
            prompt_cache_saving_usd=self.cache_saving,
        )

    async def _alone(self, name: str, description: str, tasks: Sequence[Task]) -> Lever:
        lever = Lever(name, description)
        for task in tasks:
            await self._add_alone_call(lever, task.model, task.system, build_item(task), task)
        return lever

    async def _add_alone_call(
        self, lever: Lever, model: str, system: str, item: Item, task: Task | None = None
    ) -> None:
        schema = task.response_schema if task is not None else None
        request = ChatRequest(
            model=model,
            system=system,
            messages=item.messages,
            max_tokens=item.max_tokens,
            json_mode=schema is not None,
            response_schema=schema,
        )
        await self._call(lever, request, 1, item.task_type)

    async def _call(
        self, lever: Lever, request: ChatRequest, items: int, task_type: str = ""
    ) -> None:
        response = await self.simulator.complete(request)
        usage = Usage(
            input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens
        )
        cost = self.prices.price(request.model, usage)
        call = Call(request.model, usage.input_tokens, usage.output_tokens, items, task_type, cost)
        lever.calls.append(call)
        self._price(lever, call)

    def _price(self, lever: Lever, call: Call, *, batch_api: bool = False) -> None:
        usage = Usage(input_tokens=call.input_tokens, output_tokens=call.output_tokens)
        cost = self.prices.price(call.model, usage, batch_api=batch_api)
        if cost is None:
            lever.unpriced_calls += 1
        else:
            lever.cost_usd += cost

    async def _packed(self, tasks: Sequence[Task]) -> tuple[Lever, list[tuple[Task, Item]]]:
        """Pack as the packer does: per group in arrival order, up to max_items and budgets."""
        lever = Lever("packing", "tasks packed into shared calls (what `run` records)")
        groups: dict[str, list[Task]] = {}
        for task in tasks:
            groups.setdefault(group_key(task), []).append(task)
        packed_items: list[tuple[Task, Item]] = []
        first_system: dict[str, str] = {}
        prefix_calls: dict[str, int] = {}
        for key, members in groups.items():
            first = members[0]
            pending = [build_item(t) for t in members]
            while pending:
                taken = self._take(first, pending)
                pending = pending[len(taken) :]
                batch = Batch(
                    id="plan",
                    group=key,
                    tenant=first.tenant,
                    model=first.model,
                    system=first.system,
                    temperature=first.temperature,
                    response_schema=first.response_schema,
                    ttl_class=first.ttl_class,
                    item_keys=tuple(i.key for i in taken),
                )
                request, packed = build_request(
                    batch, taken, cache_min_tokens=self.settings.prompt_cache_min_tokens
                )
                await self._call(lever, request, len(taken), first.task_type)
                if request.system == first_system.setdefault(key, request.system):
                    prefix_calls[key] = prefix_calls.get(key, 0) + 1
                if packed:
                    packed_items += [(first, item) for item in taken]
        self._cache_estimate(groups, first_system, prefix_calls)
        return lever, packed_items

    def _cache_estimate(
        self, groups: dict[str, list[Task]], systems: dict[str, str], calls: dict[str, int]
    ) -> None:
        """Prompt-cache reads of each group's repeated system block (real providers only)."""
        self.cache_tokens, self.cache_saving = 0, Decimal(0)
        for key, n in calls.items():
            tokens = count_tokens(systems[key])
            if n < 2 or tokens < max(1, self.settings.prompt_cache_min_tokens):
                continue
            price = self.prices.model_price(groups[key][0].model)
            if price is None or price.cached_input is None:
                continue
            read = (n - 1) * tokens
            self.cache_tokens += read
            self.cache_saving += read * (price.input - price.cached_input) / Decimal(1_000_000)

    def _take(self, first: Task, pending: list[Item]) -> list[Item]:
        """The packer's selection: up to max_items, within the model's input and output budgets."""
        max_items = max(1, self.settings.max_items.get(first.task_type, 8))
        if max_items > 1 and self.settings.pack_only_when_cheaper:
            head = pending[:max_items]
            sizes = Expected(  # what the packer reads from the pending entries
                input_tokens=sum(i.input_tokens - ITEM_OVERHEAD_TOKENS for i in head) // len(head),
                output_tokens=sum(i.max_tokens for i in head) // len(head),
            )
            gain = GainSettings(self.settings.prompt_cache_min_tokens, self.settings.audit_share)
            if not packing_pays(group_meta(first), len(head), self.prices, sizes, gain):
                max_items = 1
        budgets = budgets_for(self.settings, first.model, first.system)
        head = pending[:max_items]
        return head[: select([sizes_of(i) for i in head], max_items, budgets)]


def _unique(tasks: Iterable[Task]) -> list[Task]:
    """One task per item key, first seen first: what single-flight sends."""
    seen: dict[str, Task] = {}
    for task in tasks:
        seen.setdefault(item_key(task), task)
    return list(seen.values())


async def plan_file(path: Path, settings: Settings) -> Plan:
    """The lever table of a JSONL job file."""
    planner = Planner(settings)
    try:
        entries = read_file(path, max_line_bytes=settings.max_line_bytes)
        return await planner.plan(entries, source=str(path))
    finally:
        await planner.aclose()


def by_type(plan: Plan) -> dict[str, dict[str, Any]]:
    """Per task type: items, calls and cost on the routed models alone and packed."""
    rows: dict[str, dict[str, Any]] = {}
    for name in ("routing", "packing"):
        for call in plan.lever(name).calls:
            row = rows.setdefault(
                call.task_type,
                {
                    "items": 0,
                    "routing_calls": 0,
                    "packing_calls": 0,
                    "routing_usd": Decimal(0),
                    "packing_usd": Decimal(0),
                },
            )
            row[f"{name}_calls"] += 1
            row[f"{name}_usd"] += call.cost_usd or Decimal(0)
            if name == "routing":
                row["items"] += call.items
    return rows
