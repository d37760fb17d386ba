"""Money: every amount batchwise stores is an integer count of nano-dollars (1e-9 USD), so sums
over millions of calls stay exact; amounts shown or returned are exact `Decimal` USD, or a float
where a JSON body wants a number."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

NANO_PER_USD = 1_000_000_000
NANO = Decimal(NANO_PER_USD)


def to_nano(cost: Decimal) -> int:
    """USD to nano-dollars, rounded half up."""
    return int((cost * NANO).to_integral_value(rounding=ROUND_HALF_UP))


def usd(nusd: int | str | bytes) -> Decimal:
    """Nano-dollars (an int, or the text Redis returns) as exact USD."""
    return Decimal(int(nusd)) / NANO


def usd_or_none(nusd: int | None) -> Decimal | None:
    """`usd`, keeping an unknown amount unknown."""
    return None if nusd is None else usd(nusd)


def usd_float(nusd: int) -> float:
    """Nano-dollars as USD in a float, for JSON bodies (the nearest float to the exact amount)."""
    return nusd / NANO_PER_USD


def usd_text(nusd: int | None) -> str:
    """Nano-dollars as a plain decimal string with nine places (`-0.000001500`), "" if unknown."""
    if nusd is None:
        return ""
    sign, nusd = ("-", -nusd) if nusd < 0 else ("", nusd)
    return f"{sign}{nusd // NANO_PER_USD}.{nusd % NANO_PER_USD:09d}"
