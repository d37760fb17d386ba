"""`batchwise run` and `batchwise worker` as a user runs them, on the embedded state: signals,
the run id, a rerun after a kill, several processes on one state directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from pipeline.state.embedded import EmbeddedRedis
from pipeline.testing import FAKE_KEY, FakeProvider
from tests.state.test_embedded import gone

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "pipeline.cli.main"]
SLOW = {"kind": "latency", "delay_s": 20, "times": 1}


def cli_env(tmp_path: Path, fake: FakeProvider | None = None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and k not in ("REDIS_URL", "BATCHWISE_CONFIG")
    }
    env["BATCHWISE_STATE_DIR"] = str(tmp_path / "state")
    if fake is not None:
        env["OPENAI_API_KEY"] = FAKE_KEY
        env["OPENAI_BASE_URL"] = fake.openai_base_url
    env.update(extra)
    return env


def write_jobs(path: Path, n: int) -> Path:
    lines = [{"id": f"q{i}", "task_type": "faq", "prompt": f"run question {i}"} for i in range(n)]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_run(
    tmp_path: Path, env: dict[str, str], jobs: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"run-{time.monotonic_ns()}.err"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*CLI, "run", str(jobs)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err
        )
    return proc, log


def cli(
    tmp_path: Path, env: dict[str, str], *args: str, timeout_s: float
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=tmp_path, capture_output=True, timeout=timeout_s, check=False
    )


def run_id_of(text: str) -> str:
    """The run id `batchwise run` prints first."""
    found = re.search(r"^run (\S+): ", text, re.MULTILINE)
    assert found, text
    return found.group(1)


def test_sigterm_stops_a_run_like_sigint_and_says_how_to_fetch_its_results(
    tmp_path: Path, fake: FakeProvider
) -> None:
    fake.add_faults(SLOW)
    env = cli_env(tmp_path, fake, BATCHWISE_WORKER_DRAIN_S="1")
    proc, log = start_run(tmp_path, env, write_jobs(tmp_path / "jobs.jsonl", 4))
    try:
        wait_for(lambda: fake.stats()["requests"] >= 1, 60, "the provider call")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    run_id = run_id_of(log.read_text())
    assert text.index(f"run {run_id}: ") < text.index(f"interrupted: run {run_id} ")
    assert f"batchwise results {run_id}" in text
    assert "Traceback" not in text
    assert not (tmp_path / "state" / "redis.sock").exists()
    fetched = cli(tmp_path, env, "results", run_id, timeout_s=60)
    assert b"error:" not in fetched.stderr and b"Traceback" not in fetched.stderr


def test_a_second_sigint_ends_the_drain_at_once_without_a_traceback(
    tmp_path: Path, fake: FakeProvider
) -> None:
    fake.add_faults(SLOW)
    env = cli_env(tmp_path, fake, BATCHWISE_WORKER_DRAIN_S="60")
    proc, log = start_run(tmp_path, env, write_jobs(tmp_path / "jobs.jsonl", 4))
    try:
        wait_for(lambda: fake.stats()["requests"] >= 1, 60, "the provider call")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "interrupted: run" in log.read_text(), 10, "the interruption message")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 128 + signal.SIGINT
        assert time.monotonic() - started < 15  # not the 60 s drain
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and f"batchwise results {run_id_of(log.read_text())}" in text


def test_a_rerun_after_a_killed_run_reuses_its_server_and_does_not_wait_out_the_job_timeout(
    tmp_path: Path, fake: FakeProvider
) -> None:
    fake.add_faults(SLOW)
    env = cli_env(tmp_path, fake, BATCHWISE_JOB_TIMEOUT_S="300")
    jobs = write_jobs(tmp_path / "jobs.jsonl", 4)
    proc, log = start_run(tmp_path, env, jobs)
    try:
        wait_for(lambda: fake.stats()["requests"] >= 1, 60, "the provider call")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = run_id_of(log.read_text())
    orphan = int((tmp_path / "state" / "redis.pid").read_text())
    started = time.monotonic()
    rerun = cli(tmp_path, env, "run", str(jobs), timeout_s=100)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    # the killed batch ran again at once, not when its lease ran out (30 s; 310 s without one)
    assert time.monotonic() - started < 25
    text = rerun.stderr.decode()
    assert f"reusing the Redis server (pid {orphan})" in text
    assert (
        "an earlier run or worker stopped with 1 batch(es) in progress; running them again now"
    ) in text
    assert gone(orphan)  # the last one out stopped the server it adopted
    fetched = cli(tmp_path, env, "results", first, timeout_s=60)
    statuses = [orjson.loads(x)["status"] for x in fetched.stdout.splitlines()]
    assert statuses == ["ok"] * 4  # the killed run's tasks were answered by the rerun's worker


def test_a_run_leaves_the_server_to_a_process_still_attached(
    tmp_path: Path, fake: FakeProvider
) -> None:
    fake.add_faults({"kind": "latency", "delay_s": 3, "times": 1})
    env = cli_env(tmp_path, fake)
    proc, log = start_run(tmp_path, env, write_jobs(tmp_path / "jobs.jsonl", 4))
    state = tmp_path / "state"
    try:
        wait_for((state / "redis.sock").exists, 60, "the run's server")
        mine = EmbeddedRedis(state)
        mine.start()
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    client = redis.Redis(unix_socket_path=str(state / "redis.sock"), socket_timeout=2)
    try:
        assert client.ping()  # the run did not stop the server under this process
    finally:
        client.close()
    mine.stop()
    assert not (state / "redis.sock").exists()


def test_a_run_beside_a_worker_leaves_the_workers_batch_and_the_server_alone(
    tmp_path: Path, fake: FakeProvider
) -> None:
    env = cli_env(tmp_path, fake, BATCHWISE_WORKER_DRAIN_S="1")
    queued = cli(tmp_path, env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", 4)), timeout_s=60)
    assert queued.returncode == 0, queued.stderr.decode()[-2000:]
    submitted = run_id_of(queued.stdout.decode())
    fake.add_faults({"kind": "latency", "delay_s": 8, "times": 1})
    log = tmp_path / "worker.log"
    with log.open("wb") as fh:
        worker = subprocess.Popen(
            [*CLI, "worker"], env=env, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: fake.stats()["requests"] >= 1, 60, "the worker's provider call")
        other = tmp_path / "other.jsonl"
        other.write_bytes(orjson.dumps({"id": "o1", "task_type": "faq", "prompt": "other"}) + b"\n")
        run = cli(tmp_path, env, "run", str(other), timeout_s=60)
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        # a worker host is attached: the batch it is running is not cleared and run again
        assert b"stopped with" not in run.stderr
        assert (tmp_path / "state" / "redis.sock").exists()  # nor the server stopped under it
        wait_for(
            lambda: cli(tmp_path, env, "results", submitted, timeout_s=60).returncode == 0,
            60,
            "the worker's batch",
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    asked = [str(body) for body in fake.stats()["bodies"] if "run question 0" in str(body)]
    assert len(asked) == 1  # the slow batch went to the provider once
    assert not (tmp_path / "state" / "redis.sock").exists()  # the worker was the last one out


def test_a_worker_after_a_killed_worker_runs_its_batch_again_at_once(
    tmp_path: Path, fake: FakeProvider
) -> None:
    fake.add_faults(SLOW)
    env = cli_env(tmp_path, fake, BATCHWISE_JOB_TIMEOUT_S="300")
    queued = cli(tmp_path, env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", 4)), timeout_s=60)
    assert queued.returncode == 0, queued.stderr.decode()[-2000:]
    submitted = run_id_of(queued.stdout.decode())
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("killed", "next"):
            with (tmp_path / f"{name}.log").open("wb") as fh:
                workers.append(
                    subprocess.Popen(
                        [*CLI, "worker"], env=env, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT
                    )
                )
            if name == "killed":
                wait_for(lambda: fake.stats()["requests"] >= 1, 60, "the first worker's call")
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait(10)
                started = time.monotonic()
        # before any other command attaches, so that this worker is the one to adopt the server
        wait_for(lambda: "worker ready" in (tmp_path / "next.log").read_text(), 30, "the worker")
        wait_for(
            lambda: cli(tmp_path, env, "results", submitted, timeout_s=60).returncode == 0,
            60,
            "the killed worker's batch",
        )
        assert time.monotonic() - started < 25  # not when its 30 s lease ran out
        workers[1].send_signal(signal.SIGTERM)
        assert workers[1].wait(30) == 0
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = (tmp_path / "next.log").read_text()
    assert "reusing the Redis server (pid" in text
    assert "an earlier run or worker stopped with 1 batch(es) in progress" in text
    assert not (tmp_path / "state" / "redis.sock").exists()
