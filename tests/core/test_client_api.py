"""The Python API as the README writes it: a script that runs, a connect() that fails at once and
clearly, wait(timeout=), a results() that says whether the run is complete, and a producer that
gives up on a lost Redis in one line that says how to fetch the results later."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from pipeline.cli.main import main as cli_main
from pipeline.core.client import BatchwiseClient
from pipeline.errors import ConfigError
from pipeline.state.connecting import RedisUnavailable
from pipeline.state.embedded import EmbeddedRedis
from pipeline.state.reconnect import Outage, OutageRetry, safe_url
from pipeline.testing import FAKE_KEY, FakeProvider, clean_env, expected_output, make_settings
from workers.testing import running_worker

ROOT = Path(__file__).resolve().parents[2]  # the repository


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (snippet,) = [b for b in blocks if "BatchwiseClient.connect()" in b]
    return snippet


async def test_the_readme_snippet_runs_as_a_script(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake)
    script = tmp_path / "snippet.py"
    script.write_text(readme_snippet())
    config = tmp_path / "batchwise.toml"
    config.write_text(
        f'[providers.fake]\nkind = "openai"\nbase_url = "{fake.openai_base_url}"\n'
        f'api_key_env = "FAKE_KEY"\nmodels = ["gpt-*"]\n'
    )
    env = clean_env(
        REDIS_URL=redis_url,
        BATCHWISE_CONFIG=str(config),
        FAKE_KEY=FAKE_KEY,
        BATCHWISE_KEY_PREFIX=settings.key_prefix,
        BATCHWISE_QUEUE=settings.queue_name,
        PYTHONWARNINGS="error::ResourceWarning",
    )
    async with running_worker(settings):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-X",
            "dev",
            str(script),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, errors = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, errors.decode()
    lines = out.decode().splitlines()
    assert lines[0] == f"q1 ok {expected_output('Where is my order?')}"
    assert lines[1:] == ["complete: True", "ok"]
    assert b"ResourceWarning" not in errors


async def test_connect_fails_at_once_on_a_redis_that_is_not_there(tmp_path: Path) -> None:
    settings = make_settings(f"unix://{tmp_path}/nothing.sock")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"cannot reach Redis at unix://.*check REDIS_URL"):
        await BatchwiseClient.connect(settings)
    assert time.monotonic() - started < 2


async def test_connect_error_never_shows_the_password() -> None:
    settings = make_settings("redis://user:s3cret-pass@127.0.0.1:1/0")
    with pytest.raises(ConfigError) as caught:
        async with BatchwiseClient.connect(settings):
            pass
    assert "s3cret-pass" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
    assert safe_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"


async def test_wait_timeout_and_the_completeness_flag(redis_url: str, fake: FakeProvider) -> None:
    settings = make_settings(redis_url, fake)
    async with BatchwiseClient.connect(settings) as client:
        run_id = await client.submit(
            [{"id": f"w{i}", "task_type": "faq", "prompt": f"wait {i}"} for i in range(3)],
            complete=True,
        )
        with pytest.raises(TimeoutError):
            await client.wait(run_id, timeout=0.2)  # no worker: nothing gets answered
        early = client.results(run_id)
        assert [r async for r in early] == [] and early.complete is False
        assert (await client.progress(run_id)).done == 0
        async with running_worker(settings):
            await client.wait(run_id, timeout=20)
        done = client.results(run_id)
        assert len([r async for r in done]) == 3 and done.complete is True


async def test_cli_results_warns_and_exits_3_while_a_run_is_in_progress(
    redis_url: str,
    fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(redis_url, fake)
    async with BatchwiseClient.connect(settings) as client:
        run_id = await client.submit([{"id": "p1", "prompt": "pending"}], complete=True)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("BATCHWISE_KEY_PREFIX", settings.key_prefix)
    code = await asyncio.to_thread(cli_main, ["results", run_id])
    assert code == 3
    assert f"run {run_id} is still in progress (0 of 1 results)" in capsys.readouterr().err


async def test_a_producer_waits_through_an_outage_then_gives_up_in_one_line(
    tmp_path: Path,
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    settings = make_settings(server.start(), redis_outage_wait_s=1.0, redis_backoff_cap_s=0.2)
    async with BatchwiseClient.connect(settings) as client:
        run_id = await client.submit([{"id": "g1", "prompt": "gone"}], complete=True)
        server.stop()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as caught:
            await client.wait(run_id, timeout=30)
        waited_s = time.monotonic() - started
    message = str(caught.value)
    assert 1.0 <= waited_s < 5
    assert f"batchwise results {run_id} --out FILE" in message and "\n" not in message


async def test_the_retry_policy_logs_one_line_down_and_one_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = OutageRetry(
        Outage("test"), base_s=0.001, cap_s=0.002, give_up_s=None, wait_at_start=False
    )
    failures = iter([True, True, True, False, True, False])

    async def flaky() -> str:
        if next(failures):
            raise RedisConnectionError("gone")
        return "ok"

    async def noop(_error: Exception) -> None:
        return None

    policy.outage.reached = True
    with caplog.at_level(logging.WARNING, logger="batchwise.redis"):
        assert await policy.call_with_retry(flaky, noop) == "ok"
        assert await policy.call_with_retry(flaky, noop) == "ok"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and policy.outage.outages == 2
    assert lines[0].startswith("test: Redis went away (ConnectionError: gone)")
    assert lines[1].startswith("test: Redis is back after")
    for failures_so_far in range(1, 40):
        assert 0 < policy.delay_s(failures_so_far) <= 0.002
