"""What a user sees when something is wrong: settings refused at load naming the setting, one
`error: ...` line and a non-zero exit instead of a traceback, no `.part` file left behind, data
escaped on the terminal, and API keys masked in every form a provider may echo them in."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from redis.asyncio import Redis
from rich.console import Console

import pipeline.cli.cache as cache_cli
import pipeline.cli.jobfile as jobfile_cli
import pipeline.cli.main as cli
import pipeline.cli.results as results_cli
from pipeline.config.loading import load_settings
from pipeline.config.records import ProviderConfig
from pipeline.core.runs import RunStore
from pipeline.core.summary import Summary
from pipeline.errors import ConfigError, InputError
from pipeline.keys import Keys
from pipeline.outfile import writing
from pipeline.redaction import redact, redact_logs
from pipeline.terminal import printable, terminal_safe
from pipeline.testing import FakeProvider, make_settings
from workers.testing import pipeline_client, running_worker

SECRET = "zq7Hk2pL/m9Xw4Rt8+Yv6Nb3Cd5Fg1Jh0"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"BATCHWISE_MAX_LINE_BYTES": "-1"},
            "setting max_line_bytes (env BATCHWISE_MAX_LINE_BYTES)",
        ),
        ({"BATCHWISE_JOB_TIMEOUT_S": "0"}, "setting job_timeout_s (env BATCHWISE_JOB_TIMEOUT_S)"),
        (
            {"BATCHWISE_WORKER_MAX_JOBS": "0"},
            "setting worker_max_jobs (env BATCHWISE_WORKER_MAX_JOBS)",
        ),
        ({"BATCHWISE_LINGER_MS": "soon"}, "setting linger_ms (env BATCHWISE_LINGER_MS)"),
        ({"REDIS_URL": "localhost:6379"}, "setting redis_url (env REDIS_URL): must start with"),
        (
            {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "http://localhost:99999/v1"},
            "setting providers.openai.base_url (env OPENAI_BASE_URL): not a valid URL",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert str(caught.value).startswith(expected), str(caught.value)
    assert SECRET not in str(caught.value) and "\n" not in str(caught.value)


def test_bad_table_values_name_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "batchwise.toml"
    toml.write_text("[max_items]\ngeneral = 0\n[default_max_tokens]\nfaq = -5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config_file=toml)
    message = str(caught.value)
    assert f"setting default_max_tokens (in {toml}): faq must be at least 1, got -5" in message
    assert f"setting max_items (in {toml}): general must be at least 1, got 0" in message


def test_a_relative_state_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"BATCHWISE_STATE_DIR": "state"})
    assert settings.state_dir == tmp_path / "state"


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI as a user runs it in an empty directory: no keys, no REDIS_URL."""
    for name in list(os.environ):
        if name.endswith("_API_KEY") or name.endswith("_BASE_URL") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATCHWISE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def assert_one_error_line(stderr: str, *parts: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_cli_errors_are_one_line(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = clean_env / "jobs.jsonl"
    jobs.write_text('{"prompt": "hi"}\n')

    code, stderr = run_cli(capsys, "run", "missing.jsonl")
    assert code == 2
    assert_one_error_line(stderr, "missing.jsonl", "no such file")

    code, stderr = run_cli(capsys, "run", str(clean_env))
    assert code == 2
    assert_one_error_line(stderr, "is a directory")

    code, stderr = run_cli(capsys, "run", str(jobs), "--out", "nodir/results.jsonl")
    assert code == 2
    assert_one_error_line(stderr, "nodir", "does not exist")
    assert not (clean_env / "state").exists()  # refused before any work started

    code, stderr = run_cli(capsys, "report", "--html", "nodir/report.html")
    assert code == 2
    assert_one_error_line(stderr, "nodir", "does not exist")

    code, stderr = run_cli(capsys, "cache", "clear", "--tenant", "acme\x1fglobex")
    assert code == 2
    assert_one_error_line(stderr, "--tenant", "not a tenant name")

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    code, stderr = run_cli(capsys, "submit", str(jobs))
    assert code == 2
    assert_one_error_line(stderr, "cannot reach Redis", "REDIS_URL")

    monkeypatch.setenv("REDIS_URL", "not a url")
    code, stderr = run_cli(capsys, "submit", str(jobs))
    assert code == 2
    assert_one_error_line(stderr, "setting redis_url (env REDIS_URL)")

    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:99999/v1")
    code, stderr = run_cli(capsys, "run", str(jobs))
    assert code == 2
    assert_one_error_line(stderr, "OPENAI_BASE_URL")
    assert SECRET not in stderr
    assert not list(clean_env.rglob("*.part"))


def test_a_failed_write_leaves_no_part_file(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text("previous\n")
    with pytest.raises(RuntimeError), writing(out) as fh:
        fh.write(b"half")
        raise RuntimeError("the source failed")
    assert out.read_text() == "previous\n" and not list(tmp_path.glob("*.part"))


async def test_results_that_cannot_be_written_name_the_run_and_the_command(
    redis_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    redis = Redis.from_url(redis_url)
    try:
        with pytest.raises(InputError) as caught:
            await results_cli.write_results(
                RunStore(redis, Keys("tw")), "run-42", blocker / "out.jsonl"
            )
    finally:
        await redis.aclose()
    assert "batchwise results run-42 --out FILE" in str(caught.value)
    assert not list(tmp_path.rglob("*.part"))


HOSTILE = "acme\x1b[2J\x1b]0;owned\x07[bold red]x[/]\u202e"


def test_terminal_text_escapes_controls_and_markup() -> None:
    assert printable("a\x1b[31mb\x07\u202ec") == "a\\x1b[31mb\\x07\\u202ec"
    assert printable("one\ntwo\tz", keep_lines=True) == "one\ntwo\tz"
    console = Console(force_terminal=False, width=200)
    with console.capture() as captured:
        console.print(terminal_safe(HOSTILE))
    shown = captured.get()
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "[bold red]x[/]" in shown  # markup shown as written, not interpreted


def test_summary_and_cache_stats_print_data_escaped(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = Console(force_terminal=True, width=200, color_system=None)
    monkeypatch.setattr(jobfile_cli, "out", plain)
    jobfile_cli.print_summary(Summary(run_id=HOSTILE, simulated=False), Path("out[/]\x1b.jsonl"))
    printed = capsys.readouterr().out
    assert "\x1b[2J" not in printed and "\x07" not in printed
    assert "[bold red]x[/]" in printed and "\\x1b[2J" in printed


async def test_cache_stats_escape_tenant_and_model(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(redis_url)
    keys = Keys(settings.key_prefix)
    redis = Redis.from_url(redis_url)
    try:
        await redis.hset(keys.cache_stats(), f"{HOSTILE}\x1fgpt[red]\x1flookups", 3)
    finally:
        await redis.aclose()
    monkeypatch.setattr(cache_cli.sys.stdout, "isatty", lambda: False, raising=False)

    class Args:
        tenant = None
        json = False

    await cache_cli.cmd_cache_stats(Args(), settings)  # type: ignore[arg-type]
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\\x1b" in printed and "gpt[red]" in printed


def key_forms(secret: str) -> list[str]:
    forms = [secret, quote(secret, safe=""), orjson.dumps(secret).decode()[1:-1]]
    return [f[i : i + 8] for f in forms for i in range(len(f) - 7)]


def test_redaction_catches_encoded_and_partial_keys() -> None:
    text = (
        f"url ?key={quote(SECRET, safe='')} json {orjson.dumps(SECRET).decode()} "
        f"cut {SECRET[:12]}... split {SECRET[:15]} {SECRET[15:]} sk-proj-abcdef123456 "
        "Authorization: Bearer abcdefghijklmnop"
    )
    masked = redact(text, [SECRET])
    assert not any(fragment in masked for fragment in key_forms(SECRET)), masked
    assert "abcdef123456" not in masked and "abcdefghijklmnop" not in masked
    assert masked.startswith("url ?key=[redacted] json ")
    assert redact("nothing secret here", [SECRET]) == "nothing secret here"


async def test_a_key_echoed_by_a_provider_reaches_no_result_or_redis_value(
    redis_url: str,
) -> None:
    echoed = f"Invalid request from {SECRET[:14]}****{SECRET[-9:]}; sent {quote(SECRET, safe='')}"
    with FakeProvider(key=SECRET) as server:
        server.add_faults({"kind": "400", "times": 100, "message": echoed})
        provider = ProviderConfig(
            name="fake-openai",
            kind="openai",
            base_url=server.openai_base_url,
            api_key=SECRET,
            models=("gpt-*",),
        )
        settings = make_settings(redis_url, providers=(provider,))
        async with pipeline_client(settings) as client, running_worker(settings):
            run_id = await client.submit([{"id": "a", "prompt": "hi"}], complete=True)
            await client.wait(run_id, timeout_s=30)
            (result,) = [r async for r in client.results(run_id)]
            stored = await dump_prefix(client.pipeline.redis, settings.key_prefix)
    assert result.status == "failed" and result.error is not None
    assert "[redacted]" in result.error.message
    for fragment in key_forms(SECRET):
        assert fragment not in result.error.message
        assert fragment.encode() not in stored


async def dump_prefix(redis: Redis, prefix: str) -> bytes:
    """Every value stored under a key prefix, concatenated."""
    chunks: list[bytes] = []
    async for key in redis.scan_iter(f"{prefix}:*"):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            chunks.append(await redis.get(key) or b"")
        elif kind == "hash":
            chunks += [k + v for k, v in (await redis.hgetall(key)).items()]
        elif kind == "list":
            chunks += await redis.lrange(key, 0, -1)
        elif kind == "set":
            chunks += list(await redis.smembers(key))
        elif kind == "zset":
            chunks += await redis.zrange(key, 0, -1)
        elif kind == "stream":
            for _id, fields in await redis.xrange(key):
                chunks += [k + v for k, v in fields.items()]
    return b"\n".join(chunks)


def test_log_records_are_masked_after_redact_logs() -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    logger = logging.getLogger("batchwise.test-redaction")
    handler = Collect()
    logger.addHandler(handler)
    try:
        redact_logs([SECRET])
        try:
            raise RuntimeError(f"refused {quote(SECRET, safe='')}")
        except RuntimeError:
            logger.exception("call with key %s failed", SECRET[:20])
    finally:
        logger.removeHandler(handler)
    (line,) = lines
    assert "RuntimeError" in line and "[redacted]" in line
    assert not any(fragment in line for fragment in key_forms(SECRET)), line
