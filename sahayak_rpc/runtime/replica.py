"""This process as one of the replicas that serve one database.

Any number of serving processes, on one machine (``serve --workers N``) or many,
share a database and behave as one server (docs/scale-out.md):

- Each registers a row in ``replicas`` and heartbeats it; it holds a liveness
  lock for as long as it lives (store: an advisory lock on PostgreSQL, a file
  lock on SQLite), so another replica can tell at once that it died.
- One of them leads: whoever holds the leader lock runs the scheduler, the
  health checks and retention. Losing the lock (the process dies, its
  connection is cut) lets another replica take it within a heartbeat.
- The leader fails the training runs whose worker died (its liveness lock is
  free) or stopped heartbeating (the counter did not move for
  ``[training] heartbeat_timeout`` of the leader's own time: no clocks are
  compared across machines). A replica starting up does the first part too,
  so a run its previous life left running is failed at once.
- Every replica follows the change feed (store/events.py) from its cursor and
  acts on each event: serve the new champion, reload a model, wake trainers,
  run watchers and alert watchers, stop a cancelled run. PostgreSQL's NOTIFY
  wakes it early; on SQLite it polls (the coordinator's ``poll_s``). After a lost connection, and every
  ``RESYNC_S`` as a safety net, it reloads what it caches from the rows.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from ..app.catalog import Catalog
from ..app.context import AppContext
from ..app.monitor import Monitor
from ..app.registry import Registry
from ..app.training_runs import TrainingRunner
from ..errors import NotFound, ServiceError
from ..store import Coordinator, ReplicaRepository, StoreError, events
from ..store.events import Event, ReplicaRow

log = structlog.get_logger("sahayak_rpc.replica")

# A replica reloads every cached thing from the rows this often, whatever the feed said.
RESYNC_S = 30.0
# Replicas whose heartbeat is this many intervals old are not "seen recently".
SEEN_BEATS = 5


@dataclass(frozen=True)
class ReplicaStatus:
    me: ReplicaRow | None
    leading: bool
    seen: list[ReplicaRow]


class Replica:
    def __init__(
        self,
        ctx: AppContext,
        coordinator: Coordinator,
        catalog: Catalog,
        registry: Registry,
        runner: TrainingRunner,
        monitor: Monitor,
        *,
        version: str,
        trains: bool,
        heartbeat_s: float,
        run_timeout_s: float,
    ) -> None:
        self._ctx = ctx
        self._coordinator = coordinator
        self._catalog, self._registry, self._runner, self._monitor = catalog, registry, runner, monitor
        self._repo = ReplicaRepository(ctx.db)
        self._version = version
        self._trains = trains
        self._heartbeat_s = heartbeat_s
        self._run_timeout_s = run_timeout_s
        self.name = f"{socket.gethostname()}/{os.getpid()}"
        self.address = ""
        self.id = 0
        self._row: ReplicaRow | None = None
        self._leading = False
        # Called when the schedule may have something to do: this replica became the leader, a model
        # has enough new labels, a run ended (on any replica).
        self.on_schedule: list[Callable[[], None]] = []
        self._cursor = 0
        self._beats: dict[str, tuple[int, float]] = {}  # run -> (heartbeat seen, when it last moved)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- life -------------------------------------------------------------------------

    def register(self) -> int:
        """Add this process to the replicas table and take its liveness lock; returns its id. Raises
        StoreError when the lock cannot be taken (the database's coordination is unreachable)."""
        now = self._ctx.now_us()
        self._row = self._repo.register(
            self.name, socket.gethostname(), os.getpid(), self.address, self._version, self._trains, now
        )
        self.id = self._row.id
        if not self._coordinator.keep(self.id):
            raise StoreError(f"replica {self.id}: cannot take its liveness lock on {self._ctx.db.location}")
        self._ctx.replica_id = self.id
        # Changes before this moment are already in what this process loads at start.
        self._cursor = self._ctx.events.last_seq()
        return self.id

    def recover(self) -> None:
        """Fail the runs that dead workers left running (this process's previous life among them): before
        the server answers its first call, so that no client sees such a run as running."""
        self._sweep_runs(expired=False)

    def start(self, name: str, address: str) -> None:
        """Heartbeat and follow the change feed on threads of their own."""
        self.name, self.address = name, address
        self._beat()
        for target, label in ((self._beat_loop, "replica-heartbeat"), (self._follow_loop, "replica-follow")):
            thread = threading.Thread(target=target, name=label, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._coordinator.interrupt()
        for thread in self._threads:
            thread.join(timeout=30)
        try:
            if self.id:
                self._repo.stopped(self.id, self._ctx.now_us())
        except ServiceError as exc:
            log.warning("replica.stop_unrecorded", error=exc.message)
        self._coordinator.close()
        self._leading = False

    @property
    def leading(self) -> bool:
        """Whether this replica led at its last heartbeat."""
        return self._leading

    def status(self) -> ReplicaStatus:
        """This replica's row, whether it leads, and the replicas seen within the last few heartbeats that
        still hold their liveness lock (one killed drops out at once, not a few heartbeats later, and so does
        its claim to lead)."""
        since = self._ctx.now_us() - int(SEEN_BEATS * self._heartbeat_s * 1_000_000)
        seen = [r for r in self._repo.seen_since(since) if r.id == self.id or self._coordinator.alive(r.id)]
        return ReplicaStatus(self._repo.get(self.id), self._leading, seen)

    # --- heartbeat and leadership ---------------------------------------------------------

    def _beat_loop(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            try:
                self._beat()
            except Exception:  # a bug of ours must not stop the heartbeat
                log.exception("replica.beat_crashed")

    def _beat(self) -> None:
        if not self._coordinator.keep(self.id):
            log.warning("replica.lock_lost", replica=self.id)
        was = self._leading
        self._leading = self._coordinator.try_lead()
        if self._leading != was:
            log.info("replica.leader" if self._leading else "replica.follower", replica=self.id, name=self.name)
            if self._leading:
                self._beats.clear()  # watch the runs afresh: another leader's observations are gone
                self._schedule()
        try:
            assert self._row is not None, "beat before register"
            self._row = replace(
                self._row, heartbeat_us=self._ctx.now_us(), leader=self._leading, name=self.name, address=self.address
            )
            self._repo.beat(self._row)
            cancels = self._ctx.runs.heartbeat(self.id, sorted(self._runner.local_runs()))
            if cancels:
                self._runner.cancel_local(cancels)
            if self._leading:
                self._sweep_runs(expired=True)
        except ServiceError as exc:  # the database is away: beat again next time
            log.warning("replica.beat_failed", error=exc.message)

    def _sweep_runs(self, expired: bool) -> None:
        """Fail running runs whose worker died, or that this process holds but no longer runs (its trainer
        could not write their end); with ``expired``, also those whose heartbeat stopped moving for the run
        timeout (as this replica has watched it)."""
        now = time.monotonic()
        running = self._ctx.runs.running()
        mine = self._runner.local_runs()  # (read after the rows: a run claimed meanwhile is in it)
        for run in running:
            reason, beat = "", None
            if run.worker == self.id:
                if run.run_id in mine:
                    continue  # its trainer ends it
                reason = "its worker (this replica) no longer runs it"
            elif not self._coordinator.alive(run.worker):
                reason = f"its worker (replica {run.worker}) stopped"
            elif expired:
                seen = self._beats.get(run.run_id)
                if seen is None or seen[0] != run.heartbeat:
                    self._beats[run.run_id] = (run.heartbeat, now)
                elif now - seen[1] > self._run_timeout_s:
                    reason = f"its worker (replica {run.worker}) stopped heartbeating for {self._run_timeout_s:g}s"
                    beat = run.heartbeat
            if not reason:
                continue
            failed = self._ctx.runs.fail_running(run.run_id, run.worker, beat, reason, self._ctx.now_us())
            if failed is not None:
                log.warning("replica.run_interrupted", run_id=run.run_id, reason=reason)
                self._runner.interrupted(failed)
                self._schedule()
        current = {r.run_id for r in running}
        for run_id in [r for r in self._beats if r not in current]:
            del self._beats[run_id]

    # --- the change feed --------------------------------------------------------------------

    def _follow_loop(self) -> None:
        last_resync = time.monotonic()
        while not self._stop.is_set():
            try:
                self._coordinator.wait(self._coordinator.poll_s)
                if self._stop.is_set():
                    return
                if self._coordinator.reconnected or time.monotonic() - last_resync > RESYNC_S:
                    self.resync()
                    last_resync = time.monotonic()
                self.catch_up()
            except ServiceError as exc:  # the database is away: try again
                log.warning("replica.follow_failed", error=exc.message)
                self._stop.wait(1.0)
            except Exception:  # a bug of ours must not stop the follower
                log.exception("replica.follow_crashed")
                self._stop.wait(1.0)

    def catch_up(self) -> None:
        """Act on every event after the cursor, in order. An event that cannot be acted on (a champion whose
        artifact does not load, say) is logged and passed: the next resync tries what it caches again."""
        while True:
            batch = self._ctx.events.after(self._cursor)
            for event in batch:
                try:
                    self._apply(event)
                except ServiceError:
                    raise  # the database is away: read from here again
                except Exception:
                    log.exception("replica.event_failed", seq=event.seq, kind=event.kind, subject=event.subject)
                self._cursor = event.seq
            if len(batch) < 1000:
                break
        # Progress events are not in the feed (only their wake-up is): let run watchers look.
        self._runner.progressed()

    def _apply(self, event: Event) -> None:
        kind = event.kind
        if kind == events.MODEL:
            self._catalog.changed(event.subject)
            return
        if kind in (events.RUN, events.CANCEL):
            if kind == events.CANCEL:
                self._runner.cancel_local([event.subject])
            self._runner.wake()
            self._schedule()
            return
        if kind == events.ALERT:
            self._monitor.alerts_changed()
            return
        if kind == events.LABELS:
            self._schedule()
            return
        try:
            model = self._catalog.by_id(event.model_id)
        except NotFound:
            return
        if kind == events.ALIAS and event.subject == "champion":
            self._registry.refresh(model)
        elif kind == events.VERSION and event.subject.isdigit():
            self._registry.evict(model, int(event.subject))

    def _schedule(self) -> None:
        for hook in self.on_schedule:
            hook()

    def resync(self) -> None:
        """Reload what this process caches from the rows (after a lost connection, and now and then)."""
        self._catalog.changed()
        self._registry.refresh_all(self._catalog.all())
        self._runner.wake()
        self._monitor.alerts_changed()
