"""What the commands share (pipeline/cli/common.py, jobfile.py): the one `error:` line and the
arguments every command parses alike."""

from __future__ import annotations

import argparse
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.cli import common
from pipeline.cli.jobfile import results_path
from pipeline.cli.ledger import duration_s
from pipeline.errors import InputError


def test_an_error_line_is_prefixed_once_and_masks_key_shaped_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(common, "err", Console(stderr=True, width=300, color_system=None))
    assert common.fail("error: no redis-server found [bold]x[/]", None) == 2
    assert common.fail("key sk-proj-abcdefghijklmnopqrstuvwx refused", None, code=5) == 5
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: no redis-server found [bold]x[/]"
    assert lines[1].startswith("error: key ") and "abcdefghijklmnop" not in lines[1]


def test_a_day_argument_is_iso_or_refused() -> None:
    assert common.iso_day("2026-11-30") == date(2026, 11, 30)
    with pytest.raises(argparse.ArgumentTypeError, match="YYYY-MM-DD"):
        common.iso_day("30/11/2026")


def test_results_go_beside_the_job_file_unless_told(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("{}\n")
    assert results_path(jobs, None) == tmp_path / "jobs.results.jsonl"
    assert results_path(jobs, str(tmp_path / "out.jsonl")) == tmp_path / "out.jsonl"
    with pytest.raises(InputError):
        results_path(tmp_path / "missing.jsonl", None)


@pytest.mark.parametrize("text", ["abc", "nan", "-1", "Infinity", "$-2"])
def test_an_amount_argument_is_a_finite_non_negative_number(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        common.usd_amount(text)
    assert common.usd_amount("$12.50") == Decimal("12.50")


@pytest.mark.parametrize("text", ["nan", "inf", "-1d", "7x"])
def test_a_duration_argument_is_finite(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration_s(text)
    assert duration_s("7d") == 7 * 86400
