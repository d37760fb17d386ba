"""API against self-hosted GPU cost for a monthly token volume.

Self-hosting costs whole GPUs, always on, plus a fixed monthly overhead (people, monitoring,
storage); a GPU's monthly capacity is its throughput over the month at the given utilisation.
The API costs the model's per-token prices (optionally the batch-API prices). The break-even
volume is the smallest monthly volume at which the API costs at least as much as self-hosting;
there is none when one GPU's capacity costs more on a GPU than through the API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.costs.prices import PriceTable
from pipeline.errors import ConfigError
from pipeline.models import Usage

HOURS_PER_MONTH = 730.0
# Self-hosting must beat the API by this much to be worth running GPUs yourself.
MARGIN = 0.2


@dataclass(frozen=True)
class SelfHostInputs:
    """A monthly volume and what a GPU costs and does."""

    tokens_per_month: float
    output_share: float = 0.25
    api_usd_per_mtok: float = 0.0  # blended over input and output at `output_share`
    gpu_usd_per_hour: float = 2.5
    throughput_tokens_per_s: float = 2500.0
    utilisation: float = 0.5
    fixed_usd_per_month: float = 2000.0
    min_gpus: int = 1
    hours_per_month: float = HOURS_PER_MONTH

    @property
    def gpu_capacity_tokens(self) -> float:
        """Tokens one GPU serves in a month at the given utilisation."""
        return self.throughput_tokens_per_s * 3600 * self.hours_per_month * self.utilisation

    def gpus_for(self, tokens: float) -> int:
        return max(self.min_gpus, math.ceil(tokens / self.gpu_capacity_tokens))

    def selfhost_usd(self, tokens: float) -> float:
        gpus = self.gpus_for(tokens)
        return gpus * self.hours_per_month * self.gpu_usd_per_hour + self.fixed_usd_per_month

    def api_usd(self, tokens: float) -> float:
        return tokens / 1e6 * self.api_usd_per_mtok


@dataclass(frozen=True)
class SelfHostReport:
    inputs: SelfHostInputs
    api_usd: float
    selfhost_usd: float
    gpus: int
    break_even_tokens: float | None
    recommendation: str


def break_even_tokens(inputs: SelfHostInputs, max_gpus: int = 100_000) -> float | None:
    """The smallest monthly volume at which the API costs at least as much as self-hosting."""
    price = inputs.api_usd_per_mtok / 1e6
    if price <= 0:
        return None
    cap = inputs.gpu_capacity_tokens
    for gpus in range(inputs.min_gpus, max_gpus + 1):
        low = 0.0 if gpus == inputs.min_gpus else (gpus - 1) * cap
        high = gpus * cap
        cost = gpus * inputs.hours_per_month * inputs.gpu_usd_per_hour + inputs.fixed_usd_per_month
        volume = cost / price
        if volume <= low:
            return low
        if volume <= high:
            return volume
        if price * cap < inputs.hours_per_month * inputs.gpu_usd_per_hour:
            return None  # each further GPU costs more than the API volume it adds
    return None


def compare(inputs: SelfHostInputs) -> SelfHostReport:
    """Monthly cost both ways, the break-even volume and a recommendation."""
    if not 0 < inputs.utilisation <= 1:
        raise ConfigError("utilisation must be in (0, 1]")
    if inputs.throughput_tokens_per_s <= 0:
        raise ConfigError("throughput must be positive")
    volume = inputs.tokens_per_month
    api, own = inputs.api_usd(volume), inputs.selfhost_usd(volume)
    even = break_even_tokens(inputs)
    if even is None:
        advice = "use the API: at these prices self-hosting never breaks even"
    elif own < api * (1 - MARGIN):
        advice = (
            f"self-host: {1 - own / api:.0%} cheaper than the API at this volume "
            f"({inputs.gpus_for(volume)} GPU(s) at {inputs.utilisation:.0%} utilisation)"
        )
    elif own < api:
        advice = (
            f"use the API: self-hosting saves only {1 - own / api:.0%}, under the "
            f"{MARGIN:.0%} margin that pays for running GPUs yourself"
        )
    else:
        advice = f"use the API until about {tokens_text(even)} tokens a month"
    return SelfHostReport(inputs, api, own, inputs.gpus_for(volume), even, advice)


def tokens_text(n: float) -> str:
    """`n` tokens as people write them: 500.0M, 2.5B."""
    for suffix, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:,.1f}{suffix}"
    return f"{n:,.0f}"


def blended_usd_per_mtok(
    prices: PriceTable, model: str, output_share: float, *, batch_api: bool = False
) -> float:
    """The model's price per million tokens for a mix with `output_share` output tokens."""
    mix = Usage(
        input_tokens=round(1_000_000 * (1 - output_share)),
        output_tokens=round(1_000_000 * output_share),
    )
    cost = prices.price(model, mix, batch_api=batch_api)
    if cost is None:
        raise ConfigError(f"no price known for {model!r}; give --api-usd-per-mtok")
    return float(cost)
