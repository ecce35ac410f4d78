"""A real `redis-server` child process for tests (Debian's package; `make system-deps` installs
it): started on a free port with no persistence unless asked, killed and restarted at will."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.processes import free_port, kill_popen, stop_popen

REDIS_SERVER = "redis-server"


class RedisServer:
    def __init__(self, *, port: int | None = None, data_dir: Path | None = None) -> None:
        """`data_dir`: keep an append-only file there (fsync on every write), so a restart
        keeps every acknowledged write; None: no persistence (a restart empties it)."""
        self.port = port or free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30.0) -> None:
        binary = shutil.which(REDIS_SERVER)
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: the Redis run-log tests need Debian's "
                "redis-server package (`make system-deps` installs it: "
                "apt-get install redis-server)"
            )
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data_dir)]
            if self.data_dir is not None
            else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self._answers_ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits for the process to be gone."""
        self._end(kill_popen)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a grace): the end of the session."""
        self._end(stop_popen)

    def _end(self, how: Callable[[subprocess.Popen[bytes]], object]) -> None:
        if self.process is not None:
            how(self.process)
            if self.process.stderr is not None:
                self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            if not sock.recv(16).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")
