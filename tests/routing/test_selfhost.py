"""`batchwise selfhost`: monthly costs, break-even volume and the recommendation."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli.main import main
from pipeline.cli.optimise import parse_tokens
from pipeline.routing.selfhost import SelfHostInputs, break_even_tokens, compare

GPU_MONTH_USD = 730 * 2.0  # one always-on GPU at $2/h


def inputs(tokens: float, api_usd_per_mtok: float, **kw: float) -> SelfHostInputs:
    values: dict[str, float] = {
        "gpu_usd_per_hour": 2.0,
        "throughput_tokens_per_s": 1000.0,
        "utilisation": 0.5,
        "fixed_usd_per_month": 540.0,
    }
    values.update(kw)
    return SelfHostInputs(tokens_per_month=tokens, api_usd_per_mtok=api_usd_per_mtok, **values)


def test_monthly_costs_count_whole_gpus_and_the_fixed_overhead() -> None:
    capacity = 1000 * 3600 * 730 * 0.5  # 1.314B tokens per GPU-month
    one = inputs(1e9, 5.0)
    assert one.gpu_capacity_tokens == pytest.approx(capacity)
    assert one.gpus_for(1e9) == 1 and one.gpus_for(capacity + 1) == 2
    report = compare(inputs(2e9, 5.0))
    assert report.gpus == 2
    assert report.selfhost_usd == pytest.approx(2 * GPU_MONTH_USD + 540)
    assert report.api_usd == pytest.approx(2000 * 5.0)


def test_break_even_is_where_the_api_starts_costing_more() -> None:
    # one GPU + overhead = $2,000 a month; at $5/Mtok the API costs that at 400M tokens
    assert break_even_tokens(inputs(1, 5.0)) == pytest.approx(400e6)
    # at $2/Mtok: $2,000 buys 1B tokens, within one GPU's 1.314B capacity
    assert break_even_tokens(inputs(1, 2.0)) == pytest.approx(1e9)
    # at $1.4/Mtok: past one GPU, and with two GPUs ($3,460) the API breaks even at 2.47B
    assert break_even_tokens(inputs(1, 1.4)) == pytest.approx(3460 / 1.4 * 1e6)
    # a GPU's month of capacity costs more on the GPU than through the API: never
    assert break_even_tokens(inputs(1, 1.0)) is None


def test_recommendation_follows_volume_and_margin() -> None:
    assert compare(inputs(100e6, 5.0)).recommendation.startswith("use the API until about 400")
    assert compare(inputs(1.2e9, 5.0)).recommendation.startswith("self-host")
    # just past break-even, the saving is under the 20% margin
    near = compare(inputs(440e6, 5.0))
    assert near.selfhost_usd < near.api_usd and near.recommendation.startswith("use the API")
    assert "never" in compare(inputs(5e9, 0.5)).recommendation


def test_token_counts_with_suffixes() -> None:
    assert parse_tokens("500M") == 500e6
    assert parse_tokens("2.5b") == 2.5e9
    assert parse_tokens("1200") == 1200
    with pytest.raises(argparse.ArgumentTypeError):
        parse_tokens("lots")


def test_cli_prints_both_costs_and_a_recommendation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selfhost", "2B", "--api-usd-per-mtok", "5", "--gpu-usd-per-hour", "2"]) == 0
    shown = capsys.readouterr().out
    assert "$10,000.00 / month" in shown
    assert "break-even" in shown and "self-host" in shown
