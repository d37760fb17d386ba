"""`batchwise serve` as its own process: it answers, on SIGTERM it finishes the requests in
flight before it exits, and a batch it was validating when SIGKILLed is taken over."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from pipeline.config.settings import Settings
from pipeline.testing import FAKE_KEY, FakeProvider, clean_env, expected_output, make_settings
from tests.server.harness import API_KEYS, KEY_A, api_server

ROOT = Path(__file__).resolve().parents[2]  # the repository


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(
    tmp_path: Path,
    redis_url: str | None,
    fake: FakeProvider | None,
    port: int,
    *args: str,
    settings: Settings | None = None,
) -> subprocess.Popen[bytes]:
    """`batchwise serve` on the test Redis and the fake provider (with the key prefix of
    `settings` when given); with neither, on its own embedded Redis (state in tmp_path) with
    the simulated provider."""
    env = {"BATCHWISE_API_KEYS": API_KEYS, "BATCHWISE_STATE_DIR": str(tmp_path / "state")}
    if redis_url is not None and fake is not None:
        settings = settings or make_settings(redis_url)
        config = tmp_path / "batchwise.toml"
        config.write_text(
            f'[providers.fake]\nkind = "openai"\nbase_url = "{fake.openai_base_url}"\n'
            f'api_key_env = "FAKE_KEY"\nmodels = ["gpt-*"]\n'
        )
        env.update(
            REDIS_URL=redis_url,
            BATCHWISE_CONFIG=str(config),
            FAKE_KEY=FAKE_KEY,
            BATCHWISE_KEY_PREFIX=settings.key_prefix,
            BATCHWISE_QUEUE=settings.queue_name,
            BATCHWISE_SERVER_BATCH_LEASE_S=str(settings.server_batch_lease_s),
        )
    with (tmp_path / "serve.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env=clean_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _until_healthy(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        await asyncio.sleep(0.1)


async def test_sigterm_lets_requests_in_flight_finish(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    port = _free_port()
    proc = _serve(tmp_path, redis_url, fake, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            await _until_healthy(http, proc, tmp_path / "serve.log")
            fake.add_faults({"kind": "latency", "delay_s": 1.5})
            chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "slow one"}]}
            headers = {"authorization": f"Bearer {KEY_A}"}
            in_flight = asyncio.create_task(
                http.post("/v1/chat/completions", json=chat, headers=headers)
            )
            await asyncio.sleep(0.6)
            proc.send_signal(signal.SIGTERM)
            answer = await in_flight
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"] == expected_output("slow one")
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "serve.log").read_text()
    assert '"route":"/v1/chat/completions"' in log
    assert KEY_A not in log and "slow one" not in log


async def test_without_redis_url_it_runs_on_the_embedded_server(tmp_path: Path) -> None:
    port = _free_port()
    proc = _serve(tmp_path, None, None, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            await _until_healthy(http, proc, tmp_path / "serve.log")
            chat = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
            headers = {"authorization": f"Bearer {KEY_A}"}
            answer = await http.post("/v1/chat/completions", json=chat, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-batchwise-provider"] == "simulated"
            assert answer.json()["choices"][0]["message"]["content"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _processes_mentioning(str(tmp_path / "state")), "the embedded Redis still runs"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if text in args:
            found.append(args)
    return found


async def test_a_batch_whose_server_is_killed_while_validating_is_taken_over(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    settings = make_settings(redis_url, fake, server_api_keys=API_KEYS, server_batch_lease_s=1)
    port = _free_port()
    proc = _serve(tmp_path, redis_url, fake, port, "--no-worker", settings=settings)
    lines = [
        {"custom_id": f"q{i}", "body": {"messages": [{"role": "user", "content": f"q {i}"}]}}
        for i in range(20_000)
    ]
    headers = {"authorization": f"Bearer {KEY_A}"}
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            await _until_healthy(http, proc, tmp_path / "serve.log")
            content = b"".join(orjson.dumps(line) + b"\n" for line in lines)
            files = {"file": ("in.jsonl", content)}
            uploaded = await http.post("/v1/files", files=files, data={"purpose": "batch"})
            request = {
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            }
            batch = (await http.post("/v1/batches", json=request)).json()
            assert batch["status"] == "validating"
        proc.kill()  # SIGKILL while (most likely) still queueing the lines
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    async with api_server(settings, worker=False) as api, api.sdk(KEY_A) as client:
        for _ in range(100):  # the dead server's lease runs out within a second
            taken = await client.batches.retrieve(batch["id"])
            if taken.status != "validating":
                break
            await asyncio.sleep(0.05)
        assert taken.status in ("failed", "in_progress"), taken.status
        p = api.app.state.batchwise.pipeline
        done, total, sealed = await p.runs.progress(batch["id"])
        assert sealed
        if taken.status == "failed":  # part queued: withdrawn, each with its result
            assert done == total and await p.redis.zcard(p.keys.groups()) == 0
