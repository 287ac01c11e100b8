"""Injectable time, so schedules and cooldowns are testable in milliseconds."""

from __future__ import annotations

import os
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Block until ``event`` is set or ``seconds`` pass on this clock; True if set."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to; waiters wake when it passes their deadline."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._cond = threading.Condition()

    def now(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def set(self, when: float) -> None:
        with self._cond:
            self._now = when
            self._cond.notify_all()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        with self._cond:
            deadline = self._now + seconds
            while not event.is_set() and self._now < deadline:
                # A short real timeout so a set() of the event is noticed
                # without the event having to know about this condition.
                self._cond.wait(0.01)
            return event.is_set()


class FileClock:
    """A clock several processes share: the time is the number (seconds since the epoch) in a file that a
    test writes, so that a schedule spread over replicas is testable in milliseconds too. The server uses
    it when SAHAYAK_TEST_CLOCK_FILE names the file (tests only: the file alone decides the time)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def now(self) -> float:
        with open(self._path) as f:
            return float(f.read().strip())

    def wait(self, event: threading.Event, seconds: float) -> bool:
        deadline = self.now() + seconds
        while not event.is_set() and self.now() < deadline:
            event.wait(0.02)
        return event.is_set()

    @staticmethod
    def write(path: str, when: float) -> None:
        """Set the shared time (atomically: a reader never sees half a number)."""
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(repr(float(when)))
        os.replace(tmp, path)
