"""What a provider call cost, in exact Decimal USD, and how to split that over its items.

Prices come from the configured overrides first, then from genai-prices' bundled price table.
Only the bundled table is read: prices never change behind a running worker's back, and nothing
is fetched at run time. A model neither source knows is priced `None` (and logged once), never 0.

Token prices are USD per million tokens. For a `Usage`, the uncached part of `input_tokens` is
billed at `input`, cache reads at `cached_input`, cache writes at `cache_write` and output at
`output`. Long prompts may cross a tier, which reprices every token of the call (the providers'
"cliff" model). A call through a provider batch API uses the provider's own batch prices where
genai-prices has them, else every price less `batch_discount`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.models import Usage

if TYPE_CHECKING:
    from genai_prices import types as genai_types
    from genai_prices.data_snapshot import DataSnapshot

__all__ = ["ModelPrice", "PriceTable", "PriceTier", "allocate", "infer_provider"]

logger = logging.getLogger("batchwise.prices")

MTOK = Decimal(1_000_000)
_BATCH_CONTEXT = {"processing": "batch"}


class PriceTier(BaseModel):
    """Prices that replace the base prices for every token once a call's prompt exceeds
    `above_input_tokens`. A missing cache price means the tier's input price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    above_input_tokens: int = Field(ge=0)
    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)


class ModelPrice(BaseModel):
    """A model's prices in USD per million tokens.

    `cached_input` and `cache_write` default to `input`: tokens a provider does not price apart
    are ordinary prompt tokens. `batch` holds the provider's own batch-API prices when known;
    without it a batch-API call costs the standard price less `batch_discount` (0.5 = half off).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)
    batch_discount: Decimal = Field(default=Decimal("0.5"), ge=0, le=1)
    tiers: tuple[PriceTier, ...] = ()
    batch: ModelPrice | None = None


@dataclass(frozen=True, slots=True)
class _Rates:
    """One tier's prices with every default filled in, ready for the hot path."""

    above_input_tokens: int
    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal

    @classmethod
    def of(cls, p: ModelPrice | PriceTier, above: int, factor: Decimal) -> _Rates:
        cached = p.input if p.cached_input is None else p.cached_input
        write = p.input if p.cache_write is None else p.cache_write
        return cls(above, p.input * factor, cached * factor, write * factor, p.output * factor)


@dataclass(frozen=True, slots=True)
class _Resolved:
    price: ModelPrice
    standard: tuple[_Rates, ...]  # highest tier first; the base tier last, above -1
    batch: tuple[_Rates, ...]


def _rate_ladder(price: ModelPrice, factor: Decimal = Decimal(1)) -> tuple[_Rates, ...]:
    rates = [_Rates.of(tier, tier.above_input_tokens, factor) for tier in price.tiers]
    rates.append(_Rates.of(price, -1, factor))
    return tuple(sorted(rates, key=lambda r: r.above_input_tokens, reverse=True))


def _resolve(price: ModelPrice) -> _Resolved:
    if price.batch is not None:
        batch = _rate_ladder(price.batch)
    else:
        batch = _rate_ladder(price, 1 - price.batch_discount)
    return _Resolved(price, _rate_ladder(price), batch)


_PROVIDER_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-", "openai"),
    ("chatgpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude", "anthropic"),
    ("gemini", "google"),
)


def infer_provider(model: str) -> str | None:
    """The genai-prices provider id a model name belongs to, e.g. `claude-…` → `anthropic`."""
    name = model.lower()
    for prefix, provider in _PROVIDER_PREFIXES:
        if name.startswith(prefix):
            return provider
    return None


class PriceTable:
    """Prices for every model, by name: overrides first, then genai-prices' bundled table.

    `overrides` maps a model name (or a prefix ending in `*`; the longest prefix wins) to its
    prices. genai-prices entries are read as of `at` (default: when first looked up) and kept
    for the life of the table, so one run prices consistently.
    """

    def __init__(
        self,
        overrides: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        self._exact: dict[str, ModelPrice] = {}
        self._prefixes: list[tuple[str, ModelPrice]] = []
        for name, spec in (overrides or {}).items():
            price = spec if isinstance(spec, ModelPrice) else ModelPrice.model_validate(spec)
            key = name.strip().lower()
            if key.endswith("*"):
                self._prefixes.append((key[:-1], price))
            else:
                self._exact[key] = price
        self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        self._at = at
        self._cache: dict[str, _Resolved | None] = {}
        self._warned: set[str] = set()
        self._snapshot: DataSnapshot | None = None

    def model_price(self, model: str) -> ModelPrice | None:
        """The prices for `model`, or None when neither the overrides nor genai-prices know it."""
        resolved = self._lookup(model)
        return None if resolved is None else resolved.price

    def price(self, model: str, usage: Usage, *, batch_api: bool = False) -> Decimal | None:
        """The exact cost in USD of a call to `model` with `usage`, or None for an unknown model.

        An unknown model is logged once per table, on `batchwise.prices`, so a missing price
        shows up instead of being booked as free.
        """
        try:
            resolved = self._cache[model]
        except KeyError:
            resolved = self._lookup(model)
        if resolved is None:
            if model not in self._warned:
                self._warned.add(model)
                logger.warning(
                    "no price known for model %r: its calls are recorded with cost None; "
                    "add it to the price overrides to price it",
                    model,
                )
            return None
        total_in = usage.input_tokens
        for rates in resolved.batch if batch_api else resolved.standard:
            if total_in > rates.above_input_tokens:
                break
        cached = usage.cached_input_tokens
        written = usage.cache_write_tokens
        uncached = max(total_in - cached - written, 0)
        cost = (
            uncached * rates.input
            + cached * rates.cached_input
            + written * rates.cache_write
            + usage.output_tokens * rates.output
        )
        return cost / MTOK

    def _lookup(self, model: str) -> _Resolved | None:
        if model in self._cache:
            return self._cache[model]
        price = self._override(model) or self._from_genai_prices(model)
        resolved = None if price is None else _resolve(price)
        self._cache[model] = resolved
        return resolved

    def _override(self, model: str) -> ModelPrice | None:
        key = model.strip().lower()
        if key in self._exact:
            return self._exact[key]
        for prefix, price in self._prefixes:
            if key.startswith(prefix):
                return price
        return None

    def _from_genai_prices(self, model: str) -> ModelPrice | None:
        name = model.strip().lower()
        hint: str | None = None
        if "/" in name:  # "openai/gpt-4o", as routers and LiteLLM spell it
            head, _, tail = name.partition("/")
            if head in ("openai", "anthropic", "google"):
                hint, name = head, tail
        hint = hint or infer_provider(name)
        found = None
        for provider_id in (hint, None) if hint else (None,):
            try:
                found = self._genai_snapshot().find_provider_model(name, None, provider_id, None)
                break
            except LookupError:
                continue
        if found is None:
            return None
        at = self._at or datetime.now(tz=UTC)
        info = found[1]
        price = _convert(info.get_prices(at))
        if price is None:
            # e.g. a subscription-only entry with no token prices: unknown, not free
            return None
        if _has_batch_variant(info, at):
            batch = _convert(info.get_prices(at, _BATCH_CONTEXT))
            price = price.model_copy(update={"batch": batch})
        return price

    def _genai_snapshot(self) -> DataSnapshot:
        # Imported on first use: the bundled table is large, and most CLI commands never price.
        if self._snapshot is None:
            from genai_prices.data import providers
            from genai_prices.data_snapshot import DataSnapshot

            self._snapshot = DataSnapshot(providers=providers, from_auto_update=False)
        return self._snapshot


def _has_batch_variant(info: genai_types.ModelInfo, at: datetime) -> bool:
    return any(
        variant.when == _BATCH_CONTEXT
        and (variant.constraint is None or variant.constraint.active(at))
        for variant in info.price_variants or ()
    )


def _convert(gp: genai_types.ModelPrice) -> ModelPrice | None:
    """Our `ModelPrice` from a genai-prices one; None when it has no input or output token price."""
    fields: dict[str, Any] = {
        "input": gp.input_mtok if gp.input_mtok is not None else gp.input_text_mtok,
        "output": gp.output_mtok if gp.output_mtok is not None else gp.output_text_mtok,
        "cached_input": gp.cache_read_mtok,
        # a cache write with no stated TTL is Anthropic's default, the 5-minute cache
        "cache_write": (
            gp.cache_write_mtok if gp.cache_write_mtok is not None else gp.cache_write_5m_mtok
        ),
    }
    if fields["input"] is None or fields["output"] is None:
        return None
    thresholds = sorted({t.start for v in fields.values() for t in getattr(v, "tiers", ())})
    base = {key: _tier_value(value, None) for key, value in fields.items()}
    tiers = tuple(
        PriceTier.model_validate(
            {"above_input_tokens": start}
            | {key: _tier_value(value, start) for key, value in fields.items()}
        )
        for start in thresholds
    )
    return ModelPrice.model_validate(base | {"tiers": tiers})


def _tier_value(value: Any, start: int | None) -> Decimal | None:
    """A genai-prices price as it applies to prompts above `start` tokens (None: the base)."""
    if value is None or isinstance(value, Decimal):
        return value
    price: Decimal = value.base
    if start is not None:
        for tier in value.tiers:  # sorted by start
            if tier.start <= start:
                price = tier.price
    return price


def allocate(
    total: Decimal,
    weights: Sequence[float | int | Decimal],
    *,
    quantum: Decimal = Decimal("1e-12"),
) -> list[Decimal]:
    """Split `total` over `weights` so that the parts add up to `total` exactly.

    Parts are multiples of `quantum`, shared by the largest-remainder method (ties go to the
    earlier weight); if `total` itself is finer than `quantum`, the leftover goes to the largest
    weight. All-zero weights split evenly. Weights must be finite and not negative.
    """
    if quantum <= 0:
        raise ValueError(f"quantum must be positive, got {quantum}")
    if not weights:
        if total != 0:
            raise ValueError(f"cannot allocate {total} over no weights")
        return []
    exact = [_fraction(w) for w in weights]
    weight_sum = sum(exact, Fraction(0))
    if weight_sum == 0:
        exact = [Fraction(1)] * len(exact)
        weight_sum = Fraction(len(exact))

    units = math.floor(Fraction(total) / Fraction(quantum))
    shares = [units * w / weight_sum for w in exact]
    floors = [math.floor(share) for share in shares]
    short = units - sum(floors)
    by_remainder = sorted(range(len(shares)), key=lambda i: floors[i] - shares[i])
    for i in by_remainder[:short]:
        floors[i] += 1

    with localcontext() as ctx:
        # wide enough that no part, nor the leftover, is ever rounded
        ctx.prec = 28 + len(str(abs(units))) + len(quantum.as_tuple().digits)
        ctx.prec += len(total.as_tuple().digits)
        parts = [quantum * n for n in floors]
        leftover = total - quantum * units
        if leftover:
            largest = max(range(len(exact)), key=lambda i: exact[i])
            parts[largest] += leftover
    return parts


def _fraction(weight: float | Decimal) -> Fraction:
    if isinstance(weight, bool) or not isinstance(weight, int | float | Decimal):
        raise TypeError(f"weight must be a number, got {weight!r}")
    try:
        value = Fraction(weight)
    except (ValueError, OverflowError):  # NaN, infinity
        raise ValueError(f"weight must be finite, got {weight}") from None
    if value < 0:
        raise ValueError(f"weight must not be negative, got {weight}")
    return value
