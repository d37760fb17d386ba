"""Real processes: the fake provider server and `batchwise worker`s.

Each runs as its own OS process, as in production, so what a test or bench sees (shared rate
limits, shared provider health) is what several hosts pointed at one Redis would see.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from pipeline.config.settings import Settings
from pipeline.testing.provider import FakeProvider

# Children start here, so `python -m` finds this copy of the code even where it is not installed.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
# never hand a real key from the developer's shell to a test worker
_PROVIDER_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "BATCHWISE_CONFIG")


class FakeProcess:
    """`python -m pipeline.testing` (the fake provider) in a child process, driven over its
    control API."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.testing", "--port", "0", *args],
            cwd=SOURCE_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"fake provider did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def control(self, path: str, doc: Any = None) -> Any:
        if doc is None and path == "stats":
            return self.http.get("/_control/stats", params={"bodies": "0"}).json()
        response = self.http.post(f"/_control/{path}", json=doc if doc is not None else {})
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("stats")
        return result

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without provider keys or config, with `extra` on top."""
    env = {k: v for k, v in os.environ.items() if k not in _PROVIDER_ENV}
    env.update(extra)
    return env


BATCHWISE_WORKER = ("-m", "pipeline.cli.main", "worker")
ARQ_WORKER = ("-m", "arq", "workers.WorkerSettings")  # arq's own CLI


def worker_process(
    log: Path, env: Mapping[str, str], command: Sequence[str] = BATCHWISE_WORKER
) -> subprocess.Popen[bytes]:
    """`batchwise worker` (or another `command`) as its own OS process: `env` over a clean
    environment (no provider key or config from the developer's shell), stdout and stderr
    appended to `log`. Like `make_settings`, it packs every group unless `env` says otherwise."""
    with log.open("ab") as fh:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, *command],
            cwd=SOURCE_ROOT,
            env=clean_env(**{"BATCHWISE_PACK_ONLY_WHEN_CHEAPER": "0", **env}),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def fake_provider_worker(
    tmp_path: Path,
    settings: Settings,
    fake: FakeProvider,
    command: Sequence[str] = BATCHWISE_WORKER,
    **env: str,
) -> subprocess.Popen[bytes]:
    """`batchwise worker` on `settings`' Redis, key prefix and queue, answering through the
    in-process fake provider (a config file in tmp_path), output to tmp_path/worker.log."""
    config = tmp_path / "batchwise.toml"
    config.write_text(
        f'[providers.fake]\nkind = "openai"\nbase_url = "{fake.openai_base_url}"\n'
        f'api_key_env = "FAKE_KEY"\nmodels = ["gpt-*"]\nread_timeout_s = 30\n'
    )
    base = {
        "REDIS_URL": settings.redis_url or "",
        "BATCHWISE_CONFIG": str(config),
        "FAKE_KEY": fake.key,
        "BATCHWISE_KEY_PREFIX": settings.key_prefix,
        "BATCHWISE_QUEUE": settings.queue_name,
        "BATCHWISE_LINGER_MS": "20",
    }
    return worker_process(tmp_path / "worker.log", {**base, **env}, command)


class WorkerProcesses:
    """N `python -m pipeline.cli.main worker` processes with the same environment."""

    def __init__(self, count: int, env: Mapping[str, str], log_dir: Path) -> None:
        self.logs = [log_dir / f"worker{i}.log" for i in range(count)]
        self.procs = [worker_process(log, env) for log in self.logs]

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every worker has logged that it is ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited early:\n{log.read_text()}")
            if all("worker ready" in log.read_text() for log in self.logs):
                return
            time.sleep(0.1)
        raise TimeoutError("workers did not start: " + " | ".join(p.read_text() for p in self.logs))

    def log_text(self) -> str:
        return "\n".join(log.read_text() for log in self.logs)

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def workers(count: int, env: Mapping[str, str], log_dir: Path) -> Iterator[WorkerProcesses]:
    group = WorkerProcesses(count, env, log_dir)
    try:
        group.wait_ready()
        yield group
    finally:
        group.stop()
