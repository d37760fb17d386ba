"""Every `batchwise` command and sub-command as a user types it, on the embedded state that
`batchwise run jobs.example.jsonl` left (what `make run` does), with no REDIS_URL and no key:
each exits 0 with its output, or with its documented code (2: one `error:` line; 3: `results`
of a run in progress), and none leaves the embedded server running behind it."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from tests.cli.test_run_cli import cli_env, run_id_of, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "pipeline.cli.main"]
JOBS = "jobs.example.jsonl"
INPUT_IDS = [
    orjson.loads(line).get("id") or orjson.loads(line).get("custom_id")
    for line in (ROOT / JOBS).read_bytes().splitlines()
]


@dataclass(frozen=True)
class State:
    """A working directory holding the example job file, its state directory and the run."""

    home: Path
    env: dict[str, str]
    run_id: str

    @property
    def socket(self) -> Path:
        return self.home / "state" / "redis.sock"

    def cli(
        self, *args: str, stdin: str = "", timeout_s: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*CLI, *args],
            env=self.env,
            cwd=self.home,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert "REDIS_URL must be set" not in proc.stderr
        assert "REDIS_URL is not set:" not in proc.stderr  # the old refusal of submit
        return proc

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as fh:
            return subprocess.Popen(
                [*CLI, *args], env=self.env, cwd=self.home, stdout=fh, stderr=subprocess.STDOUT
            )


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> State:
    home = tmp_path_factory.mktemp("every-command")
    shutil.copy(ROOT / JOBS, home / JOBS)
    env = cli_env(home)
    run = subprocess.run(
        [*CLI, "run", JOBS],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "SIMULATED" in run.stdout
    return State(home, env, run_id_of(run.stderr))


def ok(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The command's output (stdout, then stderr) after checking it exited 0 with `expected`."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    for part in expected:
        assert part in text, text[-3000:]
    return text


def refused(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2 with one `error:` line naming `expected`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "error: error:" not in lines[0]
    for part in expected:
        assert part in lines[0], lines[0]


READERS = [
    (["report"], "spend $"),
    (["report", "--since", "2026-01-01", "--top", "2"], "By tenant (top 2 of"),
    (["budget", "status"], "cost breakers (policy:"),
    (["providers"], "no provider configured: the simulated provider answers"),
    (["providers", "status"], "no provider configured"),
    (["plan", JOBS], "expected cost of `batchwise run`"),
    (["plan", JOBS, "--by-type", "--per-task"], "by task type"),
    (["selfhost", "500M"], "500.0M tokens a month"),
    (["selfhost", "2B", "--batch-api", "--model", "gpt-4o"], "break-even volume"),
    (["audit"], "no audits yet"),
    (["cache", "stats"], "response cache"),
    (["--help"], "submit"),
]


@pytest.mark.parametrize(("args", "expected"), READERS, ids=[" ".join(a) for a, _ in READERS])
def test_a_reading_command_exits_0_and_leaves_no_server(
    state: State, args: list[str], expected: str
) -> None:
    ok(state.cli(*args), expected)
    assert not state.socket.exists()


def test_reading_an_empty_state_says_nothing_is_recorded(tmp_path: Path) -> None:
    empty = State(tmp_path, cli_env(tmp_path), run_id="")
    for args in (["report"], ["results", "r1"], ["ledger", "export", "--out", "x.jsonl"]):
        refused(empty.cli(*args), "nothing recorded yet", "batchwise run FILE")
    assert not (tmp_path / "state" / "appendonlydir").exists()  # no empty server was started


def test_a_usage_mistake_is_one_error_line_naming_the_help(tmp_path: Path) -> None:
    empty = State(tmp_path, cli_env(tmp_path), run_id="")
    refused(empty.cli("cache"), "required: {stats,clear}", "see `batchwise cache --help`")
    refused(empty.cli("budget", "set", "limit", "global", "weekly", "3"), "invalid choice")
    refused(empty.cli("report", "--since", "yesterday"), "not a date (YYYY-MM-DD)")
    assert not (tmp_path / "state").exists()


def test_json_outputs_parse_and_carry_the_run(state: State) -> None:
    report = orjson.loads(ok(state.cli("report", "--json")))
    assert report["tasks"] >= len(INPUT_IDS) and report["simulated_calls"] == report["calls"] > 0
    budget = orjson.loads(ok(state.cli("budget", "status", "--json")))
    assert "global" in {b["scope"] for b in budget["breakers"]}
    assert orjson.loads(ok(state.cli("providers", "status", "--json"))) == []
    plan = orjson.loads(ok(state.cli("plan", JOBS, "--json")))
    assert plan["tasks"] == len(INPUT_IDS)
    rows = [orjson.loads(x) for x in ok(state.cli("cache", "stats", "--json")).splitlines()]
    assert rows[-1]["tenant"] == "*" and rows[-1]["entries"] > 0


def test_results_to_stdout_and_to_a_file(state: State) -> None:
    printed = state.cli("results", state.run_id)
    ok(printed)
    assert [orjson.loads(x)["id"] for x in printed.stdout.splitlines()] == INPUT_IDS
    ok(state.cli("results", state.run_id, "--out", "again.jsonl"), f"{len(INPUT_IDS)} results")
    written = (state.home / "again.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x)["status"] for x in written] == ["ok"] * len(INPUT_IDS)
    refused(state.cli("results", "no-such-run"), "no run 'no-such-run'")


def test_ledger_export_and_archive(state: State) -> None:
    text = ok(state.cli("ledger", "export", "--out", "ledger.jsonl"), "ledger entries written")
    entries = (state.home / "ledger.jsonl").read_bytes().splitlines()
    assert len(entries) == int(text.split()[0]) > 0
    ok(
        state.cli(
            "ledger", "export", "--format", "csv", "--out", "ledger.csv", "--since", "2026-01-01"
        )
    )
    with (state.home / "ledger.csv").open(newline="") as fh:  # a row per cost share of a call
        assert len({row["id"] for row in csv.DictReader(fh)}) == len(entries)
    ok(state.cli("ledger", "archive"), "0 ledger entries archived")  # none older than 7 days
    ok(state.cli("ledger", "archive", "--older-than", "0s"), f"{len(entries)} ledger entries")
    again = ok(state.cli("ledger", "export", "--out", "after.jsonl"))  # archive, then stream
    assert int(again.split()[0]) == len(entries)


def test_report_html_writes_the_dashboard(state: State) -> None:
    ok(state.cli("report", "--html", "dashboard.html"), "dashboard written to dashboard.html")
    assert "<html" in (state.home / "dashboard.html").read_text().lower()


def test_budget_setters_and_close_breaker(state: State) -> None:
    ok(state.cli("budget", "set", "monthly", "12.50"), "monthly budget: $12.50")
    ok(state.cli("budget", "set", "limit", "global", "hourly", "5"), "hourly limit: $5")
    ok(state.cli("budget", "set", "plan", "user:alice", "none"), "user:alice: plan (settings)")
    ok(state.cli("budget", "close-breaker", "global"), "breaker global: was not open")
    status = orjson.loads(ok(state.cli("budget", "status", "--json")))
    assert Decimal(status["pace"]["budget_usd"]) == Decimal("12.50")
    limits = {b["scope"]: b["hourly_limit_usd"] for b in status["breakers"]}
    assert Decimal(limits["global"]) == 5
    refused(state.cli("budget", "set", "plan", "user:alice", "gold"), "unknown plan 'gold'")
    refused(state.cli("budget", "set", "monthly", "lots"), "not an amount in USD")
    ok(state.cli("budget", "set", "monthly", "none"), "monthly budget: none")


def test_providers_reset_names_the_configured_ones(state: State) -> None:
    refused(state.cli("providers", "reset", "openai"), "no provider named 'openai'")


def test_cache_clear_one_tenant_then_all(state: State) -> None:
    ok(state.cli("cache", "clear", "--tenant", "default"), "cached answer(s) of tenant default")
    rows = [orjson.loads(x) for x in ok(state.cli("cache", "stats", "--json")).splitlines()]
    assert {r["tenant"]: r["entries"] for r in rows}.get("default", 0) == 0
    assert rows[-1]["entries"] > 0
    ok(state.cli("cache", "clear", "--all"), "of all tenants")
    rows = [orjson.loads(x) for x in ok(state.cli("cache", "stats", "--json")).splitlines()]
    assert rows == [] or rows[-1]["entries"] == 0


def test_nightly_once_answers_an_inbox_file(state: State) -> None:
    inbox, outbox = state.home / "inbox", state.home / "outbox"
    inbox.mkdir()
    night = inbox / "night.jsonl"
    night.write_bytes(b"\n".join((ROOT / JOBS).read_bytes().splitlines()[:3]) + b"\n")
    os.utime(night, (time.time() - 60, time.time() - 60))  # settled
    args = ("nightly", "--once", "--inbox", str(inbox), "--outbox", str(outbox))
    ok(state.cli(*args), "claimed 1,")
    ok(state.cli(*args), "claimed 0,")
    refused(state.cli("nightly", "--once"), "nightly_inbox")


def test_serve_hashes_a_key_and_serves_until_sigterm(state: State, tmp_path: Path) -> None:
    hashed = ok(state.cli("serve", "--hash-key", stdin="sk-every-command\n")).strip()
    assert len(hashed) == 64 and int(hashed, 16) >= 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**state.env, "BATCHWISE_API_KEYS": "acme=sk-every-command"}
    log = tmp_path / "serve.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)], env=env, cwd=state.home, stdout=fh, stderr=fh
        )
    try:
        wait_for(lambda: _healthy(port), 60, f"serve on port {port}: {log.read_text()[-500:]}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not state.socket.exists()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_submit_then_worker_then_results_on_the_embedded_state(
    state: State, tmp_path: Path
) -> None:
    queued = state.cli("submit", JOBS)
    ok(queued, f"{len(INPUT_IDS)} queued", "batchwise worker")
    first = run_id_of(queued.stdout)
    pending = state.cli("results", first)  # no worker attached: the tasks wait
    assert pending.returncode == 3 and "still in progress" in pending.stderr, pending.stderr
    assert not state.socket.exists()

    waiting = state.start("submit", JOBS, "--wait", "--out", "waited.jsonl", log=tmp_path / "s")
    worker = None
    try:
        wait_for(lambda: "no worker is attached" in (tmp_path / "s").read_text(), 30, "the hint")
        worker = state.start("worker", log=tmp_path / "worker.log")
        assert waiting.wait(60) == 0, (tmp_path / "s").read_text()[-2000:]
        wait_for(lambda: state.cli("results", first).returncode == 0, 60, "the first run")
        assert state.socket.exists()  # the worker keeps the server up after the others left
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        for proc in (waiting, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
    assert "worker on the embedded state" in (tmp_path / "worker.log").read_text()
    waited = [orjson.loads(x) for x in (state.home / "waited.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in waited] == INPUT_IDS and {r["status"] for r in waited} == {"ok"}
    assert not state.socket.exists()  # the worker was the last one out
