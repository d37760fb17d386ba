"""`batchwise selfhost`: API against self-hosted GPU cost for a monthly token volume.

Self-hosting costs whole GPUs, always on, plus a fixed monthly overhead (people, monitoring,
storage); a GPU's monthly capacity is its throughput over the month at the given utilisation.
The API costs the model's per-token prices (optionally the batch-API prices). The break-even
volume is the smallest monthly volume at which the API costs at least as much as self-hosting;
there is none when one GPU's capacity costs more on a GPU than through the API.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from pipeline.config.settings import Settings
from pipeline.costs.prices import PriceTable
from pipeline.errors import ConfigError
from pipeline.models import Usage

HOURS_PER_MONTH = 730.0
# Self-hosting must beat the API by this much to be worth running GPUs yourself.
MARGIN = 0.2
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


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
        advice = f"use the API until about {_tokens(even)} tokens a month"
    return SelfHostReport(inputs, api, own, inputs.gpus_for(volume), even, advice)


def parse_tokens(text: str) -> float:
    """`500M`, `2.5B`, `1e9` or a plain number of tokens."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMbBgGtT]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r} (e.g. 500M, 2B)")
    try:
        return float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r}") from None


def _tokens(n: float) -> str:
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


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `batchwise selfhost`."""
    p = subparsers.add_parser("selfhost", help="API vs self-hosted GPU cost for a monthly volume")
    p.add_argument("tokens", type=parse_tokens, help="tokens a month, e.g. 500M or 2B")
    p.add_argument("--model", default="gpt-4o-mini", help="API model to compare with")
    p.add_argument("--api-usd-per-mtok", type=float, help="blended API price (overrides --model)")
    p.add_argument("--batch-api", action="store_true", help="price the API at batch-API rates")
    p.add_argument("--output-share", type=float, default=0.25, help="share of output tokens")
    p.add_argument("--gpu-usd-per-hour", type=float, default=2.5)
    p.add_argument("--throughput", type=float, default=2500.0, help="tokens/s per GPU")
    p.add_argument("--utilisation", type=float, default=0.5, help="0-1, average GPU busy share")
    p.add_argument("--fixed-usd-per-month", type=float, default=2000.0, help="ops overhead")
    p.add_argument("--min-gpus", type=int, default=1)
    p.set_defaults(handler=cmd_selfhost)


async def cmd_selfhost(args: argparse.Namespace, settings: Settings) -> int:
    """Handler of `batchwise selfhost`."""
    price = args.api_usd_per_mtok
    label = f"{price} $/Mtok"
    if price is None:
        price = blended_usd_per_mtok(
            PriceTable(settings.prices), args.model, args.output_share, batch_api=args.batch_api
        )
        label = f"{args.model}{' batch API' if args.batch_api else ''}, ${price:.3f}/Mtok blended"
    report = compare(
        SelfHostInputs(
            tokens_per_month=args.tokens,
            output_share=args.output_share,
            api_usd_per_mtok=price,
            gpu_usd_per_hour=args.gpu_usd_per_hour,
            throughput_tokens_per_s=args.throughput,
            utilisation=args.utilisation,
            fixed_usd_per_month=args.fixed_usd_per_month,
            min_gpus=args.min_gpus,
        )
    )
    inputs = report.inputs
    table = Table(title=f"{_tokens(inputs.tokens_per_month)} tokens a month", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row(f"API ({label})", f"${report.api_usd:,.2f} / month")
    table.add_row(
        f"self-hosted ({report.gpus} GPU x ${inputs.gpu_usd_per_hour}/h, "
        f"+${inputs.fixed_usd_per_month:,.0f} fixed)",
        f"${report.selfhost_usd:,.2f} / month",
    )
    table.add_row(
        "GPU capacity",
        f"{_tokens(inputs.gpu_capacity_tokens)} tokens/month each "
        f"({inputs.throughput_tokens_per_s:,.0f} tok/s at {inputs.utilisation:.0%})",
    )
    table.add_row(
        "break-even volume",
        "never" if report.break_even_tokens is None else f"{_tokens(report.break_even_tokens)}",
    )
    table.add_row("recommendation", report.recommendation)
    Console().print(table)
    return 0
