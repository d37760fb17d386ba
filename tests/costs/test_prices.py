from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal, localcontext

import genai_prices
import pytest
from genai_prices import data_snapshot
from genai_prices import types as genai_types
from hypothesis import given
from hypothesis import strategies as st

from pipeline.costs.prices import (
    ModelPrice,
    PriceTable,
    PriceTier,
    _convert,
    allocate,
    infer_provider,
)
from pipeline.costs.usage import from_anthropic, from_openai
from pipeline.models import Usage

DEFAULT_TIER_MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "claude-3-5-haiku-latest",
    "claude-sonnet-4-0",
    "claude-opus-4-0",
    "gemini-2.0-flash",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
]


def _exact_sum(parts: list[Decimal]) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200
        return sum(parts, Decimal(0))


@pytest.fixture
def table() -> PriceTable:
    return PriceTable()


# --- model prices ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", DEFAULT_TIER_MODELS)
def test_every_default_tier_model_has_a_price(table: PriceTable, model: str) -> None:
    price = table.model_price(model)
    assert price is not None
    assert price.input > 0
    assert price.output > price.input


def test_gpt_4o_mini_with_openai_cached_tokens(table: PriceTable) -> None:
    usage = from_openai(
        {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1024},
        }
    )
    # 176 uncached x $0.15 + 1024 cached x $0.075 + 300 out x $0.60, per million
    assert table.price("gpt-4o-mini", usage) == Decimal("0.0002832")


def test_claude_with_anthropic_cache_read_and_write(table: PriceTable) -> None:
    usage = from_anthropic(
        {
            "input_tokens": 50,
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 2000,
            "output_tokens": 200,
        }
    )
    # 50 x $3 + 1000 written x $3.75 + 2000 read x $0.30 + 200 out x $15, per million
    assert table.price("claude-sonnet-4-0", usage) == Decimal("0.0075")


def test_batch_api_uses_genai_prices_batch_rates(table: PriceTable) -> None:
    usage = Usage(input_tokens=1200, cached_input_tokens=1024, output_tokens=300)
    # OpenAI's batch table halves input and output but has no cached rate, so cached input
    # keeps $0.075: (176 + 1024) x $0.075 + 300 x $0.30. A flat 50% would give 0.0001416.
    assert table.price("gpt-4o-mini", usage, batch_api=True) == Decimal("0.00018")


def test_batch_api_without_batch_rates_applies_the_discount(table: PriceTable) -> None:
    usage = Usage(
        input_tokens=3050, cached_input_tokens=2000, cache_write_tokens=1000, output_tokens=200
    )
    assert table.price("claude-sonnet-4-0", usage, batch_api=True) == Decimal("0.00375")


def test_long_prompt_crosses_the_tier_for_every_token(table: PriceTable) -> None:
    at_threshold = Usage(input_tokens=200_000, output_tokens=1000)
    above = Usage(input_tokens=200_001, output_tokens=1000)
    # 200000 x $1.25 + 1000 x $10; above the tier every token is repriced: $2.50 and $15
    assert table.price("gemini-2.5-pro", at_threshold) == Decimal("0.26")
    assert table.price("gemini-2.5-pro", above) == Decimal("0.5150025")
    # batch halves both tiers
    assert table.price("gemini-2.5-pro", above, batch_api=True) == Decimal("0.25750125")


@pytest.mark.parametrize("model", DEFAULT_TIER_MODELS)
@pytest.mark.parametrize("batch_api", [False, True])
def test_agrees_with_genai_prices(table: PriceTable, model: str, batch_api: bool) -> None:
    usage = Usage(
        input_tokens=250_000, cached_input_tokens=30_000, cache_write_tokens=0, output_tokens=777
    )
    context = {"processing": "batch"} if batch_api else None
    price = table.model_price(model)
    assert price is not None
    if batch_api and price.batch is None:
        pytest.skip("genai-prices has no batch rates for this model")
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=250_000, cache_read_tokens=30_000, output_tokens=777),
        model,
        provider_id=infer_provider(model),
        genai_request_timestamp=datetime.now(tz=UTC),
        price_context=context,
    ).total_price
    assert table.price(model, usage, batch_api=batch_api) == expected


def test_provider_prefixed_name(table: PriceTable) -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000)
    assert table.price("openai/gpt-4o", usage) == table.price("gpt-4o", usage)
    assert table.price("anthropic/claude-opus-4-0", usage) == Decimal("0.09")


def test_bundled_prices_only_even_when_a_custom_snapshot_is_set() -> None:
    empty = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    data_snapshot.set_custom_snapshot(empty)
    try:
        assert PriceTable().model_price("gpt-4o-mini") is not None
    finally:
        data_snapshot.set_custom_snapshot(None)


def test_genai_entry_without_token_prices_is_unknown_not_free() -> None:
    assert _convert(genai_types.ModelPrice()) is None


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o", "openai"),
        ("o3-mini", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("Claude-Sonnet-4-0", "anthropic"),
        ("gemini-2.5-pro", "google"),
        ("llama-3.1-8b", None),
    ],
)
def test_infer_provider(model: str, provider: str | None) -> None:
    assert infer_provider(model) == provider


# --- unknown models and overrides -----------------------------------------------------------


def test_unknown_model_is_none_and_warned_once(
    table: PriceTable, caplog: pytest.LogCaptureFixture
) -> None:
    usage = Usage(input_tokens=10, output_tokens=10)
    with caplog.at_level(logging.WARNING, logger="batchwise.prices"):
        assert table.price("acme-large-9", usage) is None
        assert table.price("acme-large-9", usage, batch_api=True) is None
        assert table.price("acme-small-1", usage) is None
    records = [r for r in caplog.records if r.name == "batchwise.prices"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert "'acme-large-9'" in records[0].getMessage()
    assert "'acme-small-1'" in records[1].getMessage()
    assert table.model_price("acme-large-9") is None


def test_override_wins_over_genai_prices() -> None:
    table = PriceTable({"gpt-4o-mini": ModelPrice(input=Decimal(1), output=Decimal(2))})
    usage = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=500)
    # no cached price given: cached tokens are ordinary input, 1000 x $1 + 500 x $2
    assert table.price("gpt-4o-mini", usage) == Decimal("0.002")
    assert table.price("gpt-4o-mini", usage, batch_api=True) == Decimal("0.001")


def test_override_from_settings_like_mapping_with_floats() -> None:
    table = PriceTable(
        {
            "Acme-Large-9": {
                "input": 0.15,
                "cached_input": 0.015,
                "cache_write": 0.3,
                "output": 0.6,
                "batch_discount": 0.25,
            }
        }
    )
    usage = Usage(
        input_tokens=1000, cached_input_tokens=500, cache_write_tokens=100, output_tokens=10
    )
    # 400 x 0.15 + 500 x 0.015 + 100 x 0.3 + 10 x 0.6 = 103.5 per million
    assert table.price("acme-large-9", usage) == Decimal("0.0001035")
    assert table.price("acme-large-9", usage, batch_api=True) == Decimal("0.000077625")


def test_override_with_explicit_batch_prices_and_tiers() -> None:
    price = ModelPrice(
        input=Decimal(1),
        output=Decimal(4),
        tiers=(PriceTier(above_input_tokens=1000, input=Decimal(2), output=Decimal(8)),),
        batch=ModelPrice(input=Decimal("0.4"), output=Decimal(1)),
    )
    table = PriceTable({"acme-*": price, "acme-tiny*": ModelPrice(input=0, output=0)})
    assert table.price("acme-large", Usage(input_tokens=1000)) == Decimal("0.001")
    assert table.price("acme-large", Usage(input_tokens=1001)) == Decimal("0.002002")
    assert table.price("acme-large", Usage(input_tokens=1001), batch_api=True) == Decimal(
        "0.0004004"
    )
    # the longest matching prefix wins
    assert table.price("acme-tiny-2", Usage(input_tokens=1001)) == 0


def test_override_rejects_bad_prices() -> None:
    with pytest.raises(ValueError, match="input"):
        PriceTable({"x": {"input": -1, "output": 1}})
    with pytest.raises(ValueError, match="batch_discount"):
        PriceTable({"x": {"input": 1, "output": 1, "batch_discount": 2}})


def test_price_is_fast_once_warm(table: PriceTable) -> None:
    usage = Usage(input_tokens=1200, cached_input_tokens=1024, output_tokens=300)
    table.price("gemini-2.5-pro", usage)
    calls = 5000
    start = time.perf_counter()
    for _ in range(calls):
        table.price("gemini-2.5-pro", usage, batch_api=True)
    per_call_s = (time.perf_counter() - start) / calls
    assert per_call_s < 50e-6


# --- allocate -------------------------------------------------------------------------------


amounts = st.decimals(
    min_value=Decimal(0), max_value=Decimal(1000), places=14, allow_nan=False, allow_infinity=False
)
weights = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False, allow_infinity=False),
)


@given(total=amounts, weights=st.lists(weights, min_size=1, max_size=40))
def test_allocate_adds_up_exactly(total: Decimal, weights: list[float | int | Decimal]) -> None:
    parts = allocate(total, weights)
    assert len(parts) == len(weights)
    assert _exact_sum(parts) == total
    assert all(part >= 0 for part in parts)


@given(
    units=st.integers(min_value=0, max_value=10**15),
    weights=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=30),
)
def test_allocate_parts_are_within_one_quantum_of_their_share(
    units: int, weights: list[int]
) -> None:
    quantum = Decimal("1e-12")
    total = quantum * units
    parts = allocate(total, weights)
    weight_sum = sum(weights) or len(weights)
    for part, weight in zip(parts, weights, strict=True):
        share = total * (weight if sum(weights) else 1) / weight_sum
        assert abs(part - share) < quantum
        assert part == part.quantize(quantum)


def test_allocate_all_zero_weights_split_evenly() -> None:
    assert allocate(Decimal("0.000000000010"), [0, 0, 0.0, Decimal(0)]) == [
        Decimal("0.000000000003"),
        Decimal("0.000000000003"),
        Decimal("0.000000000002"),
        Decimal("0.000000000002"),
    ]


def test_allocate_largest_remainder_and_ties_to_the_first() -> None:
    q = Decimal(1)
    assert allocate(Decimal(10), [1, 1, 1], quantum=q) == [Decimal(4), Decimal(3), Decimal(3)]
    assert allocate(Decimal(10), [2, 1, 1], quantum=q) == [Decimal(5), Decimal(3), Decimal(2)]
    assert allocate(Decimal(7), [0, 1, 0], quantum=q) == [Decimal(0), Decimal(7), Decimal(0)]


def test_allocate_total_finer_than_the_quantum_keeps_the_leftover() -> None:
    total = Decimal("0.0001234567891234")
    parts = allocate(total, [1, 3, 2])
    assert _exact_sum(parts) == total
    assert parts[0] == parts[0].quantize(Decimal("1e-12"))
    assert parts[1] != parts[1].quantize(Decimal("1e-12"))  # the largest weight takes it


def test_allocate_edges() -> None:
    assert allocate(Decimal(0), []) == []
    assert allocate(Decimal("1.5"), [7]) == [Decimal("1.5")]
    assert allocate(Decimal(0), [1, 2]) == [0, 0]
    with pytest.raises(ValueError, match="no weights"):
        allocate(Decimal(1), [])
    with pytest.raises(ValueError, match="negative"):
        allocate(Decimal(1), [1, -1])
    with pytest.raises(ValueError, match="finite"):
        allocate(Decimal(1), [1, float("nan")])
    with pytest.raises(ValueError, match="finite"):
        allocate(Decimal(1), [Decimal("Infinity")])
    with pytest.raises(ValueError, match="quantum"):
        allocate(Decimal(1), [1], quantum=Decimal(0))
    with pytest.raises(TypeError):
        allocate(Decimal(1), [True])  # type: ignore[list-item]
