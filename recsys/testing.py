"""A throwaway local Redis for tests and benchmarks: one place that starts and stops it.

Only loopback, a free port chosen by the kernel, data in a directory of the caller's. Persistence
is off unless asked for (``durable=True``: an fsync'd append-only file, so a restart keeps rows).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from recsys.errors import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRedis:
    """``redis-server`` on 127.0.0.1; ``start()``/``stop()`` may alternate (same port and data)."""

    def __init__(self, directory: Path | None = None, durable: bool = False):
        self.port = free_port()
        self.directory = Path(directory) if directory is not None else None
        self.durable = durable
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "LocalRedis":
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError("redis-server is not on PATH (Debian: apt-get install redis-server)")
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="recsys-redis-"))
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      *persistence, "--dir", str(self.directory)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return self
            except OSError:
                time.sleep(0.025)
        self.stop()
        raise ConfigError(f"redis-server did not start on port {self.port} within {timeout:g}s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> "LocalRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
