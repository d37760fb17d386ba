"""The embedded Redis server of a state directory: one server however many processes attach,
the last one out stops it, a server left by a killed process is adopted, everything private."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from pipeline.config.loading import load_settings
from pipeline.errors import ConfigError
from pipeline.state.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]


def ping(state: Path) -> bool:
    client = redis.Redis(unix_socket_path=str(state / "redis.sock"), socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat_line.rpartition(")")[2].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def test_two_attached_share_one_server_and_the_last_out_stops_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, second = EmbeddedRedis(state), EmbeddedRedis(state)
    first.start()
    second.start()
    assert first.pid == second.pid and first.pid is not None
    pid = first.pid
    assert int((state / "redis.pid").read_text()) == pid
    first.stop()  # the one that started it leaves first: the other still uses it
    assert ping(state)
    second.stop()
    assert gone(pid)
    assert not (state / "redis.sock").exists() and not (state / "redis.pid").exists()


def test_a_process_attached_elsewhere_keeps_the_server(tmp_path: Path) -> None:
    state = tmp_path / "state"
    mine = EmbeddedRedis(state)
    mine.start()
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from pipeline.state.embedded import EmbeddedRedis; "
            "e = EmbeddedRedis(pathlib.Path(sys.argv[1])); e.start(); print(e.pid, flush=True); "
            "sys.stdin.read(); e.stop()",
            str(state),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        assert int(holder.stdout.readline()) == mine.pid
        pid = mine.pid
        assert pid is not None
        mine.stop()
        assert ping(state)  # the other process is still attached
        holder.stdin.close()
        assert holder.wait(10) == 0
    assert gone(pid)


def test_a_server_left_by_a_killed_process_is_adopted_then_stopped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys, pathlib; from pipeline.state.embedded import EmbeddedRedis; "
            "e = EmbeddedRedis(pathlib.Path(sys.argv[1]), hosts_worker=True); e.start(); "
            "print(e.pid, flush=True); os.kill(os.getpid(), signal.SIGKILL)",
            str(state),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    orphan = int(killed.stdout)
    assert ping(state)  # the orphan still runs
    server = EmbeddedRedis(state, hosts_worker=True)
    server.start()
    assert server.adopted and server.pid == orphan
    assert not server.other_workers  # the killed process's worker is known to be gone
    server.stop()
    assert gone(orphan)


def test_state_dir_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / "old.aof").write_bytes(b"")
    os.chmod(state / "old.aof", 0o644)  # left readable by an older version
    server = EmbeddedRedis(state)
    server.start()
    client = redis.Redis(unix_socket_path=str(state / "redis.sock"))
    client.set("prompt", "private")
    client.close()
    server.stop()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = [p for p in state.rglob("*") if p.is_file()]
    # Redis < 7 writes appendonly.aof, Redis >= 7 appendonlydir/
    assert any(".aof" in p.name for p in files if p.name != "old.aof")
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {
        p.name: "0o600" for p in files
    }


def test_xdg_state_home_is_honoured() -> None:
    assert load_settings(env={"XDG_STATE_HOME": "/srv/state"}).state_dir == Path(
        "/srv/state/batchwise"
    )
    both = {"XDG_STATE_HOME": "/srv/state", "BATCHWISE_STATE_DIR": "/data/bw"}
    assert load_settings(env=both).state_dir == Path("/data/bw")
    relative = load_settings(env={"XDG_STATE_HOME": "state"}).state_dir
    assert relative == Path.home() / ".local" / "state" / "batchwise"


def test_a_live_server_that_does_not_answer_is_never_joined_by_a_second(tmp_path: Path) -> None:
    other = EmbeddedRedis(tmp_path / "other")
    other.start()
    try:
        client = redis.Redis(unix_socket_path=str(tmp_path / "other" / "redis.sock"))
        pid = client.info("server")["process_id"]
        client.close()
        state = tmp_path / "state"
        state.mkdir()
        # as if the state's server were still loading its AOF: alive, silent on the socket
        (state / "redis.pid").write_text(f"{pid}\n")
        with pytest.raises(ConfigError, match=rf"a redis-server \(pid {pid}\) holds"):
            EmbeddedRedis(state).start(timeout_s=0.5)
        assert not (state / "redis.sock").exists()  # no second server was started
    finally:
        other.stop()
