"""`batchwise run` on a fresh machine: embedded Redis, simulated provider, results file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def test_run_example_job_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "REDIS_URL"}
    env["BATCHWISE_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli.main",
            "run",
            str(ROOT / "jobs.example.jsonl"),
            "--out",
            str(out),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "SIMULATED" in proc.stdout.decode()
    inputs = [
        orjson.loads(line) for line in (ROOT / "jobs.example.jsonl").read_bytes().splitlines()
    ]
    results = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in results] == [i.get("id") or i.get("custom_id") for i in inputs]
    assert all(r["status"] == "ok" and r["provider"] == "simulated" for r in results)
    assert not (tmp_path / "state" / "redis.sock").exists()  # the embedded server was stopped


def test_bad_lines_are_reported_and_strict_refuses(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "prompt": "hi"}\n{"id": "b", "max_tokens": -1, "prompt": "x"}\n')
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "REDIS_URL"}
    env["BATCHWISE_STATE_DIR"] = str(tmp_path / "state")
    run = [sys.executable, "-m", "pipeline.cli.main", "run", str(jobs)]
    proc = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0
    assert f"{jobs}:2: field 'max_tokens'" in proc.stderr.decode()
    results = [orjson.loads(x) for x in (tmp_path / "jobs.results.jsonl").read_bytes().splitlines()]
    assert [(r["id"], r["status"]) for r in results] == [("a", "ok"), ("b", "rejected")]
    strict = subprocess.run(
        [*run, "--strict"], env=env, cwd=tmp_path, capture_output=True, timeout=120, check=False
    )
    assert strict.returncode == 2 and "nothing was queued" in strict.stderr.decode()
