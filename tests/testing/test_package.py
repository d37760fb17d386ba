"""`pipeline.testing` is the one home of the fakes: its public names, what it may import, the
documented example, and benches that use it rather than the test suite."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pipeline.testing
from pipeline.testing import clean_env

ROOT = Path(__file__).resolve().parents[2]  # the repository

PUBLIC = {
    "ARQ_WORKER",
    "BATCHWISE_WORKER",
    "FAKE_KEY",
    "FAULT_KINDS",
    "EmbeddedRedis",
    "FakeProcess",
    "FakeProvider",
    "Fault",
    "WorkerProcesses",
    "clean_env",
    "estimate_tokens",
    "expected_output",
    "fake_openai_provider",
    "fake_provider_worker",
    "make_settings",
    "worker_process",
    "workers",
}


def test_all_lists_every_public_name_and_each_resolves() -> None:
    assert set(pipeline.testing.__all__) == PUBLIC
    for name in pipeline.testing.__all__:
        assert getattr(pipeline.testing, name) is not None, name


def test_importing_it_loads_neither_arq_nor_workers_nor_the_test_suite() -> None:
    code = (
        "import sys, pipeline.testing\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'arq', 'workers', 'tests'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_bench_imports_the_test_suite() -> None:
    offenders = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert offenders == []


def test_the_documented_example_runs_offline_as_a_script(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "testing.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    script = tmp_path / "example.py"
    script.write_text(example)
    env = clean_env(PYTHONWARNINGS="error::ResourceWarning")
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ok"]
    assert "ResourceWarning" not in done.stderr
