"""`batchwise serve` as its own process: it answers, and on SIGTERM it finishes the requests in
flight before it exits."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import FAKE_KEY, make_settings
from tests.fake_provider import FakeProvider, expected_output
from tests.processes import ROOT, clean_env
from tests.server_harness import API_KEYS, KEY_A


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(
    tmp_path: Path, redis_url: str, fake: FakeProvider, port: int
) -> subprocess.Popen[bytes]:
    settings = make_settings(redis_url)
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
        BATCHWISE_API_KEYS=API_KEYS,
    )
    with (tmp_path / "serve.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def test_sigterm_lets_requests_in_flight_finish(
    tmp_path: Path, redis_url: str, fake: FakeProvider
) -> None:
    port = _free_port()
    proc = _serve(tmp_path, redis_url, fake, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.1)
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
