"""A real `sahayak-rpc serve` process, for the tests and the benchmarks that run servers as processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sahayak_rpc.client import Client


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(*args: str) -> list[str]:
    """The real `sahayak-rpc` command, as CI installs it, run by this interpreter."""
    return [sys.executable, "-m", "sahayak_rpc.cli", *args]


class ReplicaProcess:
    """A real `sahayak-rpc serve` process (one replica, or a --workers supervisor), its log in a file."""

    def __init__(
        self, db: str, workdir: Path, name: str, *args: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.db, self.name, self.args = db, name, args
        self.port = port or free_port()
        self.log_path = workdir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.env.pop("SAHAYAK_TARGET", None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> ReplicaProcess:
        with self.log_path.open("a") as log:  # an undrained pipe would stall the server once it filled
            self.proc = subprocess.Popen(
                server_command("serve", "--port", str(self.port), "--db", self.db, *self.args),
                stdout=log,
                stderr=log,
                env=self.env,
            )
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with Client(self.target, timeout=2) as c:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
                try:
                    if c.health() == "SERVING":
                        return
                except Exception:
                    time.sleep(0.1)
        raise AssertionError(f"{self.name} did not become healthy: {self.log_tail()}")

    def client(self, timeout: float = 60) -> Client:
        return Client(self.target, timeout=timeout)

    def status(self) -> Any:
        with self.client() as c:
            return c.server_status()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-n:]) if self.log_path.exists() else ""
