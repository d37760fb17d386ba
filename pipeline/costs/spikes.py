"""Spikes in one series of spend: which periods lie k·σ above their own baseline's normal level.

Normal is the baseline's median and σ comes from its median absolute deviation, floored so that
a flat baseline or a series of few, lumpy calls does not alert on every wobble (`robust_level`).
`anomalies.py` runs this over every series of the ledger's rollups and explains what grew.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Level = Literal["warning", "critical"]

MIN_BASELINE = 3
MIN_RATIO = 1.2  # a spike is at least 20% above normal, however flat the baseline
MAD_TO_SIGMA = 1.4826  # the median absolute deviation of a normal distribution is 0.6745 sigma
LUMP_NUSD = 10_000_000  # a cent: spend arrives in calls, so it varies like a count of them


@dataclass(frozen=True)
class Spike:
    index: int
    level: Level
    value: int
    normal: float
    sigma: float
    z: float


def baseline_indexes(i: int, window: int, stride: int) -> list[int]:
    """The `window` indexes before `i`, `stride` apart, nearest first."""
    return [j for j in range(i - stride, -1, -stride)][:window]


def spikes(
    values: Sequence[int],
    *,
    window: int,
    sigma_warning: float,
    sigma_critical: float,
    stride: int = 1,
    min_baseline: int = MIN_BASELINE,
    min_ratio: float = MIN_RATIO,
    min_excess: float = 0.0,
) -> list[Spike]:
    """Every index whose value lies k·σ above its baseline's normal level (and at least
    `min_ratio` times it). The baseline is the `window` values before it, `stride` apart: stride
    24 over hours compares an hour with the same hour of the days before. Normal is the median and
    σ is estimated from the median absolute deviation, so one earlier spike or a few noisy periods
    in the baseline neither hide the next spike nor widen σ for every period after them."""
    found: list[Spike] = []
    for i, value in enumerate(values):
        base = [values[j] for j in baseline_indexes(i, window, stride)]
        if len(base) < min_baseline or value <= 0:
            continue
        normal, sigma = robust_level(base)
        z = (value - normal) / sigma
        if z >= sigma_warning and value >= min_ratio * normal and value - normal >= min_excess:
            level: Level = "critical" if z >= sigma_critical else "warning"
            found.append(Spike(i, level, value, normal, sigma, z))
    return found


def robust_level(base: Sequence[int]) -> tuple[float, float]:
    """(normal, σ) of a baseline: its median, and 1.4826 x the median absolute deviation (σ of a
    normal distribution), floored at 5% of the median and a micro-dollar so that a flat baseline
    does not turn a small wobble into an alert, and at the mean's Poisson-like spread
    sqrt(mean x 1 cent) so that a series of few, lumpy calls is not alerted on every busy hour."""
    normal = statistics.median(base)
    mad = statistics.median(abs(b - normal) for b in base)
    mean = sum(base) / len(base)
    lumpiness = math.sqrt(mean * LUMP_NUSD)
    return normal, max(MAD_TO_SIGMA * mad, 0.05 * normal, lumpiness, 1000.0)
