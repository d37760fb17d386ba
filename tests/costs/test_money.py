"""Money helpers: nano-dollars in, exact USD out."""

from __future__ import annotations

from decimal import Decimal

from pipeline.costs.money import to_nano, usd, usd_float, usd_or_none, usd_text


def test_round_trip_is_exact_and_rounds_half_up() -> None:
    assert to_nano(Decimal("0.0000015")) == 1500
    assert to_nano(Decimal("0.0000000005")) == 1
    assert usd(1500) == Decimal("0.0000015")
    assert usd(b"-2500000000") == Decimal("-2.5")
    assert usd_or_none(None) is None
    assert usd_float(1_500_000_000) == 1.5


def test_text_keeps_nine_places_and_the_sign() -> None:
    assert usd_text(1500) == "0.000001500"
    assert usd_text(-1_000_000_001) == "-1.000000001"
    assert usd_text(None) == ""
