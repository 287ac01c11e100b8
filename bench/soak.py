"""Soak: a mixed workload against a real server process, for a bounded time.

    python bench/soak.py --seconds 60          # JSON on stdout; exit 1 on any unexpected error
    python bench/soak.py --seconds 10          # CI-sized

One `sahayak-rpc serve` subprocess (scheduler on, as deployed) on a temporary
database, loopback only. Setup, not timed: 100,000 outcomes of a model that is
never trained (the server's history: they fill the SQLite writer's 64 MiB page
cache, as on a server that has been up a while; ``--history 0`` starts from an
empty database instead), the soak model with 10,000 outcomes and a champion,
and 50 WatchAlerts streams. Then, for ``--seconds``, each from its own thread
at a fixed rate:

    Predict           3 threads x 100/s, single rows
    PredictBatch      10/s, 100 rows each
    RecordOutcome     10/s
    ImportOutcomes    one 100-row stream every 2 s
    RecordFeedback    10/s; every 4th carries an outcome (it becomes training data)
    GetServerStatus   1/s
    trainer           every 10 s an alert round, every 20 s a full run (both
                      families), incremental runs in between, 1 s apart
    WatchAlerts       50 streams, open for the whole run

An alert round creates a small model whose gate no candidate can pass, trains
it, and so raises a `candidate_rejected` alert; all 50 watchers must receive
it, and its acknowledgement (AcknowledgeAlert) too.

Recorded: per-RPC counts, p50 / p99 latency and errors. No error is expected
(every request is valid and the load stays under every limit), so every RPC
error is unexpected, and so is a watcher that misses an event, a training run
that does not succeed, an outcome the server acknowledged but does not hold,
the server's health not SERVING after the run, or a graceful stop that does
not exit 0. The server's RSS and thread count (/proc/<pid>/status) are sampled
every 0.5 s, and every training run's start and end are logged beside them.

``soak_rss_growth`` = (RSS at the end - B) / B, where B is the first full
retrain's high-water mark: the most RSS from the start of the timed run to 1 s
after the soak model's first full training run ended (it runs about 1 s in);
"at the end" is the median of the last 10% of the run, because RSS swings by
tens of MiB as training runs come and go. ``soak_rss_peak_growth`` is the
highest RSS after B, against B: later retrains, on more data, reaching higher.
A run too short for a full retrain to end before its last 10% falls back to
the median of [20%, 30%] of the run as B (``rss_baseline`` says which).
What grows, and why the baseline is a retrain's high-water mark: see
docs/reliability.md, "Load and soak".
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from bench.run import free_port  # noqa: E402

from sahayak_rpc._proto.sahayak.v1 import (  # noqa: E402
    feedback_pb2,
    inference_pb2,
    monitor_pb2,
    monitor_pb2_grpc,
    registry_pb2,
    training_pb2,
)
from sahayak_rpc.client import (  # noqa: E402
    Client,
    OutcomeInput,
    SahayakError,
    feature_columns,
    fill_features,
)
from sahayak_rpc.demo_data import DEMO_SCHEMA, generate_outcomes  # noqa: E402

MODEL = "soak"
WATCHERS = 50
WARMUP_SHARE = 0.2
# The first full retrain's high-water mark is taken up to this long after it ends.
RETRAIN_SETTLE_S = 1.0
RSS_INTERVAL_S = 0.5
# Calls per second of each paced worker (per thread).
RATES = {
    "Predict": 100.0,
    "PredictBatch": 10.0,
    "RecordOutcome": 10.0,
    "ImportOutcomes": 0.5,
    "RecordFeedback": 10.0,
    "GetServerStatus": 1.0,
}
PREDICT_THREADS = 3
BATCH_ROWS = 100
IMPORT_ROWS = 100
SETUP_OUTCOMES = 10_000
# Outcomes of a second model that is never trained: the server's history. They
# fill the writer connection's page cache (64 MiB) before the timed run, as on
# a server that has been up for a while, so its filling is not read as growth.
HISTORY_OUTCOMES = 100_000
FULL_RUN_EVERY_S = 20.0
ALERT_ROUND_EVERY_S = 10.0
RUN_STATE = training_pb2.TrainingRunState
# The server command, before its options.
SERVE = [sys.executable, "-m", "sahayak_rpc.cli", "serve"]


class Server:
    """`sahayak-rpc serve` in a subprocess; its log goes to a file beside the database."""

    def __init__(self, db: Path) -> None:
        self.port = free_port()
        self.log_path = db.with_suffix(".log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        cmd = [*SERVE, "--host", "127.0.0.1", "--port", str(self.port), "--db", str(db), "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log)
        channel = grpc.insecure_channel(self.target)
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"server did not start: {self.log_tail()}")
                time.sleep(0.1)
        finally:
            channel.close()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sample(self) -> tuple[int, int]:
        """(VmRSS in bytes, threads) from /proc/<pid>/status."""
        rss = threads = -1
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        return rss, threads

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM (graceful stop); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Recorder:
    """Latencies and errors per RPC, appended from many threads (list.append is atomic)."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def _list(self, table: dict[str, list[Any]], rpc: str) -> list[Any]:
        found = table.get(rpc)
        if found is None:
            with self._lock:
                found = table.setdefault(rpc, [])
        return found

    def call(self, rpc: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            result = fn()
        except (grpc.RpcError, SahayakError) as exc:
            self.error(rpc, _describe(exc))
            return None
        self._list(self.latencies, rpc).append(time.perf_counter() - start)
        return result

    def error(self, rpc: str, text: str) -> None:
        self._list(self.errors, rpc).append(text)

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        out: dict[str, dict[str, float | int | None]] = {}
        for rpc in sorted(set(self.latencies) | set(self.errors)):
            lat = sorted(self.latencies.get(rpc, []))
            out[rpc] = {
                "ok": len(lat),
                "errors": len(self.errors.get(rpc, [])),
                "p50_ms": round(_quantile(lat, 0.50) * 1000, 3) if lat else None,
                "p99_ms": round(_quantile(lat, 0.99) * 1000, 3) if lat else None,
            }
        return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SahayakError):
        return f"{exc.code.name}: {exc.message}"
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{getattr(code, 'name', code)}: {details}"


def _quantile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=1000, method="inclusive")[min(998, max(0, round(q * 1000) - 1))]


def paced(stop: threading.Event, rate: float, body: Callable[[], None]) -> None:
    """Call ``body`` ``rate`` times a second until ``stop``; a late call does not cause a burst."""
    interval = 1.0 / rate
    due = time.monotonic()
    while not stop.is_set():
        body()
        due += interval
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            due = time.monotonic()


def _settings(min_accuracy: float | None = None) -> registry_pb2.ModelSettings:
    """Training only when asked (the soak decides), no retrain on a breach; optionally an impossible gate."""
    s = registry_pb2.ModelSettings()
    s.training.schedule_enabled = False
    s.monitoring.retrain_on_breach = False
    if min_accuracy is not None:
        s.gate.min_accuracy = min_accuracy
    return s


def _inputs(examples: list[Any], prefix: str) -> list[OutcomeInput]:
    return [
        OutcomeInput(e.features, e.label, outcome_id=f"{prefix}{e.outcome_id}", occurred_at=e.occurred_at)
        for e in examples
    ]


class Watchers:
    """WatchAlerts streams from the first event on (cursor 0), so none can miss an event while connecting."""

    def __init__(self, target: str, count: int, timeout: float, rec: Recorder) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = monitor_pb2_grpc.MonitorServiceStub(self.channel)
        self.rec = rec
        # Per watcher: event type -> alert ids seen.
        self.seen: list[dict[str, set[str]]] = [{} for _ in range(count)]
        self.counts = [0] * count
        self.delivery_s: list[float] = []
        self._calls = [
            self.stub.WatchAlerts(monitor_pb2.WatchAlertsRequest(cursor="0"), timeout=timeout) for _ in range(count)
        ]
        self._closing = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(i,), daemon=True, name=f"watch-{i}") for i in range(count)
        ]
        for t in self._threads:
            t.start()

    def _watch(self, i: int) -> None:
        try:
            for event in self._calls[i]:
                self.counts[i] += 1
                kind = monitor_pb2.AlertEventType.Name(event.event_type)
                self.seen[i].setdefault(kind, set()).add(event.alert.alert_id)
                if event.event_type == monitor_pb2.ALERT_EVENT_TYPE_RAISED and event.alert.model.startswith(
                    "soak-alerts-"
                ):
                    self.delivery_s.append(time.time() - event.alert.raise_time.ToMicroseconds() / 1e6)
        except grpc.RpcError as exc:
            if not self._closing.is_set():
                self.rec.error("WatchAlerts", _describe(exc))
            return
        if not self._closing.is_set():
            self.rec.error("WatchAlerts", "the stream ended before the client closed it")

    def have_all(self, kind: str, alert_id: str) -> bool:
        return all(alert_id in s.get(kind, ()) for s in self.seen)

    def missing(self, kind: str, alert_id: str) -> int:
        return sum(alert_id not in s.get(kind, ()) for s in self.seen)

    def close(self) -> None:
        self._closing.set()
        for call in self._calls:
            call.cancel()
        for t in self._threads:
            t.join(timeout=10)
        self.channel.close()


class Soak:
    def __init__(self, client: Client, target: str, seconds: float, history: int = HISTORY_OUTCOMES) -> None:
        self.client = client
        self.target = target
        self.seconds = seconds
        self.history = history
        self.rec = Recorder()
        self.stop = threading.Event()
        self.counters: dict[str, int] = {
            "outcomes_sent": 0,
            "outcomes_accepted": 0,
            "feedback_outcomes": 0,
            "training_runs": 0,
            "alert_rounds": 0,
            "watch_events_missed": 0,
            "max_prediction_log_depth": 0,
        }
        self._counters_lock = threading.Lock()
        # Unexpected events other than RPC errors (the recorder keeps those).
        self.problems: list[str] = []
        self.alert_ids: list[str] = []
        # Every training run of the timed run: (start s, end s, model, kind), from the run's start.
        self.t0 = time.monotonic()
        self.train_log: list[tuple[float, float, str, str]] = []
        self._ids = itertools.count()
        pool = generate_outcomes(2000, seed=101)
        self.rows: list[Mapping[str, Any]] = [e.features for e in pool]
        self.examples = pool

    # --- setup ------------------------------------------------------------------

    def setup(self) -> None:
        c = self.client
        if self.history:
            c.create_model("soak-history", DEMO_SCHEMA.features, DEMO_SCHEMA.label, settings=_settings())
            pool = self.examples
            history = (
                OutcomeInput(pool[i % len(pool)].features, pool[i % len(pool)].label, outcome_id=f"h{i}")
                for i in range(self.history)
            )
            assert c.import_outcomes("soak-history", history, batch_size=5000).accepted == self.history
        c.create_model(MODEL, DEMO_SCHEMA.features, DEMO_SCHEMA.label, settings=_settings())
        report = c.import_outcomes(MODEL, _inputs(generate_outcomes(SETUP_OUTCOMES, seed=100), "setup-"))
        assert report.accepted == SETUP_OUTCOMES, report
        run = c.train(MODEL, families=["logistic_regression"])
        if not run.promoted:
            c.set_alias(MODEL, "champion", run.produced_version, force=True)
        self.predict_requests = []
        for row in self.rows[:200]:
            request = inference_pb2.PredictRequest(model=MODEL)
            fill_features(request.features, row)
            self.predict_requests.append(request)
        self.batch_requests = []
        for start in range(0, 1000, BATCH_ROWS):
            batch = inference_pb2.PredictBatchRequest(model=MODEL)
            feature_columns(self.rows[start : start + BATCH_ROWS], batch.columns)
            self.batch_requests.append(batch)

    def count(self, key: str, n: int = 1) -> None:
        with self._counters_lock:
            self.counters[key] += n

    # --- workers ----------------------------------------------------------------

    def predict(self, offset: int) -> Callable[[], None]:
        stub, requests, n = self.client.inference, self.predict_requests, itertools.count(offset * 67)

        def body() -> None:
            self.rec.call("Predict", lambda: stub.Predict(requests[next(n) % len(requests)], timeout=30))

        return body

    def predict_batch(self) -> None:
        i = next(self._ids)
        resp = self.rec.call(
            "PredictBatch",
            lambda: self.client.inference.PredictBatch(self.batch_requests[i % len(self.batch_requests)], timeout=30),
        )
        if resp is not None and len(resp.probabilities) != BATCH_ROWS:
            self.problems.append(f"PredictBatch answered {len(resp.probabilities)} of {BATCH_ROWS} rows")

    def record_outcome(self) -> None:
        i = next(self._ids)
        e = self.examples[i % len(self.examples)]
        resp = self.rec.call(
            "RecordOutcome", lambda: self.client.record_outcome(MODEL, e.features, e.label, outcome_id=f"ro-{i}")
        )
        self.count("outcomes_sent")
        if resp is not None and not resp.duplicate:
            self.count("outcomes_accepted")

    def import_outcomes(self) -> None:
        i = next(self._ids)
        start = (i * IMPORT_ROWS) % (len(self.examples) - IMPORT_ROWS)
        batch = _inputs(self.examples[start : start + IMPORT_ROWS], f"imp-{i}-")
        resp = self.rec.call("ImportOutcomes", lambda: self.client.import_outcomes(MODEL, batch, timeout=60))
        self.count("outcomes_sent", IMPORT_ROWS)
        if resp is not None:
            self.count("outcomes_accepted", resp.accepted)
            if resp.accepted != IMPORT_ROWS:
                self.problems.append(f"ImportOutcomes accepted {resp.accepted} of {IMPORT_ROWS}: {resp.errors[:3]}")

    def record_feedback(self) -> None:
        i = next(self._ids)
        e = self.examples[i % len(self.examples)]
        with_outcome = i % 4 == 0
        f = feedback_pb2.Feedback(
            feedback_id=f"fb-{i}",
            model=MODEL,
            artisan_id=f"A{i % 500}",
            scheme_id=f"scheme-{i % 20}",
            interaction=feedback_pb2.INTERACTION_APPLIED if with_outcome else feedback_pb2.INTERACTION_VIEWED,
            outcome=(feedback_pb2.FEEDBACK_OUTCOME_APPROVED if e.label else feedback_pb2.FEEDBACK_OUTCOME_REJECTED)
            if with_outcome
            else feedback_pb2.FEEDBACK_OUTCOME_UNSPECIFIED,
        )
        if with_outcome:
            fill_features(f.features, e.features)
        resp = self.rec.call(
            "RecordFeedback",
            lambda: self.client.feedback.RecordFeedback(feedback_pb2.RecordFeedbackRequest(feedback=f), timeout=30),
        )
        if resp is not None and with_outcome:
            self.count("feedback_outcomes")

    def server_status(self) -> None:
        resp = self.rec.call("GetServerStatus", lambda: self.client.server_status())
        if resp is not None:
            self.counters["max_prediction_log_depth"] = max(
                self.counters["max_prediction_log_depth"], resp.queues.prediction_log
            )

    def _train(self, model: str, **kwargs: Any) -> training_pb2.TrainingRun | None:
        start = time.monotonic() - self.t0
        run = self.rec.call("StartTraining", lambda: self.client.start_training(model, **kwargs))
        if run is None:
            return None
        ended = self.rec.call("WatchTrainingRun", lambda: self.client.wait_run(run.run_id, timeout=600))
        if ended is None:
            return None
        kind = "incremental" if kwargs.get("incremental") else "full"
        self.train_log.append((start, time.monotonic() - self.t0, model, kind))
        if ended.state != RUN_STATE.Value("TRAINING_RUN_STATE_SUCCEEDED"):
            self.problems.append(f"training run {run.run_id} ended {RUN_STATE.Name(ended.state)}: {ended.end_reason}")
            return None
        self.count("training_runs")
        return ended

    def alert_round(self, watchers: Watchers) -> None:
        """A model whose gate rejects every candidate: its training raises an alert all watchers must see."""
        n = self.counters["alert_rounds"]
        name = f"soak-alerts-{n}"
        c = self.client
        if (
            self.rec.call(
                "CreateModel",
                lambda: c.create_model(
                    name, DEMO_SCHEMA.features, DEMO_SCHEMA.label, settings=_settings(min_accuracy=0.999)
                ),
            )
            is None
        ):
            return
        if (
            self.rec.call(
                "ImportOutcomes",
                lambda: c.import_outcomes(name, _inputs(generate_outcomes(300, seed=200 + n), f"alerts-{n}-")),
            )
            is None
        ):
            return
        if self._train(name, families=["logistic_regression"]) is None:
            return
        alerts = self.rec.call(
            "ListAlerts", lambda: c.monitor.ListAlerts(monitor_pb2.ListAlertsRequest(model=name), timeout=30)
        )
        if alerts is None:
            return
        raised = [a for a in alerts.alerts if a.rule == monitor_pb2.ALERT_RULE_CANDIDATE_REJECTED]
        if len(raised) != 1:
            self.problems.append(f"{name}: expected one candidate_rejected alert, got {len(raised)}")
            return
        alert_id = raised[0].alert_id
        self.alert_ids.append(alert_id)
        self._await_watchers(watchers, "ALERT_EVENT_TYPE_RAISED", alert_id)
        if (
            self.rec.call(
                "AcknowledgeAlert",
                lambda: c.monitor.AcknowledgeAlert(
                    monitor_pb2.AcknowledgeAlertRequest(alert_id=alert_id, note="soak"), timeout=30
                ),
            )
            is None
        ):
            return
        self._await_watchers(watchers, "ALERT_EVENT_TYPE_ACKNOWLEDGED", alert_id)
        self.count("alert_rounds")

    def _await_watchers(self, watchers: Watchers, kind: str, alert_id: str) -> None:
        deadline = time.monotonic() + 30
        while not watchers.have_all(kind, alert_id) and time.monotonic() < deadline:
            time.sleep(0.01)
        missed = watchers.missing(kind, alert_id)
        if missed:
            self.count("watch_events_missed", missed)
            self.problems.append(f"{missed} of {WATCHERS} watchers did not receive {kind} of {alert_id} in 30 s")

    def trainer(self, watchers: Watchers) -> None:
        """An alert round every 10 s and a full run (both families) every 20 s, each first thing;
        incremental updates (as the scheduler makes them when labels arrive) in between."""
        next_alerts = next_full = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_alerts:
                next_alerts = now + ALERT_ROUND_EVERY_S
                self.alert_round(watchers)
            elif now >= next_full:
                next_full = now + FULL_RUN_EVERY_S
                self._train(MODEL)
            else:
                self._train(MODEL, incremental=True)
            self.stop.wait(1.0)

    # --- the run ------------------------------------------------------------------

    def run(self, server: Server) -> dict[str, Any]:
        watchers = Watchers(self.target, WATCHERS, timeout=self.seconds + 600, rec=self.rec)
        rss: list[tuple[float, int, int]] = []
        workers = [
            threading.Thread(target=paced, args=(self.stop, RATES["Predict"], self.predict(i)), daemon=True)
            for i in range(PREDICT_THREADS)
        ]
        for rpc, body in (
            ("PredictBatch", self.predict_batch),
            ("RecordOutcome", self.record_outcome),
            ("ImportOutcomes", self.import_outcomes),
            ("RecordFeedback", self.record_feedback),
            ("GetServerStatus", self.server_status),
        ):
            workers.append(threading.Thread(target=paced, args=(self.stop, RATES[rpc], body), daemon=True))
        trainer = threading.Thread(target=self.trainer, args=(watchers,), daemon=True)
        t0 = self.t0 = time.monotonic()
        for t in [*workers, trainer]:
            t.start()
        while (now := time.monotonic()) - t0 < self.seconds:
            if server.proc.poll() is not None:
                self.problems.append(f"the server exited with {server.proc.returncode}: {server.log_tail()}")
                break
            rss.append((now - t0, *server.sample()))
            time.sleep(min(RSS_INTERVAL_S, max(0.0, self.seconds - (now - t0))))
        if server.proc.poll() is None:
            rss.append((time.monotonic() - t0, *server.sample()))
        self.stop.set()
        for t in workers:
            t.join(timeout=60)
        trainer.join(timeout=600)
        elapsed = time.monotonic() - t0
        stragglers = [t.name for t in [*workers, trainer] if t.is_alive()]
        if stragglers:
            self.problems.append(f"workers still running after the stop: {stragglers}")
        watchers.close()
        return self._report(server, rss, watchers, elapsed)

    def _report(
        self, server: Server, rss: list[tuple[float, int, int]], watchers: Watchers, elapsed: float
    ) -> dict[str, Any]:
        rpcs = self.rec.summary()
        errors = sum(len(v) for v in self.rec.errors.values())
        # Every acknowledged outcome is stored: the server's count must match ours exactly.
        [status] = [m for m in self.client.server_status().models if m.model == MODEL]
        expected = SETUP_OUTCOMES + self.counters["outcomes_accepted"] + self.counters["feedback_outcomes"]
        if status.outcome_count != expected:
            self.problems.append(f"server holds {status.outcome_count} outcomes of {MODEL}, the soak stored {expected}")
        # The baseline is the high-water mark of the first full retrain of the soak model: the most RSS
        # from the start of the run to 1 s after that retrain ended (a retrain's working set is the
        # largest thing the server holds). The end is the median of the last 10% of the run (RSS
        # swings by tens of MiB as training runs come and go). Without a full retrain (a run of a few
        # seconds) the baseline falls back to the median of [20%, 30%] of the run.
        warm = WARMUP_SHARE * self.seconds

        def window(lo: float, hi: float) -> tuple[int, int]:
            picked = [(b, n) for t, b, n in rss if lo <= t <= hi] or [rss[-1][1:]]
            return int(statistics.median(b for b, _ in picked)), max(n for _, n in picked)

        first_full = next(
            ((start, end) for start, end, model, kind in self.train_log if model == MODEL and kind == "full"), None
        )
        baseline_end = first_full[1] + RETRAIN_SETTLE_S if first_full else None
        if baseline_end is not None and baseline_end < 0.9 * self.seconds:
            rss_base = max(b for t, b, _ in rss if t <= baseline_end)
            threads_base = max(n for t, _, n in rss if t <= baseline_end)
            after = [b for t, b, _ in rss if t > baseline_end]
        else:
            baseline_end = None
            rss_base, threads_base = window(warm, warm + 0.1 * self.seconds)
            after = [b for t, b, _ in rss if t > warm + 0.1 * self.seconds]
        rss_end, threads_end = window(0.9 * self.seconds, self.seconds + 1)
        mib = 1 << 20
        delivery = sorted(watchers.delivery_s)
        report: dict[str, Any] = {
            "seconds": self.seconds,
            "elapsed_s": round(elapsed, 1),
            "rpc": rpcs,
            "calls": sum(v["ok"] for v in rpcs.values()),
            "rpc_errors": errors,
            # No error is expected: every request is valid and the load stays under every limit.
            "unexpected_errors": errors + len(self.problems),
            "unexpected": [f"{rpc}: {e}" for rpc, v in self.rec.errors.items() for e in v[:5]] + self.problems[:20],
            **self.counters,
            "outcomes_stored": status.outcome_count,
            "watchers": WATCHERS,
            "watch_events": sum(watchers.counts),
            # Watchers that received the RAISED and ACKNOWLEDGED event of every alert round.
            "watchers_with_every_alert": sum(
                set(self.alert_ids) <= seen.get("ALERT_EVENT_TYPE_RAISED", set())
                and set(self.alert_ids) <= seen.get("ALERT_EVENT_TYPE_ACKNOWLEDGED", set())
                for seen in watchers.seen
            ),
            "watch_delivery_p50_ms": round(_quantile(delivery, 0.5) * 1000, 1) if delivery else None,
            "watch_delivery_p99_ms": round(_quantile(delivery, 0.99) * 1000, 1) if delivery else None,
            # The first full retrain's high-water mark (or, without one, the [20%, 30%] median).
            "rss_baseline": "first_retrain_hwm" if baseline_end is not None else "warmup_median",
            "rss_baseline_until_s": round(baseline_end if baseline_end is not None else warm + 0.1 * self.seconds, 1),
            "rss_end_window_s": [round(0.9 * self.seconds, 1), round(self.seconds, 1)],
            "rss_start_mib": round(rss[0][1] / mib, 1) if rss else None,
            "rss_baseline_mib": round(rss_base / mib, 1),
            "rss_end_mib": round(rss_end / mib, 1),
            "rss_peak_mib": round(max(b for _, b, _ in rss) / mib, 1) if rss else None,
            "soak_rss_growth": round((rss_end - rss_base) / rss_base, 4) if rss_base else None,
            # The highest RSS after the baseline, against it: later retrains (on more data) reaching higher.
            "rss_peak_after_baseline_mib": round(max(after) / mib, 1) if after else None,
            "soak_rss_peak_growth": round((max(after) - rss_base) / rss_base, 4) if after and rss_base else None,
            "threads_baseline": threads_base,
            "threads_end": threads_end,
            # [seconds, RSS MiB, threads], about 40 samples.
            "rss_series_mib": [[round(t, 1), round(b / mib, 1), n] for t, b, n in rss[:: max(1, len(rss) // 40)]],
            # Every training run: [start s, end s, model, kind], from the start of the timed run.
            "training_log": [[round(a, 1), round(b, 1), m, k] for a, b, m, k in self.train_log],
        }
        return report


def run_soak(seconds: float = 60.0, history: int = HISTORY_OUTCOMES) -> dict[str, Any]:
    """Start a server, soak it for ``seconds``, stop it; returns the figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        db = Path(tmp) / "soak.db"
        server = Server(db)
        try:
            with Client(server.target, timeout=60) as client:
                soak = Soak(client, server.target, seconds, history)
                setup_start = time.monotonic()
                soak.setup()
                setup_s = time.monotonic() - setup_start
                report = soak.run(server)
                health = client.health()
        finally:
            code = server.stop()
        report["setup_s"] = round(setup_s, 1)
        report["history_outcomes"] = history
        report["health_after"] = health
        report["exit_code"] = code
        report["db_mib"] = round(sum(f.stat().st_size for f in Path(tmp).glob("soak.db*")) / (1 << 20), 1)
        if health != "SERVING":
            report["unexpected"].append(f"health after the soak: {health}")
            report["unexpected_errors"] += 1
        if code != 0:
            report["unexpected"].append(f"graceful stop exited {code}: {server.log_tail()}")
            report["unexpected_errors"] += 1
        report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the timed run (default 60)")
    parser.add_argument(
        "--history",
        type=int,
        default=HISTORY_OUTCOMES,
        help=f"outcomes of an untrained model loaded first (default {HISTORY_OUTCOMES:,}; 0: a fresh database)",
    )
    opts = parser.parse_args()
    report = run_soak(opts.seconds, opts.history)
    print(json.dumps(report, indent=2))
    return 0 if report["unexpected_errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
