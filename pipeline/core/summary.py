"""A run's summary: what it did, what it cost, and what it saved against sending each task alone.

The summary reads the run's results (each carries its cost and its naive token counts) and
prices every answered task alone on the model that answered and on its baseline model; the
difference is split by lever (`routing`, `cache`, `semantic_cache`, `calls`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal

from pipeline.core.runs import RunStore
from pipeline.costs.money import usd
from pipeline.costs.prices import PriceTable
from pipeline.models import Usage


@dataclass
class Summary:
    """What a run did and what it cost, beside each task sent alone to the same model
    (`naive_cost_usd`) and to its baseline model (`baseline_cost_usd`: the model it named, else
    `Settings.baseline_model`). `saved_by` splits the saving against the baseline: `routing`,
    `cache` and `semantic_cache` (tasks answered from the cache), and `calls` (packing,
    single-flight and batch-API discounts: what the provider calls cost less than each task
    alone on the same model)."""

    run_id: str
    simulated: bool
    ok: int = 0
    failed: int = 0
    rejected: int = 0
    cache_hits: int = 0
    provider_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    naive_cost_usd: Decimal = Decimal(0)
    unpriced: int = 0
    elapsed_s: float = 0.0
    baseline_model: str = ""
    baseline_cost_usd: Decimal = Decimal(0)
    saved_by: dict[str, Decimal] = field(default_factory=dict)

    @property
    def saving(self) -> float:
        """The saving against the same models one by one, as a share of that cost."""
        if self.naive_cost_usd <= 0:
            return 0.0
        return float(1 - self.cost_usd / self.naive_cost_usd)

    @property
    def baseline_saving(self) -> float:
        """The saving against the baseline, as a share of its cost."""
        if self.baseline_cost_usd <= 0:
            return 0.0
        return float(1 - self.cost_usd / self.baseline_cost_usd)

    def add_naive(self, cache: str, naive: Decimal, baseline: Decimal) -> None:
        """A task answered ok: its cost alone on the model that answered and on its baseline."""
        self.naive_cost_usd += naive
        self.baseline_cost_usd += baseline
        lever = {"exact": "cache", "semantic": "semantic_cache"}.get(cache, "calls")
        for name, amount in (("routing", baseline - naive), (lever, naive)):
            self.saved_by[name] = self.saved_by.get(name, Decimal(0)) + amount


async def summarise_run(
    runs: RunStore, prices: PriceTable, run_id: str, baseline_model: str
) -> Summary:
    """Counts, tokens and cost of a finished run, and the naive baseline."""
    info = await runs.info(run_id)
    summary = Summary(run_id, simulated=info.get("simulated") == "1", baseline_model=baseline_model)
    calls: set[str] = set()
    async for record in runs.records(run_id):
        status = record["status"]
        setattr(summary, status, getattr(summary, status) + 1)
        if record.get("cache", "miss") != "miss":
            summary.cache_hits += 1
        summary.input_tokens += int(record.get("input_tokens") or 0)
        summary.output_tokens += int(record.get("output_tokens") or 0)
        if record.get("cost_nusd") is None:
            summary.unpriced += 1
        else:
            summary.cost_usd += usd(record["cost_nusd"])
        calls.update(record.get("calls") or ())  # every call charged to the task
        if status == "ok" and record.get("model") and "naive_input_tokens" in record:
            usage = Usage(
                input_tokens=int(record["naive_input_tokens"]),
                output_tokens=int(record.get("naive_output_tokens") or 0),
            )
            naive = prices.price(record["model"], usage) or Decimal(0)
            model = record.get("baseline_model") or record["model"]
            baseline = prices.price(model, usage)
            summary.add_naive(
                record.get("cache", "miss"), naive, naive if baseline is None else baseline
            )
    # what the calls cost less than their tasks alone: the rest of the naive cost
    summary.saved_by["calls"] = summary.saved_by.get("calls", Decimal(0)) - summary.cost_usd
    summary.provider_calls = len(calls)
    summary.elapsed_s = time.time() - float(info.get("created_at", time.time()))
    return summary
