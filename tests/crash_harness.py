"""Crash-safety harness: SIGKILL a real sahayak-rpc server at random moments and check what survived.

Every cycle starts the real command (``python -m sahayak_rpc.cli serve``) on the same database (a
SQLite file, or a PostgreSQL database), runs eight workloads at once from client threads, and kills
the process with SIGKILL after a random delay (seeded; 0-300 ms by default), so one kill lands in
several activities at once:

    ingest          RecordOutcome, one outcome per call
    import          ImportOutcomes client streams (3 batches of 40)
    training        StartTraining, followed to its end, then the next one
    promotion       SetAlias (champion, staging) and RollbackModel
    model_import    ImportModelVersion of an exported artifact
    feedback        RecordFeedback and ImportFeedback (most carry an outcome: a training outcome too)
    log_predictions LogPredictions client streams (2 messages of 25)
    predict_batch   PredictBatch (served predictions go through the prediction-log writer)

After each kill, before the restart, the database is read in one read-only snapshot (sqlite3; on
PostgreSQL psycopg, in a REPEATABLE READ READ ONLY transaction begun once the dead server's
sessions have ended) and checked: ``PRAGMA integrity_check`` (SQLite); each key the checks look
rows up by names one row; every acknowledged outcome, feedback and logged prediction is there
with its content; every version row has an artifact that matches its sha256, verifies and scores;
aliases point at existing versions and agree with the newest event of their history, whose chain
of previous versions is unbroken; every acknowledged alias move, imported version and started run
is there; a version registered by a run and that run's end agree (no half-promoted model). After
the restart, through gRPC: the runs the kill interrupted while they ran are FAILED ("interrupted");
runs still queued at the kill stay in the queue, and the restarted server runs them to an end; no
run is left active, the champion and aliases the database names are the ones the server reports
and the champion answers Predict, and a new StartTraining is accepted (the next cycle's training
workload follows that run). After the last kill, that run must train to the end, and a SIGTERM
stop must exit 0 and leave no run running.

Run as a script: ``.venv/bin/python tests/crash_harness.py --kills 50 [--seed S] [--postgres | --db URL]``
prints the seed on stderr and a JSON summary on stdout; the exit code is 0 when nothing was lost or
inconsistent. ``--postgres`` starts a throwaway PostgreSQL cluster (tests/pg_cluster.py) for the
run; ``--db`` names an empty PostgreSQL database to use instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import orjson
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sahayak_rpc import artifact as art
from sahayak_rpc._proto.sahayak.v1 import (
    common_pb2,
    feedback_pb2,
    monitor_pb2,
    registry_pb2,
    training_pb2,
)
from sahayak_rpc.client import Client, OutcomeInput, SahayakError, fill_features
from sahayak_rpc.schema import FeatureSpec, FeatureType, LabelSpec
from sahayak_rpc.store import is_postgres_url
from sahayak_rpc.store.batchcodec import decode_probabilities
from sahayak_rpc.store.segments import LogSegments, LostPayload, folder_for, is_ref, read_columns

if TYPE_CHECKING:
    from tests.pg_cluster import PgCluster

MODEL = "crash"
FEATURES = [
    FeatureSpec("age", FeatureType.NUMERIC, required=True, min=18, max=100),
    FeatureSpec("income", FeatureType.NUMERIC),
    FeatureSpec("craft", FeatureType.CATEGORICAL, required=True, categories=("weaver", "potter", "carpenter")),
    FeatureSpec("region", FeatureType.CATEGORICAL, allow_unknown_categories=True, categories=("north", "south")),
    FeatureSpec("has_card", FeatureType.BOOLEAN),
]
ACTIVE_RUN_STATES = (training_pb2.TRAINING_RUN_STATE_QUEUED, training_pb2.TRAINING_RUN_STATE_RUNNING)
ACTIVITIES = (
    "ingest",
    "import",
    "training",
    "promotion",
    "model_import",
    "feedback",
    "log_predictions",
    "predict_batch",
)
# The health poll while a server starts: retry a refused connection fast (the default backoff
# adds ~1 s to every restart). Not grpc.min_reconnect_backoff_ms: it is also the connect timeout,
# and a loaded machine needs more than 100 ms for a handshake now and then.
FAST = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.max_reconnect_backoff_ms", 100)]
RPC_TIMEOUT = 20.0


# --- data ---------------------------------------------------------------------


def make_row(rng: random.Random) -> tuple[dict[str, Any], bool]:
    """A row and its label, drawn from a known logistic model (learnable, so training behaves)."""
    age = float(rng.randint(18, 90))
    craft = rng.choice(("weaver", "potter", "carpenter"))
    has_card = rng.random() < 0.5
    row: dict[str, Any] = {
        "age": age,
        "craft": craft,
        "has_card": has_card,
        "region": rng.choice(("north", "south", "east")),
    }
    if rng.random() < 0.8:
        row["income"] = float(rng.randrange(20_000, 300_000, 500))
    z = 0.08 * (age - 50) + (1.5 if has_card else -1.5) + {"weaver": 0.8, "potter": 0.0, "carpenter": -0.8}[craft]
    return row, rng.random() < 1 / (1 + math.exp(-z))


def _state(value: int) -> str:
    return str(training_pb2.TrainingRunState.Name(value))  # type: ignore[arg-type]


def model_settings() -> registry_pb2.ModelSettings:
    """No scheduler (runs start only when the harness says), a gate every candidate passes
    (so runs promote), logistic regression only (fast runs on a small machine)."""
    s = registry_pb2.ModelSettings()
    s.training.schedule_enabled = False
    s.training.incremental_every = 0
    s.training.min_samples = 100
    s.training.families.append(registry_pb2.MODEL_FAMILY_LOGISTIC_REGRESSION)
    s.gate.min_accuracy = 0.0
    s.gate.min_f1 = 0.0
    s.gate.max_calibration_error = 1.0
    s.gate.max_roc_auc_drop = 1.0
    return s


def _norm(features: dict[str, Any]) -> Any:
    """Features as JSON stores them (a boolean sent in a numeric column comes back as 0/1)."""
    return {k: (float(v) if isinstance(v, bool) else v) for k, v in features.items()}


# --- what the server acknowledged ---------------------------------------------


@dataclass
class Ledger:
    """Every write the server acknowledged (its RPC returned OK), across all cycles."""

    outcomes: dict[str, tuple[dict[str, Any], bool]] = field(default_factory=dict)
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)
    logged: dict[str, tuple[int, float, int, dict[str, Any]]] = field(default_factory=dict)
    imported: dict[int, str] = field(default_factory=dict)  # version -> description
    alias_events: dict[int, tuple[str, int, int]] = field(default_factory=dict)  # id -> alias, version, previous
    runs: set[str] = field(default_factory=set)
    served_batches: dict[str, list[float]] = field(default_factory=dict)
    versions: set[int] = field(default_factory=set)  # known to exist (promotion picks among these)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def counts(self) -> dict[str, int]:
        return {
            "outcomes": len(self.outcomes),
            "feedback": len(self.feedback),
            "logged_predictions": len(self.logged),
            "imported_versions": len(self.imported),
            "alias_moves": len(self.alias_events),
            "training_runs_started": len(self.runs),
        }


# --- the server process --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A spare server process: a fresh interpreter that has imported the server (the ~1 s of a
# start) and waits for its command line on stdin, then runs the real CLI entry point with it.
SPARE = """import json, sys
import sahayak_rpc.cli as cli, sahayak_rpc.config, sahayak_rpc.logs, sahayak_rpc.server
argv = json.loads(sys.stdin.readline() or "[]")
sys.exit(cli.main(argv) if argv else 0)
"""


class ServerProcess:
    """``sahayak-rpc serve`` on one database (a SQLite file or a PostgreSQL URL), stderr to a log file.

    With ``spares`` > 0, the next processes are started ahead (each importing the server while
    the current one works) and handed ``serve ...`` when a restart is due: the same
    ``sahayak_rpc.cli.main`` runs, minus the import wait. ``spares=0``: ``python -m
    sahayak_rpc.cli serve ...`` every time. The first start is always that literal command.
    """

    def __init__(self, db: str, log_path: Path, spares: int = 2) -> None:
        self.db = db
        self.log_path = log_path
        self.spares = spares
        self._spare_procs: list[subprocess.Popen[bytes]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.start_seconds: list[float] = []

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def _env() -> dict[str, str]:
        env = dict(os.environ)
        env.pop("SAHAYAK_TARGET", None)
        return env

    def _serve_args(self) -> list[str]:
        return ["serve", "--port", str(self.port), "--db", self.db, "--log-level", "warning"]

    def _refill(self) -> None:
        with self.log_path.open("ab") as log:
            while len(self._spare_procs) < self.spares:
                self._spare_procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", SPARE],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        env=self._env(),
                    )
                )

    def start(self, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        self.port = free_port()
        if self.proc is None or not self._spare_procs:  # the first start, or no spares: the command itself
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "sahayak_rpc.cli", *self._serve_args()],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=self._env(),
                )
        else:
            self.proc = self._spare_procs.pop(0)
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(self._serve_args()).encode() + b"\n")
            self.proc.stdin.close()
        channel = grpc.insecure_channel(self.target, options=FAST)
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            while True:
                if self.proc.poll() is not None:  # (the log goes with a temporary workdir: quote it)
                    tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode}; {self.log_path} ends:\n" + "\n".join(tail)
                    )
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError("server did not become healthy")
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        break
                except grpc.RpcError:
                    time.sleep(0.01)
        finally:
            channel.close()
        self.start_seconds.append(time.monotonic() - t0)
        self._refill()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        """Stop the spares (an empty command line: they exit) and make sure the server is gone."""
        for spare in self._spare_procs:
            assert spare.stdin is not None
            spare.stdin.close()
        for spare in self._spare_procs:
            try:
                spare.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spare.kill()
                spare.wait(timeout=30)
        self._spare_procs.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


# --- one cycle of workloads -----------------------------------------------------


class Cycle:
    """The client threads of one server lifetime; they stop when the server dies."""

    def __init__(self, index: int, target: str, ledger: Ledger, artifact: bytes, seed: int, first_run: str) -> None:
        self.index = index
        self.first_run = first_run
        self.target = target
        self.ledger = ledger
        self.artifact = artifact
        self.seed = seed
        self.killing = threading.Event()
        self.connected = threading.Semaphore(0)
        self.in_flight = dict.fromkeys(ACTIVITIES, 0)
        self.flight_lock = threading.Lock()
        self.violations: list[str] = []
        self.threads: list[threading.Thread] = []
        self.clients: list[Client] = []

    # Each workload runs in its own thread with its own channel.
    def start(self) -> None:
        workers: dict[str, Callable[[Client, random.Random], None]] = {
            "ingest": self._ingest,
            "import": self._import,
            "training": self._training,
            "promotion": self._promotion,
            "model_import": self._model_import,
            "feedback": self._feedback,
            "log_predictions": self._log_predictions,
            "predict_batch": self._predict_batch,
        }
        for n, (name, fn) in enumerate(workers.items()):
            client = Client(self.target, timeout=RPC_TIMEOUT)
            self.clients.append(client)
            t = threading.Thread(
                target=self._run, args=(name, fn, client, self.seed * 1000 + n), name=f"crash-{name}", daemon=True
            )
            t.start()
            self.threads.append(t)
        deadline = time.monotonic() + 30
        for _ in self.threads:  # the random delay starts when every workload has its connection
            self.connected.acquire(timeout=max(0.0, deadline - time.monotonic()))

    def _run(self, name: str, fn: Callable[[Client, random.Random], None], client: Client, seed: int) -> None:
        try:
            try:
                client.wait_ready(timeout=30)
            finally:
                self.connected.release()
            fn(client, random.Random(seed))
        except AssertionError as exc:  # an OK reply that says the wrong thing: wrong even as the server dies
            self.violations.append(f"cycle {self.index} {name}: {exc}")
        except (SahayakError, grpc.RpcError) as exc:
            if not self.killing.is_set():  # before the kill, every RPC should have worked
                self.violations.append(f"cycle {self.index} {name}: unexpected error before the kill: {exc}")
        except Exception as exc:  # noqa: BLE001 - an unexpected reply (or a harness bug) is reported, not raised
            if not self.killing.is_set():
                self.violations.append(f"cycle {self.index} {name}: {type(exc).__name__}: {exc}")
        finally:
            client.close()

    def _call(self, activity: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One RPC, counted as in flight for ``activity`` until it returns."""
        with self.flight_lock:
            self.in_flight[activity] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self.flight_lock:
                self.in_flight[activity] -= 1

    def snapshot_in_flight(self) -> set[str]:
        with self.flight_lock:
            return {a for a, n in self.in_flight.items() if n > 0}

    def stop_and_join(self) -> None:
        # The client retries idempotent calls (RecordOutcome) on UNAVAILABLE for ~0.75 s: against a
        # dead server that is time lost, and no retry can succeed before the restart anyway.
        for client in self.clients:
            client.close()
        for t in self.threads:
            t.join(timeout=60)
            if t.is_alive():
                self.violations.append(f"cycle {self.index}: worker {t.name} did not stop after the kill")

    @property
    def alive(self) -> bool:
        return not self.killing.is_set()

    # --- workloads -----------------------------------------------------------

    def _ingest(self, c: Client, rng: random.Random) -> None:
        i = 0
        while self.alive:
            oid = f"c{self.index}-r{i}"
            row, label = make_row(rng)
            self._call("ingest", c.record_outcome, MODEL, row, label, outcome_id=oid)
            with self.ledger.lock:
                self.ledger.outcomes[oid] = (row, label)
            i += 1

    def _import(self, c: Client, rng: random.Random) -> None:
        j = 0
        while self.alive:
            batch = []
            for k in range(120):
                row, label = make_row(rng)
                batch.append(OutcomeInput(row, label, outcome_id=f"c{self.index}-i{j}-{k}"))
            resp = self._call("import", c.import_outcomes, MODEL, batch, batch_size=40)
            if resp.accepted + resp.duplicates != len(batch) or resp.rejected:
                raise AssertionError(f"import acknowledged {resp.accepted}+{resp.duplicates} of {len(batch)}")
            with self.ledger.lock:
                for o in batch:
                    self.ledger.outcomes[o.outcome_id] = (dict(o.features), o.label)
            j += 1
            time.sleep(0.01)

    def _training(self, c: Client, rng: random.Random) -> None:
        """Follow the run started at the restart to its end, then start the next one, and so on."""
        run_id = self.first_run
        while self.alive:
            with self.flight_lock:
                self.in_flight["training"] += 1
            try:
                if not run_id:
                    run_id = c.start_training(
                        MODEL, families=["logistic_regression"], description=f"cycle {self.index}"
                    ).run_id
                    with self.ledger.lock:
                        self.ledger.runs.add(run_id)
                while self.alive:
                    got = c.get_run(run_id)
                    if got.state not in ACTIVE_RUN_STATES:
                        break
                    time.sleep(0.02)
                else:
                    return
            finally:
                with self.flight_lock:
                    self.in_flight["training"] -= 1
            if got.state != training_pb2.TRAINING_RUN_STATE_SUCCEEDED:
                raise AssertionError(f"run {run_id} ended {_state(got.state)}: {got.end_reason}")
            if got.produced_version:
                with self.ledger.lock:
                    self.ledger.versions.add(got.produced_version)
            run_id = ""

    def _promotion(self, c: Client, rng: random.Random) -> None:
        while self.alive:
            with self.ledger.lock:
                choices = sorted(self.ledger.versions)
            action = rng.random()
            if action < 0.2:
                try:
                    event = self._call("promotion", c.rollback, MODEL, reason=f"crash cycle {self.index}")
                except SahayakError as exc:
                    if exc.reason != "NO_PREVIOUS_CHAMPION":
                        raise
                    continue
            else:
                alias = "champion" if action < 0.8 else "staging"
                version = rng.choice(choices)
                event = self._call("promotion", c.set_alias, MODEL, alias, version, reason=f"cycle {self.index}")
            with self.ledger.lock:
                self.ledger.alias_events[event.event_id] = (event.alias, event.version, event.previous_version)
            time.sleep(0.005)

    def _model_import(self, c: Client, rng: random.Random) -> None:
        k = 0
        while self.alive:
            description = f"c{self.index}-m{k}"
            v = self._call("model_import", c.import_version, MODEL, self.artifact, description=description)
            with self.ledger.lock:
                self.ledger.imported[v.version] = description
                self.ledger.versions.add(v.version)
            k += 1
            time.sleep(0.02)

    def _feedback_message(
        self, fid: str, rng: random.Random
    ) -> tuple[feedback_pb2.Feedback, dict[str, Any], tuple[dict[str, Any], bool] | None]:
        """A feedback message, its expected row, and the training outcome it must create (or None)."""
        row, label = make_row(rng)
        with_outcome = rng.random() < 0.7
        f = feedback_pb2.Feedback(
            feedback_id=fid,
            model=MODEL,
            artisan_id=f"a{rng.randrange(1000)}",
            scheme_id=rng.choice(("pmegp", "mudra", "pension")),
            rating=rng.randint(0, 5),
            comment=f"comment {rng.random():.6f}",
        )
        if with_outcome:
            f.interaction = feedback_pb2.INTERACTION_APPLIED
            f.outcome = feedback_pb2.FEEDBACK_OUTCOME_APPROVED if label else feedback_pb2.FEEDBACK_OUTCOME_REJECTED
            fill_features(f.features, row)
        else:
            f.interaction = feedback_pb2.INTERACTION_VIEWED
        expected = {
            "interaction": "applied" if with_outcome else "viewed",
            "outcome": ("approved" if label else "rejected") if with_outcome else None,
            "rating": f.rating or None,
            "comment": f.comment,
            "scheme_id": f.scheme_id,
            "artisan_id": f.artisan_id,
            "outcome_id": f"feedback:{fid}" if with_outcome else None,
        }
        return f, expected, ((row, label) if with_outcome else None)

    def _feedback(self, c: Client, rng: random.Random) -> None:
        k = 0
        while self.alive:
            items = [self._feedback_message(f"c{self.index}-f{k}-{n}", rng) for n in range(1 if k % 2 == 0 else 10)]
            if len(items) == 1:
                resp = self._call(
                    "feedback",
                    c.feedback.RecordFeedback,
                    feedback_pb2.RecordFeedbackRequest(feedback=items[0][0]),
                    timeout=RPC_TIMEOUT,
                )
                if resp.feedback_id != items[0][0].feedback_id:
                    raise AssertionError(f"feedback id {resp.feedback_id!r}")
            else:
                requests = [
                    feedback_pb2.ImportFeedbackRequest(feedback=[i[0] for i in items[:5]]),
                    feedback_pb2.ImportFeedbackRequest(feedback=[i[0] for i in items[5:]]),
                ]
                resp = self._call("feedback", c.feedback.ImportFeedback, iter(requests), timeout=RPC_TIMEOUT)
                if resp.accepted + resp.duplicates != len(items) or resp.rejected:
                    raise AssertionError(f"feedback import acknowledged {resp.accepted} of {len(items)}")
            with self.ledger.lock:
                for f, expected, outcome in items:
                    self.ledger.feedback[f.feedback_id] = expected
                    if outcome is not None:
                        self.ledger.outcomes[f"feedback:{f.feedback_id}"] = outcome
            k += 1

    def _log_predictions(self, c: Client, rng: random.Random) -> None:
        k = 0
        while self.alive:
            entries: dict[str, tuple[int, float, int, dict[str, Any]]] = {}
            messages = []
            for m in range(2):
                request = monitor_pb2.LogPredictionsRequest(model=MODEL if m == 0 else "")
                for n in range(25):
                    pid = f"c{self.index}-lp{k}-{m}-{n}"
                    row, _ = make_row(rng)
                    prob = round(rng.random(), 6)
                    label = int(prob >= 0.5)
                    p = request.predictions.add(
                        prediction_id=pid,
                        version=1,
                        probability=prob,
                        label=common_pb2.LABEL_POSITIVE if label else common_pb2.LABEL_NEGATIVE,
                    )
                    fill_features(p.features, row)
                    entries[pid] = (1, prob, label, row)
                messages.append(request)
            resp = self._call("log_predictions", c.monitor.LogPredictions, iter(messages), timeout=RPC_TIMEOUT)
            if resp.accepted != len(entries):
                raise AssertionError(f"LogPredictions accepted {resp.accepted} of {len(entries)}: {resp.errors}")
            with self.ledger.lock:
                self.ledger.logged.update(entries)
            k += 1

    def _predict_batch(self, c: Client, rng: random.Random) -> None:
        while self.alive:
            rows: list[Mapping[str, Any]] = [make_row(rng)[0] for _ in range(30)]
            resp = self._call("predict_batch", c.predict_batch, MODEL, rows)
            with self.ledger.lock:
                self.ledger.served_batches[resp.batch_id] = list(resp.probabilities)


# --- reading the database ---------------------------------------------------------

# After a kill, PostgreSQL ends the dead server's sessions when their backends notice the closed
# socket; one that was committing at the kill may still finish its commit (never acknowledged).
SESSIONS_GONE_TIMEOUT = 30.0
INSPECTOR_NAME = "crash-harness inspector"


class Snapshot(Protocol):
    """One consistent, read-only view of the database: the checks read every row through it."""

    waited_s: float  # how long the killed server's sessions took to end (PostgreSQL)

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query written once for both backends (``?`` placeholders)."""
        ...

    def engine_violations(self) -> list[str]:
        """What the backend's own checks find (its storage, its sessions)."""
        ...

    def batch_columns(self, data: bytes | str) -> dict[str, Any]:
        """A logged batch's ``columns_data`` decoded; LostPayload when its bytes are gone."""
        ...

    def close(self) -> None: ...


class SqliteSnapshot:
    def __init__(self, path: str) -> None:
        self.waited_s = 0.0
        self._conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        self._segments = LogSegments(folder_for(path))  # where the features of a logged batch are
        self._conn.execute("BEGIN")  # one snapshot for every query below

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(args)).fetchall()

    def engine_violations(self) -> list[str]:
        result = [r[0] for r in self.rows("PRAGMA integrity_check")]
        return [] if result == ["ok"] else [f"integrity_check: {result[:5]}"]

    def batch_columns(self, data: bytes | str) -> dict[str, Any]:
        return read_columns(self._segments, data)

    def close(self) -> None:
        self._segments.close()
        self._conn.close()


class PgSnapshot:
    """A REPEATABLE READ READ ONLY transaction, begun once the killed server's sessions have ended.

    Until then a commit the server sent before it died may still land (unacknowledged, so nothing
    the ledger holds), and the new server would find the old one's liveness lock still held. Between
    a kill and the restart no one but the inspector is connected to the harness's database.
    """

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name=INSPECTOR_NAME)
        try:
            self.waited_s, self._lingering = self._await_sessions_gone()
            self._conn.autocommit = False
            self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn.read_only = True
        except BaseException:
            self._conn.close()
            raise

    def _await_sessions_gone(self) -> tuple[float, list[tuple[Any, ...]]]:
        t0 = time.monotonic()
        waited = 0.0
        while True:
            others = self._conn.execute(
                "SELECT pid, application_name, state, left(query, 120) FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
            if not others or waited > SESSIONS_GONE_TIMEOUT:
                return waited, others
            time.sleep(0.005)
            waited = time.monotonic() - t0

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(args) or None).fetchall()

    def engine_violations(self) -> list[str]:
        # No counterpart of PRAGMA integrity_check: the kill hits PostgreSQL's client, never
        # PostgreSQL, whose own processes alone write its pages and keep running (and amcheck would
        # need CREATE EXTENSION, a write). Keys are checked below, as on SQLite.
        if self._lingering:
            return [f"sessions still open {SESSIONS_GONE_TIMEOUT:.0f} s after the kill: {self._lingering[:3]}"]
        return []

    def batch_columns(self, data: bytes | str) -> dict[str, Any]:
        if is_ref(data):
            raise LostPayload("a log-segment reference on PostgreSQL, where a batch's features are inline")
        return read_columns(None, data)

    def close(self) -> None:
        self._conn.close()  # (rolls the read-only transaction back)


@contextmanager
def snapshot(db: str) -> Iterator[Snapshot]:
    """A read-only snapshot of ``db``: a SQLite file, or a ``postgresql://`` URL."""
    snap: Snapshot = PgSnapshot(db) if is_postgres_url(db) else SqliteSnapshot(db)
    try:
        yield snap
    finally:
        snap.close()


# --- checks -------------------------------------------------------------------

# Each key the checks look a row up by names at most one row (the checks fold rows into dicts, which
# would hide a second one), and a model has at most one active run.
UNIQUE_KEYS = (
    ("outcomes", "model_id, outcome_id", ""),
    ("feedback", "model_id, feedback_id", ""),
    ("model_versions", "model_id, version", ""),
    ("aliases", "model_id, alias", ""),
    ("alias_events", "id", ""),
    ("training_runs", "run_id", ""),
    ("training_runs", "model_id", " WHERE state IN ('queued', 'running')"),
)


@dataclass
class Inspection:
    lost: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    active_runs: list[str] = field(default_factory=list)
    running_runs: list[str] = field(default_factory=list)  # (the active runs a trainer had claimed)
    champion: int = 0
    aliases: dict[str, int] = field(default_factory=dict)
    checked: int = 0
    served_batches_logged: int = 0
    sessions_waited_s: float = 0.0


class Inspector:
    """Reads the database read-only (between the kill and the restart) and checks it against the ledger."""

    def __init__(self, db: str | Path) -> None:
        self.db = str(db)
        self._verified: set[tuple[int, str]] = set()  # artifacts already loaded and scored (immutable rows)
        self._batches_seen: set[str] = set()  # served batches once in the log must stay there
        # Rows as they were when they matched the acknowledged content: the same bytes later
        # still match, without parsing them again (every kill re-checks every acknowledgement).
        self._matched: dict[tuple[str, str], Any] = {}

    def inspect(self, ledger: Ledger) -> Inspection:
        out = Inspection()
        with snapshot(self.db) as snap:
            out.sessions_waited_s = snap.waited_s
            with ledger.lock:
                frozen = Ledger(
                    outcomes=dict(ledger.outcomes),
                    feedback=dict(ledger.feedback),
                    logged=dict(ledger.logged),
                    imported=dict(ledger.imported),
                    alias_events=dict(ledger.alias_events),
                    runs=set(ledger.runs),
                    served_batches=dict(ledger.served_batches),
                )
            out.violations += snap.engine_violations()
            for table, key, where in UNIQUE_KEYS:
                for row in snap.rows(
                    f"SELECT {key}, count(*) FROM {table}{where} GROUP BY {key} HAVING count(*) > 1 LIMIT 3"
                ):
                    out.violations.append(f"{table}: {row[-1]} rows for ({key}) = {row[:-1]}{where}")
            ((model_id,),) = snap.rows("SELECT id FROM models WHERE name = ?", (MODEL,))
            self._outcomes(snap, model_id, frozen, out)
            self._feedback(snap, model_id, frozen, out)
            self._logged(snap, model_id, frozen, out)
            self._registry(snap, model_id, frozen, out)
        return out

    def _outcomes(self, snap: Snapshot, model_id: int, ledger: Ledger, out: Inspection) -> None:
        stored = {
            oid: (label, fj)
            for oid, label, fj in snap.rows(
                "SELECT outcome_id, label, features_json FROM outcomes WHERE model_id = ?", (model_id,)
            )
        }
        for oid, (features, label) in ledger.outcomes.items():
            out.checked += 1
            got = stored.get(oid)
            if got is None:
                out.lost.append(f"outcome {oid}: missing")
            elif self._matched.get(("outcome", oid)) == got:
                continue  # the very row verified after an earlier kill
            elif got[0] != int(label) or _norm(orjson.loads(got[1])) != _norm(features):
                out.lost.append(f"outcome {oid}: content differs: {got} vs {(features, label)}")
            else:
                self._matched[("outcome", oid)] = got

    @staticmethod
    def _feedback(snap: Snapshot, model_id: int, ledger: Ledger, out: Inspection) -> None:
        cols = ("interaction", "outcome", "rating", "comment", "scheme_id", "artisan_id", "outcome_id")
        stored = {
            r[0]: dict(zip(cols, r[1:], strict=True))
            for r in snap.rows(f"SELECT feedback_id, {', '.join(cols)} FROM feedback WHERE model_id = ?", (model_id,))
        }
        for fid, expected in ledger.feedback.items():
            out.checked += 1
            got = stored.get(fid)
            if got is None:
                out.lost.append(f"feedback {fid}: missing")
            elif got != expected:
                out.lost.append(f"feedback {fid}: content differs: {got} vs {expected}")

    def _logged(self, snap: Snapshot, model_id: int, ledger: Ledger, out: Inspection) -> None:
        stored = {
            r[0]: r[1:]
            for r in snap.rows(
                "SELECT prediction_id, version, probability, label, features_json FROM predictions"
                " WHERE model_id = ? AND source = 'logged'",
                (model_id,),
            )
        }
        for pid, (version, prob, label, row) in ledger.logged.items():
            out.checked += 1
            got = stored.get(pid)
            if got is None:
                out.lost.append(f"logged prediction {pid}: missing")
            elif self._matched.get(("logged", pid)) == got:
                continue
            elif (got[0], got[1], got[2]) != (version, prob, label) or _norm(orjson.loads(got[3])) != _norm(row):
                out.lost.append(f"logged prediction {pid}: content differs: {got}")
            else:
                self._matched[("logged", pid)] = got
        # Served batches are logged off the request path (not acknowledged writes): a batch may
        # be missing after a kill, but one that is there must be whole and say what was served.
        present = set()
        for batch_id, count, cols_data, probs_data in snap.rows(
            "SELECT batch_id, row_count, columns_data, probabilities_data FROM prediction_batches WHERE model_id = ?",
            (model_id,),
        ):
            present.add(batch_id)
            probs = decode_probabilities(probs_data)
            try:
                columns = snap.batch_columns(cols_data)
            except LostPayload as exc:  # a kill loses no bytes the kernel has: nothing may be lost
                out.violations.append(f"prediction batch {batch_id}: its features are lost: {exc}")
                continue
            lengths = {len(v["codes"]) if isinstance(v, dict) else len(v) for v in columns.values()}
            if len(probs) != count or lengths - {count}:
                out.violations.append(
                    f"prediction batch {batch_id}: {count} rows, {len(probs)} probabilities,"
                    f" column lengths {sorted(lengths)}"
                )
            served = ledger.served_batches.get(batch_id)
            if served is not None:
                out.served_batches_logged += 1
                if served != probs:
                    out.violations.append(f"prediction batch {batch_id}: logged probabilities differ from the reply")
        vanished = self._batches_seen - present
        if vanished:
            out.violations.append(f"{len(vanished)} logged prediction batches vanished, e.g. {sorted(vanished)[:3]}")
        self._batches_seen |= present

    def _registry(self, snap: Snapshot, model_id: int, ledger: Ledger, out: Inspection) -> None:
        ((key,),) = snap.rows("SELECT value FROM secrets WHERE name = 'artifact_hmac_key'")
        key = bytes(key)
        keys = {hashlib.sha256(key).hexdigest()[:16]: key}
        probe = make_row(random.Random(0))[0]
        versions: dict[int, tuple[str, str, str | None, str]] = {}
        for version, status, source, run_id, blob, sha, description in snap.rows(
            "SELECT version, status, source, training_run_id, artifact, artifact_sha256, description"
            " FROM model_versions WHERE model_id = ?",
            (model_id,),
        ):
            versions[version] = (status, source, run_id, description)
            blob = bytes(blob)
            if hashlib.sha256(blob).hexdigest() != sha:
                out.violations.append(f"version {version}: artifact does not match its sha256")
                continue
            if (version, sha) in self._verified:
                continue
            try:
                scoring, _ = art.load(blob, keys=keys)
                p = float(scoring.predict_rows([probe])[0])
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"probability {p}")
            except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
                out.violations.append(f"version {version}: artifact does not load: {type(exc).__name__}: {exc}")
                continue
            self._verified.add((version, sha))
        for version, description in ledger.imported.items():
            out.checked += 1
            got = versions.get(version)
            if got is None:
                out.lost.append(f"imported version {version}: missing")
            elif got[1] != "import" or got[3] != description:
                out.lost.append(f"imported version {version}: is {got}, expected an import described {description!r}")

        aliases = dict(snap.rows("SELECT alias, version FROM aliases WHERE model_id = ?", (model_id,)))
        events = snap.rows(
            "SELECT id, alias, version, previous_version, reason FROM alias_events WHERE model_id = ? ORDER BY id",
            (model_id,),
        )
        out.aliases = aliases
        out.champion = aliases.get("champion", 0)
        if not out.champion:
            out.violations.append("no champion alias")
        for alias, version in aliases.items():
            if version not in versions:
                out.violations.append(f"alias {alias} points at version {version}, which does not exist")
            elif versions[version][0] == "archived":
                out.violations.append(f"alias {alias} points at archived version {version}")
        last: dict[str, int] = {}
        by_id = {}
        for event_id, alias, version, previous, _reason in events:
            by_id[event_id] = (alias, version, previous)
            if previous != last.get(alias, 0):
                out.violations.append(
                    f"alias event {event_id}: {alias} moved from {previous}, but it was at {last.get(alias, 0)}"
                )
            if version and version not in versions:
                out.violations.append(f"alias event {event_id}: version {version} does not exist")
            last[alias] = version
        for alias in set(last) | set(aliases):
            if last.get(alias, 0) != aliases.get(alias, 0):
                out.violations.append(
                    f"alias {alias} is at {aliases.get(alias, 0)} but its history ends at {last.get(alias, 0)}"
                )
        for event_id, expected in ledger.alias_events.items():
            out.checked += 1
            if by_id.get(event_id) != expected:
                out.lost.append(f"alias event {event_id}: {by_id.get(event_id)} vs acknowledged {expected}")

        runs = {
            r[0]: r[1:]
            for r in snap.rows(
                "SELECT run_id, state, produced_version, promoted, end_reason FROM training_runs WHERE model_id = ?",
                (model_id,),
            )
        }
        for run_id in ledger.runs:
            out.checked += 1
            if run_id not in runs:
                out.lost.append(f"training run {run_id}: missing")
        promoted_by = {
            reason.removeprefix("promoted by "): (alias, version)
            for _, alias, version, _, reason in events
            if reason.startswith("promoted by ")
        }
        for run_id, (state, produced, promoted, end_reason) in runs.items():
            if state in ("queued", "running"):
                out.active_runs.append(run_id)
            if state == "running":
                out.running_runs.append(run_id)
            if produced:
                v = versions.get(produced)
                if state != "succeeded" or v is None or v[2] != run_id:
                    out.violations.append(f"run {run_id} ({state}) produced version {produced}: {v}")
                if promoted and promoted_by.get(run_id) != ("champion", produced):
                    out.violations.append(f"run {run_id} promoted version {produced} but no alias event says so")
            elif state == "succeeded" and not (end_reason or "").startswith("unchanged:"):
                # Only a run on exactly the champion's outcomes and settings succeeds without one.
                out.violations.append(f"run {run_id} succeeded without a version")
        for version, (_status, _source, run_id, _) in versions.items():
            if run_id and (run_id not in runs or runs[run_id][1] != version):
                out.violations.append(
                    f"version {version} registered by run {run_id}, which does not name it: {runs.get(run_id)}"
                )
            if run_id in promoted_by and not runs.get(run_id, (None, None, 0))[2]:
                out.violations.append(f"version {version} was promoted by run {run_id}, which says it was not")


def start_run(c: Client, ledger: Ledger, description: str) -> str:
    run_id = c.start_training(MODEL, families=["logistic_regression"], description=description).run_id
    with ledger.lock:
        ledger.runs.add(run_id)
    return run_id


def _later(c: Client, run_id: str, state: int, wait_s: float = 10.0) -> str:
    """What became of a run the restart should have failed: a late failure and a missed one differ."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait_s:
        run = c.get_run(run_id)
        if run.state != state:
            return f"; {_state(run.state)} {time.monotonic() - t0:.2f} s later ({run.end_reason!r})"
        time.sleep(0.02)
    return f"; still so {wait_s:.0f} s later"


def check_after_restart(target: str, before: Inspection, ledger: Ledger, cycle: int) -> tuple[list[str], int, str]:
    """Through gRPC: interrupted runs failed, queued ones run to an end, none left active, the champion
    answers, a new run starts."""
    violations = []
    failed = 0
    run_id = ""
    with Client(target, timeout=RPC_TIMEOUT) as c:
        for run_id in before.running_runs:
            run = c.get_run(run_id)
            if run.state != training_pb2.TRAINING_RUN_STATE_FAILED or "interrupted" not in run.end_reason:
                violations.append(
                    f"run {run_id} interrupted by the kill is {_state(run.state)} ({run.end_reason!r})"
                    f" once health says SERVING{_later(c, run_id, run.state)}"
                )
            else:
                failed += 1
        champion, aliases = before.champion, dict(before.aliases)
        for run_id in set(before.active_runs) - set(before.running_runs):
            run = c.wait_run(run_id, timeout=300)  # a queued run stays in the queue: the new server runs it
            if run.state in ACTIVE_RUN_STATES:
                violations.append(f"run {run_id}, queued at the kill, never ended after the restart")
            elif run.promoted:  # (at most one run is queued per model)
                champion = aliases["champion"] = run.produced_version
        for state in ACTIVE_RUN_STATES:
            active = c.training.ListTrainingRuns(
                training_pb2.ListTrainingRunsRequest(model=MODEL, state=state), timeout=RPC_TIMEOUT
            ).runs
            if active:
                violations.append(f"after the restart, runs still {_state(state)}: {[r.run_id for r in active]}")
        model = c.get_model(MODEL)
        if model.champion_version != champion or dict(model.aliases) != aliases:
            violations.append(
                f"after the restart the server names champion {model.champion_version} and aliases"
                f" {dict(model.aliases)}; the database said {before.champion}, {before.aliases}"
                + (f", and a queued run then promoted {champion}" if champion != before.champion else "")
            )
        p = c.predict(MODEL, make_row(random.Random(1))[0])
        if p.version != champion or not 0.0 <= p.probability <= 1.0:
            violations.append(f"after the restart Predict answered with version {p.version}, champion is {champion}")
        newest = c.registry.ListAliasHistory(
            registry_pb2.ListAliasHistoryRequest(model=MODEL, alias="champion", page_size=1), timeout=RPC_TIMEOUT
        )
        if not newest.events or newest.events[0].version != champion:
            violations.append("ListAliasHistory's newest champion event is not the champion")
        try:
            run_id = start_run(c, ledger, f"after restart {cycle}")
        except SahayakError as exc:
            violations.append(f"StartTraining after restart {cycle} refused: {exc}")
    return violations, failed, run_id


# --- the whole run ---------------------------------------------------------------


def bootstrap(target: str, ledger: Ledger, rng: random.Random) -> bytes:
    """The model, 400 outcomes, a first champion; returns its exported artifact."""
    with Client(target, timeout=RPC_TIMEOUT) as c:
        c.create_model(MODEL, FEATURES, LabelSpec("outcome", "approved", "rejected"), settings=model_settings())
        batch = []
        for k in range(400):
            row, label = make_row(rng)
            batch.append(OutcomeInput(row, label, outcome_id=f"boot-{k}"))
        resp = c.import_outcomes(MODEL, batch)
        assert resp.accepted == len(batch), resp
        run = c.train(MODEL, families=["logistic_regression"], timeout=120)
        assert run.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED and run.promoted, run
        with ledger.lock:
            for o in batch:
                ledger.outcomes[o.outcome_id] = (dict(o.features), o.label)
            ledger.runs.add(run.run_id)
            ledger.versions.add(run.produced_version)
        return c.export_version(MODEL, alias="champion")


def check_empty(db: str) -> None:
    """A harness run needs a database of its own: refuse one that already has models."""
    if not is_postgres_url(db):
        if Path(db).exists():
            raise ValueError(f"{db} exists: the crash harness needs a new database")
        return
    with psycopg.connect(db, autocommit=True, connect_timeout=10, application_name=INSPECTOR_NAME) as conn:
        row = conn.execute("SELECT to_regclass('models') IS NOT NULL").fetchone()
        if row and row[0] and conn.execute("SELECT count(*) FROM models").fetchone() != (0,):
            raise ValueError("that database has models already: the crash harness needs a new database")


def run(
    kills: int = 50,
    seed: int | None = None,
    workdir: Path | None = None,
    max_delay_ms: float = 300.0,
    spares: int = 3,
    log: Callable[[str], None] | None = None,
    db: str | None = None,
) -> dict[str, Any]:
    """Kill the server ``kills`` times at random moments; returns the summary (``ok`` when nothing failed).

    ``db``: a new SQLite file or an empty PostgreSQL database (``postgresql://...``); by default
    ``crash.db`` in ``workdir``, which also holds the server log.
    """
    seed = random.randrange(2**31) if seed is None else seed
    say = log or (lambda s: None)
    own_dir = None
    if workdir is None:
        own_dir = tempfile.TemporaryDirectory(prefix="sahayak-crash-")
        workdir = Path(own_dir.name)
    db = str(workdir / "crash.db") if db is None else db
    backend = "postgresql" if is_postgres_url(db) else "sqlite"
    say(f"crash harness: seed {seed}, {kills} kills, {backend}")
    t_start = time.monotonic()
    rng = random.Random(seed)
    check_empty(db)
    server = ServerProcess(db, workdir / "server.log", spares=spares)
    ledger = Ledger()
    inspector = Inspector(db)
    lost: list[str] = []
    violations: list[str] = []
    kills_during = dict.fromkeys(ACTIVITIES, 0)
    checked = 0
    interrupted_failed = 0
    queued_at_kill = 0
    starts_accepted = 0
    served_logged = 0
    delays: list[float] = []
    phases = dict.fromkeys(("start", "workload", "join", "inspect", "after_restart"), 0.0)
    sessions_waited: list[float] = []
    done = 0
    try:
        server.start()
        artifact = bootstrap(server.target, ledger, rng)
        with Client(server.target, timeout=RPC_TIMEOUT) as c:
            next_run = start_run(c, ledger, "first cycle")
        for cycle_index in range(1, kills + 1):
            t0 = time.monotonic()
            cycle = Cycle(cycle_index, server.target, ledger, artifact, rng.randrange(2**31), next_run)
            cycle.start()
            delay = rng.uniform(0.0, max_delay_ms / 1000.0)
            delays.append(delay)
            time.sleep(delay)
            in_flight = cycle.snapshot_in_flight()
            cycle.killing.set()
            server.kill()
            done += 1
            t1 = time.monotonic()
            cycle.stop_and_join()
            t2 = time.monotonic()
            violations += cycle.violations
            seen = inspector.inspect(ledger)
            sessions_waited.append(seen.sessions_waited_s)
            lost += seen.lost
            violations += seen.violations
            checked += seen.checked
            served_logged = seen.served_batches_logged
            queued_at_kill += len(set(seen.active_runs) - set(seen.running_runs))
            if seen.active_runs:
                in_flight.add("training")
            elif "training" in in_flight:
                in_flight.discard("training")  # its run had ended: the kill did not interrupt training
            for a in in_flight:
                kills_during[a] += 1
            t3 = time.monotonic()
            server.start()
            t4 = time.monotonic()
            after, failed, next_run = check_after_restart(server.target, seen, ledger, cycle_index)
            starts_accepted += bool(next_run)
            t5 = time.monotonic()
            for phase, seconds in zip(phases, (t4 - t3, t1 - t0, t2 - t1, t3 - t2, t5 - t4), strict=True):
                phases[phase] += seconds
            violations += after
            interrupted_failed += failed
            if lost or violations:
                say(f"cycle {cycle_index}: {len(lost)} lost, {len(violations)} violations so far")
        # After the last restart, the run it started trains to the end; then a clean stop.
        with Client(server.target, timeout=RPC_TIMEOUT) as c:
            final_run = c.wait_run(next_run, timeout=300) if next_run else None
            if final_run is None or final_run.state != training_pb2.TRAINING_RUN_STATE_SUCCEEDED:
                violations.append(f"the last run did not succeed: {final_run}")
        code = server.terminate()
        if code != 0:
            violations.append(f"the final SIGTERM stop exited {code}")
        final = inspector.inspect(ledger)
        if final.running_runs:
            violations.append(f"runs left running by a clean stop: {final.running_runs}")
        lost += final.lost
        violations += final.violations
        checked += final.checked
    finally:
        server.close()
        if own_dir is not None:
            own_dir.cleanup()
    acknowledged = ledger.counts()
    # Every inspection re-checks every acknowledgement: a write lost at one kill is reported again
    # after each later one. Count it once.
    lost, violations = list(dict.fromkeys(lost)), list(dict.fromkeys(violations))
    return {
        "seed": seed,
        "backend": backend,
        "kills": done,
        "max_delay_ms": max_delay_ms,
        "mean_delay_ms": round(1000 * sum(delays) / max(1, len(delays)), 1),
        "kills_during": kills_during,
        "acknowledged": acknowledged,
        "acknowledged_total": sum(acknowledged.values()),
        "acknowledged_checks": checked,
        "lost": len(lost),
        "lost_examples": lost[:20],
        "violations": violations[:50],
        "violation_count": len(violations),
        "interrupted_runs_failed": interrupted_failed,
        "queued_runs_at_kill": queued_at_kill,  # (not interrupted: run after the restart)
        "start_training_accepted_after_restart": starts_accepted,
        "served_batches_acknowledged": len(ledger.served_batches),
        "served_batches_logged": served_logged,
        "server_starts": len(server.start_seconds),
        "spares": spares,
        "mean_start_s": round(sum(server.start_seconds) / max(1, len(server.start_seconds)), 3),
        "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
        # PostgreSQL: kills after which the dead server still had sessions when the inspector came
        "kills_with_lingering_sessions": sum(1 for w in sessions_waited if w > 0),
        "max_lingering_session_ms": round(1000 * max(sessions_waited, default=0.0), 1),
        "runtime_s": round(time.monotonic() - t_start, 1),
        "ok": not lost and not violations and done == kills,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int, help="RNG seed (default: random, printed)")
    p.add_argument("--max-delay-ms", type=float, default=300.0, help="kill at a random delay in [0, this]")
    p.add_argument(
        "--spares",
        type=int,
        default=3,
        help="server processes importing ahead of their restart (0: every start is a cold"
        " `python -m sahayak_rpc.cli serve`)",
    )
    p.add_argument("--workdir", help="keep the database and server log here (default: a temporary directory)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--postgres",
        action="store_true",
        help="run on PostgreSQL: a throwaway cluster (tests/pg_cluster.py, fsync on), stopped at the end",
    )
    where.add_argument("--db", metavar="URL", help="run on this empty PostgreSQL database (postgresql://...)")
    args = p.parse_args(argv)
    if args.db and not is_postgres_url(args.db):
        p.error("--db takes a postgresql:// URL (SQLite: the default, crash.db in --workdir)")
    workdir = Path(args.workdir) if args.workdir else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        for name in ("crash.db", "crash.db-wal", "crash.db-shm"):
            (workdir / name).unlink(missing_ok=True)
        shutil.rmtree(workdir / "crash.db-segments", ignore_errors=True)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    cluster: PgCluster | None = None
    try:
        db = args.db
        if args.postgres:
            from tests.pg_cluster import shared_cluster

            cluster = shared_cluster()  # the one the tests use (fsync on; tmpfs where there is one)
            db = cluster.create_database()
            say(f"PostgreSQL {cluster.server_version} at {db} ({cluster.bin_dir})")
        summary = run(args.kills, args.seed, workdir, args.max_delay_ms, args.spares, log=say, db=db)
    finally:
        if cluster is not None:
            cluster.stop()
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
