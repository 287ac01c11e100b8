"""``serve --workers N``: N serving processes on one port, and this process watching over them.

One Python process serves on one core (the GIL); N processes serve on N. Each
worker is a whole server (``serve --worker-index i``) on the same database,
bound to the same port with SO_REUSEPORT, so the kernel spreads incoming
connections over them; they coordinate as any replicas do (runtime/replica.py:
one leads, all follow the change feed). This supervisor only starts them,
forwards SIGTERM / SIGINT to them, and starts again a worker that died (a worker
that keeps dying at start stops the whole server: its log says why).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("sahayak_rpc.workers")

# A worker that dies within this many seconds of its start counts as failing to start...
QUICK_DEATH_S = 10.0
# ...and this many of those in a row stop the server.
MAX_QUICK_DEATHS = 3
RESTART_DELAY_S = 1.0
SUPERVISOR_PID = "SAHAYAK_SUPERVISOR_PID"  # set in the workers' environment
_PR_SET_PDEATHSIG = 1


class PortTaken(RuntimeError):
    """Another `serve --workers` holds the address."""


def claim_address(host: str, port: int) -> socket.socket:
    """Hold ``host:port`` for this supervisor: the workers bind it with SO_REUSEPORT, which would let a
    second server's workers share it silently. An abstract unix socket named after the address is
    unique on the machine and goes when its process does; raises PortTaken when another holds it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0sahayak-rpc:{host}:{port}")
    except OSError:
        sock.close()
        raise PortTaken(f"another `sahayak-rpc serve --workers` already serves {host}:{port}") from None
    return sock


def follow_supervisor() -> None:
    """In a worker: stop (SIGTERM, a graceful stop) when the supervisor dies, even by SIGKILL, instead of
    serving on as an orphan (Linux; elsewhere a worker outlives a killed supervisor)."""
    parent = int(os.environ.get(SUPERVISOR_PID, "0"))
    if not parent or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def reserve_port(host: str) -> tuple[socket.socket, int]:
    """A free port on ``host``, held by a bound (not listening) SO_REUSEPORT socket so that no other
    program takes it before the workers bind it too; the socket receives no connections."""
    family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock, int(sock.getsockname()[1])


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0


class Supervisor:
    """Starts ``workers`` copies of ``serve`` with ``argv`` (the command line after ``sahayak-rpc``), each
    with ``--port port --worker-index i``; only worker 0 keeps ``--demo`` (one demo load)."""

    def __init__(self, argv: Sequence[str], workers: int, port: int, grace_s: float) -> None:
        self._argv = list(argv)
        self._port = port
        self._grace_s = grace_s
        self._slots = [_Slot(i) for i in range(workers)]
        self._stop = threading.Event()

    def _command(self, index: int) -> list[str]:
        argv = [a for a in self._argv if index == 0 or a != "--demo"]
        return [sys.executable, "-m", "sahayak_rpc.cli", *argv, "--port", str(self._port), "--worker-index", str(index)]

    def _spawn(self, slot: _Slot) -> None:
        slot.proc = subprocess.Popen(self._command(slot.index), env={**os.environ, SUPERVISOR_PID: str(os.getpid())})
        slot.started = time.monotonic()
        log.info("workers.started", worker=slot.index, pid=slot.proc.pid, port=self._port)

    def run(self) -> int:
        """Serve until SIGTERM / SIGINT; returns the exit code (0: every worker stopped cleanly)."""

        def on_signal(signum: int, frame: Any) -> None:
            log.info("workers.signal", signal=signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        for slot in self._slots:
            self._spawn(slot)
        failed = False
        while not self._stop.wait(0.2):
            for slot in self._slots:
                assert slot.proc is not None
                code = slot.proc.poll()
                if code is None:
                    continue
                quick = time.monotonic() - slot.started < QUICK_DEATH_S
                slot.quick_deaths = slot.quick_deaths + 1 if quick else 0
                log.warning(
                    "workers.exited",
                    worker=slot.index,
                    pid=slot.proc.pid,
                    code=code,
                    restarting=slot.quick_deaths < MAX_QUICK_DEATHS,
                )
                if slot.quick_deaths >= MAX_QUICK_DEATHS:
                    failed = True
                    self._stop.set()
                    break
                if self._stop.wait(RESTART_DELAY_S):
                    break
                self._spawn(slot)
        return self._shutdown() or int(failed)

    def _shutdown(self) -> int:
        """SIGTERM every worker, wait for their graceful stop (then SIGKILL); 1 if any did not exit 0."""
        live = [(s.index, s.proc) for s in self._slots if s.proc is not None and s.proc.poll() is None]
        for _, proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s + 30
        code = 0
        for index, proc in live:
            try:
                exit_code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("workers.kill", worker=index, pid=proc.pid)
                proc.kill()
                exit_code = proc.wait()
            if exit_code != 0:
                code = 1
        log.info("workers.stopped", code=code)
        return code
