"""Many processes, one database: replicas on PostgreSQL, and `serve --workers N` on one machine.

Every test here runs real `sahayak-rpc serve` processes against a real database (a throwaway
PostgreSQL cluster, tests/pg_cluster.py, or a SQLite file) and talks gRPC to them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sahayak_rpc.client import Client, OutcomeInput, SahayakError
from sahayak_rpc.demo_data import DEMO_MODEL_NAME, generate_outcomes
from sahayak_rpc.runtime.clock import FileClock
from sahayak_rpc._proto.sahayak.v1 import monitor_pb2, registry_pb2, training_pb2

from ..helpers import ReplicaProcess, eventually, load_demo_rows
from ..pg_cluster import PgCluster, shared_cluster

pytestmark = pytest.mark.slow
MODEL = DEMO_MODEL_NAME
# Fast heartbeats, so that a dead or silent worker is found in seconds; no training of its own accord
# (new models' default) but where a test is about the schedule.
FAST = {
    "SAHAYAK_SERVER_HEARTBEAT_INTERVAL": "0.25s",
    "SAHAYAK_TRAINING_HEARTBEAT_TIMEOUT": "2s",
    "SAHAYAK_SERVER_SHUTDOWN_GRACE": "2s",
    "SAHAYAK_TRAINING_SCHEDULE_ENABLED": "false",
}
T0 = 1_767_225_600.0  # 2026-01-01, the shared test clock's start
DAY = 86400.0


@pytest.fixture
def pg_url() -> str:
    return shared_cluster().create_database()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[ReplicaProcess]]:
    """The test's replica processes (it appends them); all stopped at the end."""
    started: list[ReplicaProcess] = []
    yield started
    for r in started:
        r.kill()


def replica(
    started: list[ReplicaProcess],
    db: str,
    tmp_path: Path,
    name: str,
    *args: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> ReplicaProcess:
    r = ReplicaProcess(db, tmp_path, name, *args, env={**FAST, **(env or {})})
    started.append(r)
    return r.start(wait=wait)


def leaders(r: ReplicaProcess) -> list[str]:
    return [s.name for s in r.status().replicas if s.leader]


def champion(c: Client) -> int:
    return int(c.get_model(MODEL).champion_version)


def serves(c: Client, row: dict, version: int) -> bool:
    """Whether the replica behind ``c`` answers Predict with ``version`` now."""
    try:
        return c.predict(MODEL, row).version == version
    except SahayakError:  # (no champion yet)
        return False


def test_two_replicas_serve_each_others_promotions_within_a_second(
    pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    a = replica(replicas, pg_url, tmp_path, "a")
    b = replica(replicas, pg_url, tmp_path, "b")
    row = generate_outcomes(1, seed=5)[0].features
    with a.client() as ca, b.client() as cb:
        load_demo_rows(ca, 1500)
        first = ca.train(MODEL, families=["logistic_regression"])
        assert first.promoted
        # B serves what A trained.
        eventually(lambda: serves(cb, row, first.produced_version), timeout=1)
        second = cb.train(MODEL, families=["gradient_boosting"])
        watch = ca.registry.WatchChampion(registry_pb2.WatchChampionRequest(model=MODEL), timeout=30)
        seen: list[int] = []

        def follow() -> None:
            try:
                for message in watch:
                    seen.append(message.version.version)
            except grpc.RpcError:
                pass

        follower = threading.Thread(target=follow)
        follower.start()
        versions = {first.produced_version, second.produced_version}
        for version in (first.produced_version, second.produced_version, first.produced_version):
            # A promotion acknowledged by one replica is served by the other within a second.
            cb.registry.SetAlias(
                registry_pb2.SetAliasRequest(model=MODEL, alias="champion", version=version, force=True)
            )
            acknowledged = time.monotonic()
            eventually(lambda v=version: serves(ca, row, v), timeout=1)
            assert time.monotonic() - acknowledged < 1.0
        # ... and WatchChampion on A saw B's moves (changes close together may arrive as the latest one).
        eventually(lambda: len(seen) >= 2 and seen[-1] == first.produced_version, timeout=1)
        watch.cancel()
        follower.join()
        assert set(seen) <= versions
        assert champion(ca) == champion(cb) == first.produced_version
        # The registry's history is one history, whichever replica wrote it.
        history = [
            e.version
            for e in ca.registry.ListAliasHistory(
                registry_pb2.ListAliasHistoryRequest(model=MODEL, alias="champion")
            ).events
        ]
        assert history == [
            e.version
            for e in cb.registry.ListAliasHistory(
                registry_pb2.ListAliasHistoryRequest(model=MODEL, alias="champion")
            ).events
        ]
    status = a.status()
    assert status.database == "postgresql"
    assert sorted(s.name.rsplit(":", 1)[1] for s in status.replicas) == sorted([str(a.port), str(b.port)])
    assert {s.pid for s in status.replicas} == {a.proc.pid, b.proc.pid}  # type: ignore[union-attr]
    assert len([s for s in status.replicas if s.leader]) == 1
    assert status.replica.name.endswith(f":{a.port}") and b.status().replica.name.endswith(f":{b.port}")


def test_alerts_raised_on_one_replica_reach_watchers_on_another_in_cursor_order(
    pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    clock_file = str(tmp_path / "clock")
    FileClock.write(clock_file, T0)
    a = replica(replicas, pg_url, tmp_path, "a", env={"SAHAYAK_TEST_CLOCK_FILE": clock_file})
    b = replica(replicas, pg_url, tmp_path, "b", env={"SAHAYAK_TEST_CLOCK_FILE": clock_file})
    with a.client() as ca, b.client() as cb:
        load_demo_rows(ca, 1500)  # 1,000 rows left the logistic model at the gate's 0.75 accuracy line
        assert ca.train(MODEL, families=["logistic_regression"]).promoted
        events: list[monitor_pb2.WatchAlertsResponse] = []
        stream = ca.monitor.WatchAlerts(monitor_pb2.WatchAlertsRequest(model=MODEL), timeout=60)

        def follow() -> None:
            try:
                for e in stream:
                    events.append(e)
            except grpc.RpcError:
                pass

        follower = threading.Thread(target=follow)
        follower.start()
        # Stale data, as B's health check sees it two days later: nothing arrived for a day and more.
        FileClock.write(clock_file, T0 + 2 * DAY)
        raised = cb.monitor.RunHealthCheck(monitor_pb2.RunHealthCheckRequest(model=MODEL))
        assert raised.results and raised.results[0].raised
        alert = raised.results[0].raised[0]
        eventually(lambda: any(e.alert.alert_id == alert.alert_id for e in events), timeout=2)
        ca.monitor.AcknowledgeAlert(monitor_pb2.AcknowledgeAlertRequest(alert_id=alert.alert_id, note="seen on A"))
        eventually(
            lambda: any(
                e.alert.alert_id == alert.alert_id and e.alert.state == monitor_pb2.ALERT_STATE_ACKNOWLEDGED
                for e in events
            ),
            timeout=2,
        )
        stream.cancel()
        follower.join()
        cursors = [e.cursor for e in events]
        assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
        # Resuming on the other replica from any cursor replays exactly what followed it.
        replay = cb.monitor.WatchAlerts(monitor_pb2.WatchAlertsRequest(model=MODEL, cursor=cursors[0]), timeout=5)
        got = []
        try:
            for e in replay:
                got.append(e.cursor)
                if len(got) == len(cursors) - 1:
                    break
        finally:
            replay.cancel()
        assert got == cursors[1:]


def test_two_replicas_importing_the_same_outcomes_at_once_store_each_once(
    pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    a = replica(replicas, pg_url, tmp_path, "a")
    b = replica(replicas, pg_url, tmp_path, "b")
    from sahayak_rpc.demo import ensure_demo_model

    examples = generate_outcomes(6000, seed=11)
    batch = [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id) for e in examples]
    with a.client() as ca:
        ensure_demo_model(ca)
    reports = []

    def push(r: ReplicaProcess) -> None:
        with r.client() as c:
            reports.append(c.import_outcomes(MODEL, batch, batch_size=500))

    threads = [threading.Thread(target=push, args=(r,)) for r in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.accepted for r in reports) == len(batch)
    assert sum(r.duplicates for r in reports) == 3 * len(batch)
    assert all(r.rejected == 0 for r in reports)
    for r in (a, b):
        [m] = r.status().models
        assert m.outcome_count == len(batch) and m.labels_since_training == len(batch)


def training_on_a_worker(
    replicas: list[ReplicaProcess], pg_url: str, tmp_path: Path
) -> tuple[ReplicaProcess, ReplicaProcess, training_pb2.TrainingRun]:
    """A leader that does not train, a worker that does, and a long run (trees on 3,000 rows) running on it."""
    leader = replica(replicas, pg_url, tmp_path, "leader", env={"SAHAYAK_TRAINING_WORKER": "false"})
    worker = replica(replicas, pg_url, tmp_path, "worker")
    with leader.client() as c:
        load_demo_rows(c, 3000)
        run = c.start_training(MODEL, families=["gradient_boosting"])
        eventually(lambda: c.get_run(run.run_id).state == training_pb2.TRAINING_RUN_STATE_RUNNING, timeout=30)
        assert [s.name for s in c.server_status().replicas if s.leader] == [leader.status().replica.name]
    return leader, worker, run


def test_a_worker_killed_mid_run_has_its_run_failed_and_another_trains(
    pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    leader, worker, run = training_on_a_worker(replicas, pg_url, tmp_path)
    with leader.client() as c:
        worker.kill()  # SIGKILL: its liveness lock goes with its connection
        killed = time.monotonic()
        ended = c.wait_run(run.run_id, timeout=30)
        assert ended.state == training_pb2.TRAINING_RUN_STATE_FAILED
        assert ended.end_reason.startswith("interrupted") and "stopped" in ended.end_reason
        assert time.monotonic() - killed < 5
        # The queue goes on with another worker; cancel and watch work from any replica.
        second = replica(replicas, pg_url, tmp_path, "second")
        again = c.start_training(MODEL, families=["gradient_boosting"])
        with second.client() as c2:
            eventually(lambda: c2.get_run(again.run_id).state == training_pb2.TRAINING_RUN_STATE_RUNNING, timeout=30)
            phases = []
            for event in c.watch_run(again.run_id, timeout=60):  # watched on the replica that does not train
                phases.append(event.phase)
                if event.phase == training_pb2.TRAINING_PHASE_FITTING and len(phases) > 2:
                    c.training.CancelTrainingRun(training_pb2.CancelTrainingRunRequest(run_id=again.run_id))
                if event.HasField("run"):
                    final = event.run
            assert final.state == training_pb2.TRAINING_RUN_STATE_CANCELLED, final.end_reason
            assert training_pb2.TRAINING_PHASE_LOADING in phases
            assert c2.get_run(again.run_id).state == training_pb2.TRAINING_RUN_STATE_CANCELLED


def test_a_worker_that_stops_heartbeating_has_its_run_failed_and_cannot_register_it(
    pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    leader, worker, run = training_on_a_worker(replicas, pg_url, tmp_path)
    with leader.client() as c:
        worker.signal(signal.SIGSTOP)  # alive (its locks held), but silent
        try:
            stopped = time.monotonic()
            ended = c.wait_run(run.run_id, timeout=30)
            waited = time.monotonic() - stopped
            assert ended.state == training_pb2.TRAINING_RUN_STATE_FAILED and "heartbeating" in ended.end_reason
            # the 2 s timeout, as the leader watched the counter (which last moved up to a heartbeat before the stop)
            assert 1.5 <= waited < 8.0
        finally:
            worker.signal(signal.SIGCONT)
        # The worker wakes up and finishes fitting: the run is not its to end any more, and the version it
        # made is rolled back with the run's end (one transaction).
        eventually(lambda: any(e.get("event") == "training.run_taken" for e in worker.log_events()), timeout=90)
        assert c.get_run(run.run_id).state == training_pb2.TRAINING_RUN_STATE_FAILED
        assert c.get_model(MODEL).champion_version == 0
        versions = c.registry.ListModelVersions(registry_pb2.ListModelVersionsRequest(model=MODEL)).versions
        assert list(versions) == []


def test_the_leader_killed_the_other_takes_over_and_the_schedule_neither_repeats_nor_skips(
    pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    clock_file = str(tmp_path / "clock")
    FileClock.write(clock_file, T0)
    env = {"SAHAYAK_TEST_CLOCK_FILE": clock_file, "SAHAYAK_TRAINING_SCHEDULE_ENABLED": "true"}
    first = replica(replicas, pg_url, tmp_path, "first", env=env)  # leads, and is the only trainer
    eventually(lambda: leaders(first) == [first.status().replica.name], timeout=10)
    second = replica(replicas, pg_url, tmp_path, "second", env={**env, "SAHAYAK_TRAINING_WORKER": "false"})
    with first.client() as c:
        from sahayak_rpc.demo import ensure_demo_model

        ensure_demo_model(c)
        settings = registry_pb2.ModelSettings()
        settings.training.incremental_every = 0  # the weekly retrain alone
        settings.training.families.append(registry_pb2.MODEL_FAMILY_GRADIENT_BOOSTING)  # (long enough to kill)
        c.update_model(
            registry_pb2.Model(name=MODEL, settings=settings),
            ["settings.training.incremental_every", "settings.training.families"],
        )
        examples = generate_outcomes(3000, seed=3)
        c.import_outcomes(MODEL, [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id) for e in examples])
        assert c.train(MODEL).promoted  # the last full training: T0

        def scheduled() -> list[training_pb2.TrainingRun]:
            runs = c.training.ListTrainingRuns(training_pb2.ListTrainingRunsRequest(model=MODEL)).runs
            return [r for r in runs if r.trigger == training_pb2.TRAINING_TRIGGER_SCHEDULE]

        # A week later, with new outcomes (a run on the champion's own data would end at once, registering
        # nothing), the leader starts the weekly retrain; it is killed while the run trains.
        more = generate_outcomes(300, seed=9)
        c.import_outcomes(MODEL, [OutcomeInput(e.features, e.label, outcome_id=f"new-{e.outcome_id}") for e in more])
        FileClock.write(clock_file, T0 + 7 * DAY + 60)
        [run] = eventually(scheduled, timeout=20)  # type: ignore[misc]
        eventually(lambda: c.get_run(run.run_id).state == training_pb2.TRAINING_RUN_STATE_RUNNING, timeout=20)
    first.kill()
    killed = time.monotonic()
    with second.client() as c2:
        eventually(lambda: leaders(second) == [second.status().replica.name], timeout=10)
        took_over = time.monotonic() - killed
        assert took_over < 10
        # (The test clock stands still, so the killed replica's last beat stays recent: it is its lost
        # liveness lock that drops it from the status.)
        assert [r.name for r in second.status().replicas] == [second.status().replica.name]

        def scheduled2() -> list[training_pb2.TrainingRun]:
            runs = c2.training.ListTrainingRuns(training_pb2.ListTrainingRunsRequest(model=MODEL)).runs
            return [r for r in runs if r.trigger == training_pb2.TRAINING_TRIGGER_SCHEDULE]

        # The interrupted scheduled run is failed, and queued again once (not lost); a new trainer runs it ...
        runs = eventually(lambda: len(scheduled2()) == 2 and scheduled2(), timeout=30)
        replica(replicas, pg_url, tmp_path, "trainer", env=env)
        again = c2.wait_run(runs[0].run_id, timeout=120)  # type: ignore[index]
        assert again.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED
        interrupted = c2.get_run(run.run_id)
        assert interrupted.state == training_pb2.TRAINING_RUN_STATE_FAILED and "interrupted" in interrupted.end_reason
        # ... and not repeated: nothing more is due until a week after it.
        FileClock.write(clock_file, T0 + 8 * DAY)
        time.sleep(2)
        assert len(scheduled2()) == 2
        FileClock.write(clock_file, T0 + 7 * DAY + 60 + 7 * DAY + 60)
        eventually(lambda: len(scheduled2()) == 3, timeout=20)
        time.sleep(1)
        assert len(scheduled2()) == 3


def test_a_cut_leader_connection_hands_the_lead_on(pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]) -> None:
    first = replica(replicas, pg_url, tmp_path, "first")
    eventually(lambda: leaders(first) == [first.status().replica.name], timeout=10)
    second = replica(replicas, pg_url, tmp_path, "second")
    cluster = shared_cluster()
    dbname = pg_url.rsplit("/", 1)[1]
    pid = first.proc.pid if first.proc else 0
    # The leader's lock session is cut (as a network failure, or an operator, would cut it) while the
    # leader is held still, so that the other replica, not the cut one, is first to try for the lead.
    [session] = [app for app in cluster_lock_sessions(cluster, dbname) if app.endswith(f"/{pid} locks")]
    first.signal(signal.SIGSTOP)
    try:
        assert cluster.terminate_connections(dbname, application_name=session) == 1
        eventually(lambda: leaders(second) == [second.status().replica.name], timeout=10)
    finally:
        first.signal(signal.SIGCONT)
    # The cut replica finds its session gone at its next heartbeat, opens another with its liveness lock
    # (it is not taken for dead), and follows.
    eventually(lambda: any(e.get("event") == "coordination.session_lost" for e in first.log_events()), timeout=5)
    eventually(
        lambda: len([a for a in cluster_lock_sessions(cluster, dbname) if a.endswith(f"/{pid} locks")]) == 1, timeout=5
    )
    time.sleep(1)
    assert leaders(first) == leaders(second) == [second.status().replica.name]
    assert sorted(s.name for s in second.status().replicas) == sorted(
        [first.status().replica.name, second.status().replica.name]
    )


def test_a_frozen_leader_loses_the_lead(pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]) -> None:
    """A leader alive but frozen (SIGSTOP: its TCP connection still answers keepalives) would hold its
    locks for as long as PostgreSQL keeps its session: the session ends after ten heartbeats of silence
    (idle_session_timeout; at least 10 s)."""
    first = replica(replicas, pg_url, tmp_path, "first")
    eventually(lambda: leaders(first) == [first.status().replica.name], timeout=10)
    second = replica(replicas, pg_url, tmp_path, "second")
    first.signal(signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        eventually(lambda: leaders(second) == [second.status().replica.name], timeout=30)
        assert 8 < time.monotonic() - frozen < 20
    finally:
        first.signal(signal.SIGCONT)
    eventually(lambda: any(e.get("event") == "replica.follower" for e in first.log_events()), timeout=10)


def cluster_lock_sessions(cluster: PgCluster, dbname: str) -> list[str]:
    """The application names of the database's lock sessions (one per replica)."""
    import psycopg

    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = %s AND application_name LIKE %s",
                (dbname, "% locks"),
            )
        ]


def test_a_rolling_restart_fails_no_request(pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]) -> None:
    a = replica(replicas, pg_url, tmp_path, "a")
    b = replica(replicas, pg_url, tmp_path, "b")
    with a.client() as ca:
        load_demo_rows(ca, 800)
        assert ca.train(MODEL, families=["logistic_regression"]).promoted
    rows = [e.features for e in generate_outcomes(50, seed=8)]
    stop = threading.Event()
    errors: list[BaseException] = []
    served = [0]

    def load() -> None:
        # One client over both replicas: round robin, UNAVAILABLE retried by the service config.
        with Client(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}", timeout=10) as c:
            while not stop.is_set():
                for row in rows:
                    try:
                        c.predict(MODEL, row)
                        served[0] += 1
                    except SahayakError as exc:
                        errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        for r in (a, b):
            before = served[0]
            assert r.terminate() == 0
            time.sleep(0.5)  # the other replica alone
            r.start()
            time.sleep(1)
            assert served[0] > before
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and served[0] > 200


def test_replicas_starting_together_migrate_once_and_a_newer_schema_is_refused(
    pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    import psycopg

    together = [replica(replicas, pg_url, tmp_path, f"r{i}", wait=False) for i in range(3)]
    for r in together:
        r.wait_serving()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*), max(version) FROM schema_version").fetchone() == (1, 1)
        conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    late = ReplicaProcess(pg_url, tmp_path, "late")
    replicas.append(late)
    late.start(wait=False)
    assert late.proc is not None and late.proc.wait(timeout=60) == 1
    assert "newer than this server knows" in late.log_path.read_text()


def test_version_numbers_stay_unique_when_replicas_register_at_once(
    pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    a = replica(replicas, pg_url, tmp_path, "a")
    b = replica(replicas, pg_url, tmp_path, "b")
    with a.client() as ca:
        load_demo_rows(ca, 600)
        assert ca.train(MODEL, families=["logistic_regression"]).promoted
        artifact = ca.export_version(MODEL, alias="champion")
    made: list[int] = []

    def register(r: ReplicaProcess) -> None:
        with r.client() as c:
            for _ in range(8):
                made.append(
                    c.registry.ImportModelVersion(
                        registry_pb2.ImportModelVersionRequest(model=MODEL, artifact=artifact)
                    ).version.version
                )

    threads = [threading.Thread(target=register, args=(r,)) for r in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == list(range(2, 34))


def test_workers_on_sqlite_share_one_port_and_one_leads(tmp_path: Path, replicas: list[ReplicaProcess]) -> None:
    server = replica(replicas, str(tmp_path / "w.db"), tmp_path, "workers", "--workers", "2")
    names: set[str] = set()
    deadline = time.monotonic() + 20
    while len(names) < 2 and time.monotonic() < deadline:
        with server.client() as c:  # a new connection each time: the kernel picks a worker
            status = c.server_status()
            names.add(status.replica.name)
    assert names == {f"{status.replica.host}:{server.port}/w0", f"{status.replica.host}:{server.port}/w1"}
    assert len(status.replicas) == 2 and len([r for r in status.replicas if r.leader]) == 1
    assert status.database == "sqlite"
    row = generate_outcomes(1, seed=4)[0].features
    with server.client() as c:
        load_demo_rows(c, 800)
        first = c.train(MODEL, families=["logistic_regression"])
        second = c.train(MODEL, families=["gradient_boosting"])
        c.registry.SetAlias(
            registry_pb2.SetAliasRequest(model=MODEL, alias="champion", version=first.produced_version, force=True)
        )
    # Every worker serves the promotion within a second.
    time.sleep(1.0)
    answered: dict[str, set[int]] = {}
    deadline = time.monotonic() + 20
    while len(answered) < 2 and time.monotonic() < deadline:
        with server.client() as c:  # (one connection: one worker answers both calls)
            answered.setdefault(c.server_status().replica.name, set()).add(c.predict(MODEL, row).version)
    assert len(answered) == 2 and all(v == {first.produced_version} for v in answered.values()), answered
    assert second.produced_version != first.produced_version
    assert server.terminate() == 0
    events = [e.get("event") for e in server.log_events()]
    assert events.count("server.stopped") == 2 and "workers.stopped" in events


def test_a_second_workers_server_cannot_share_the_port_and_workers_die_with_their_supervisor(
    tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    import os

    first = replica(replicas, str(tmp_path / "one.db"), tmp_path, "first", "--workers", "2")
    pids: set[int] = set()
    deadline = time.monotonic() + 20
    while len(pids) < 2 and time.monotonic() < deadline:
        pids.update(r.pid for r in first.status().replicas)
    assert len(pids) == 2
    # SO_REUSEPORT would let another server's workers share the port without a word: it is refused.
    second = ReplicaProcess(str(tmp_path / "two.db"), tmp_path, "second", "--workers", "2", port=first.port)
    replicas.append(second)
    second.start(wait=False)
    assert second.proc is not None and second.proc.wait(timeout=60) == 1
    assert "already serves" in second.log_path.read_text()
    # A supervisor killed outright takes its workers with it (no orphans serving on).
    first.kill()

    def gone() -> bool:
        for pid in pids:
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                pass
        return True

    eventually(gone, timeout=30)


def test_while_postgresql_is_down_predictions_are_served_and_writes_answer_unavailable(
    tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    with PgCluster(base_dir=None) as cluster:  # its own cluster: this test stops it
        url = cluster.create_database()
        server = replica(replicas, url, tmp_path, "alone")
        row = generate_outcomes(1, seed=9)[0].features
        with server.client(timeout=30) as c:
            load_demo_rows(c, 600)
            version = c.train(MODEL, families=["logistic_regression"]).produced_version
            cluster.stop()  # (the cluster's data goes with it: nothing below reads it again)
            for _ in range(20):  # the champion is in the replica's memory: no database on the way
                assert c.predict(MODEL, row).version == version
            asked = time.monotonic()
            with pytest.raises(SahayakError) as info:  # (after the client's own retries)
                c.record_outcome(MODEL, row, True, outcome_id="while-down")
            assert info.value.code is grpc.StatusCode.UNAVAILABLE and time.monotonic() - asked < 15
            assert info.value.reason in ("DATABASE_UNAVAILABLE", "DATABASE_BUSY")
            assert c.health() == "SERVING"


def test_a_replica_whose_database_connections_are_all_cut_carries_on(
    pg_url: str, tmp_path: Path, replicas: list[ReplicaProcess]
) -> None:
    a = replica(replicas, pg_url, tmp_path, "a")
    b = replica(replicas, pg_url, tmp_path, "b")
    row = generate_outcomes(1, seed=10)[0].features
    with a.client() as ca, b.client() as cb:
        load_demo_rows(ca, 600)
        first = ca.train(MODEL, families=["logistic_regression"]).produced_version
        cut = shared_cluster().terminate_connections(pg_url.rsplit("/", 1)[1])  # every session, both replicas
        assert cut >= 4  # pools, lock sessions, listeners
        # Writes go through again (a call that met a dead connection answered UNAVAILABLE and was retried).
        ca.record_outcome(MODEL, row, True, outcome_id="after-the-cut")
        second = cb.train(MODEL, families=["gradient_boosting"])
        cb.registry.SetAlias(registry_pb2.SetAliasRequest(model=MODEL, alias="champion", version=first, force=True))
        cb.registry.SetAlias(
            registry_pb2.SetAliasRequest(model=MODEL, alias="champion", version=second.produced_version, force=True)
        )
        # A's listener reconnected (and resynchronised): it serves B's promotion.
        eventually(lambda: serves(ca, row, second.produced_version), timeout=3)
        eventually(lambda: len([s for s in a.status().replicas if s.leader]) == 1, timeout=10)
