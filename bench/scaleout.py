"""Scale-out figures: PostgreSQL with fsync on, replicas on one database, and ``serve --workers N``.

    python bench/scaleout.py [--quick]               # the figures bench/run.py reports, as JSON
    python bench/scaleout.py retention [--rows N]    # prediction-log retention on PostgreSQL:
                                                     # DROP of a day partition against DELETE
    (internal) python bench/scaleout.py client ...   # one closed-loop Predict client process

Every PostgreSQL here is a throwaway cluster (tests/pg_cluster.py) with fsync on, in the
system temp directory on disk (never /dev/shm, where fsync is a no-op): these are
durability-relevant figures. Servers are real ``sahayak-rpc serve`` processes on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from sahayak_rpc.client import Client, OutcomeInput, fill_features  # noqa: E402
from sahayak_rpc.demo_data import DEMO_MODEL_NAME, generate_outcomes  # noqa: E402
from tests.processes import ReplicaProcess  # noqa: E402

MODEL = "bench-linear"
# Fast heartbeats (takeover within a beat) and a short health-check interval, as for failover.
FAST = {
    "SAHAYAK_SERVER_HEARTBEAT_INTERVAL": "0.25s",
    "SAHAYAK_TRAINING_HEARTBEAT_TIMEOUT": "2s",
    "SAHAYAK_SERVER_SHUTDOWN_GRACE": "2s",
    "SAHAYAK_TRAINING_SCHEDULE_ENABLED": "false",
    "SAHAYAK_MONITORING_HEALTH_CHECK_INTERVAL": "1s",
}
HEALTH_CHECK_INTERVAL_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
# gRPC Python shares one connection among channels to the same target unless each channel keeps its
# own subchannel pool: without this, "several channels" are one connection, and one worker gets it all.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


# --- processes ---------------------------------------------------------------------------------


def machine_busy_us() -> float:
    """CPU time every process on the machine has used (all cores; /proc/stat, idle and iowait left out)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) * 1e6 / CLK_TCK


def cpu_us(pids: list[int]) -> float:
    """utime + stime of ``pids`` in microseconds (a process's /proc/<pid>/stat counts all its threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total * 1e6 / CLK_TCK


class Serve(ReplicaProcess):
    """A ``sahayak-rpc serve`` process (tests/processes.py), started at once, with its CPU time."""

    def __init__(
        self,
        db: str,
        workdir: Path,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        log_level: str = "warning",
    ) -> None:
        super().__init__(db, workdir, name, "--log-level", log_level, *args, env=env)
        self.start(wait=False)
        self.wait_serving(timeout=90)

    def pids(self) -> list[int]:
        """This process and its children (``--workers``: the supervisor and the workers)."""
        assert self.proc is not None
        pids = [self.proc.pid]
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(entry.path, "stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == self.proc.pid:
                    pids.append(int(entry.name))
        return pids

    def cpu_us(self) -> float:
        """utime + stime of this process and its children (every thread of each), in microseconds."""
        return cpu_us(self.pids())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def servers() -> Iterator[list[Serve]]:
    """The servers a block starts (it appends them); every one stopped at the end, whatever happens."""
    started: list[Serve] = []
    try:
        yield started
    finally:
        for s in started:
            s.kill()


@contextmanager
def pg_cluster() -> Iterator[Any]:
    from tests.pg_cluster import PgCluster

    with PgCluster(fsync=True) as pg:
        yield pg


def linear_model(client: Client, rows: int = 5000) -> tuple[int, int]:
    """``bench-linear`` with two trained logistic versions; returns them (the champion last)."""
    from bench.run import make_model

    make_model(client, MODEL)
    versions = []
    for seed in (5, 6):
        # New outcomes before each run: a run on exactly the champion's outcomes registers nothing.
        client.import_outcomes(
            MODEL,
            [
                OutcomeInput(e.features, e.label, outcome_id=f"{seed}-{e.outcome_id}")
                for e in generate_outcomes(rows // 2, seed=seed)
            ],
        )
        run = client.train(MODEL, families=["logistic_regression"])
        if not run.produced_version:
            raise RuntimeError(f"training registered no version: {run.end_reason}")
        versions.append(run.produced_version)
    client.set_alias(MODEL, "champion", versions[1], force=True)
    return versions[0], versions[1]


def predict_request() -> Any:
    from sahayak_rpc._proto.sahayak.v1 import inference_pb2

    request = inference_pb2.PredictRequest(model=MODEL)
    fill_features(request.features, generate_outcomes(1, seed=7)[0].features)
    return request


def pct(samples: list[float], q: int) -> float:
    """The q-th percentile (linear interpolation, as numpy's default)."""
    s = sorted(samples)
    at = (len(s) - 1) * q / 100
    lo = int(at)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (at - lo)


# --- PostgreSQL: the durable write paths -------------------------------------------------------


def bench_pg_writes(url: str, tmp: Path, repeats: int, calls: int, rows: int) -> dict[str, object]:
    """RecordOutcome against the health check (interleaved) and columnar ImportOutcomes: run.py's own
    workloads, against a server on PostgreSQL."""
    from bench.run import bench_import, bench_latencies, make_model

    with servers() as started:
        server = Serve(url, tmp, "pg-writes")
        started.append(server)
        with Client(server.target) as client:
            make_model(client, DEMO_MODEL_NAME)
            lat = bench_latencies(client, repeats, calls)
            imp = bench_import(client, max(1, repeats // 2), rows, rowwise=False)
        server.stop()
    return {
        "pg_echo_p50_us": lat["echo_p50_us"],
        "pg_record_outcome_p50_us": lat["record_outcome_p50_us"],
        "pg_record_outcome_vs_echo": lat["record_outcome_vs_echo"],
        "pg_import_rows_per_s": imp["import_rows_per_s"],
    }


# --- replicas: promotion and failover ----------------------------------------------------------


def bench_promotion(url: str, tmp: Path, moves: int) -> dict[str, object]:
    """SetAlias through replica A, then Predict on replica B as fast as one client can, until B answers
    with the new version: milliseconds from A's acknowledgement."""
    from sahayak_rpc._proto.sahayak.v1 import registry_pb2

    request = predict_request()
    samples: list[float] = []
    polls: list[int] = []
    with servers() as started:
        a = Serve(url, tmp, "promo-a", env=FAST)
        started.append(a)
        b = Serve(url, tmp, "promo-b", env=FAST)
        started.append(b)
        with Client(a.target) as ca, Client(b.target) as cb:
            first, second = linear_model(ca)
            set_alias, predict = ca.registry.SetAlias, cb.inference.Predict
            deadline = time.monotonic() + 30
            while predict(request).version != second:  # B serves the champion before the first move
                if time.monotonic() > deadline:
                    raise RuntimeError("replica B never served the champion")
                time.sleep(0.01)
            for _ in range(50):
                predict(request)
            for i in range(moves):
                version = first if i % 2 == 0 else second
                set_alias(registry_pb2.SetAliasRequest(model=MODEL, alias="champion", version=version, force=True))
                acknowledged = time.perf_counter()
                n = 1
                while predict(request).version != version:
                    n += 1
                    if time.perf_counter() - acknowledged > 30:
                        raise RuntimeError(f"replica B did not serve version {version} within 30 s")
                samples.append((time.perf_counter() - acknowledged) * 1000)
                polls.append(n)
                time.sleep(0.05)  # moves apart: each is measured from a quiet feed
        for s in started:
            s.stop()
    return {
        "replica_promotion_ms": round(pct(samples, 99), 1),
        "replica_promotion_p50_ms": round(statistics.median(samples), 1),
        "replica_promotion_max_ms": round(max(samples), 1),
        "replica_promotion_moves": len(samples),
        "replica_promotion_polls_p50": statistics.median(polls),
    }


def _health_check_at(conn: Any) -> int:
    row = conn.execute("SELECT at_us FROM schedule WHERE task = 'health_check'").fetchone()
    return int(row[0]) if row else 0


def _status(server: Serve) -> Any:
    with Client(server.target, timeout=10) as c:
        return c.server_status()


def _event_time(event: dict[str, Any]) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def bench_failover(url: str, tmp: Path, kills: int) -> dict[str, object]:
    """SIGKILL the leader of two replicas; seconds until the new leader's first health check.

    "The health check ran" is read from the ``schedule`` row ``health_check``: claiming that row
    (ScheduleRepository.claim, one statement) is the first thing a health check does, and its
    ``at_us`` is the claiming server's own clock when it did. So the figure is the server's
    timestamp, not when a poller happened to look, and it cannot be a check that was merely
    logged, or the dead leader's (a claim with at_us after the kill, when the old leader's
    process is gone, is someone else's). The new leader's log line ``monitor.health_check``
    (its replica id) confirms who claimed it; its ``replica.leader`` line gives the takeover.

    The health check is due every second here; one the old leader ran just before it died is not run
    again before it is due (the schedule neither repeats nor skips), so the figure includes up to one
    interval after the takeover."""
    import psycopg

    samples: list[float] = []
    takeovers: list[float] = []
    log_checks: list[float] = []
    env = {**FAST, "SAHAYAK_TRAINING_WORKER": "false"}
    with servers() as started, psycopg.connect(url, autocommit=True) as conn:
        counter = 0

        def new(name: str) -> Serve:
            nonlocal counter
            counter += 1
            s = Serve(url, tmp, f"failover-{counter}-{name}", env=env, log_level="info")
            started.append(s)
            return s

        first = new("a")
        deadline = time.monotonic() + 20
        while not _status(first).replica.leader:
            if time.monotonic() > deadline:
                raise RuntimeError("the first replica never led")
            time.sleep(0.05)
        live = [first, new("b")]
        for _ in range(kills):
            leader, follower = (live[0], live[1]) if _status(live[0]).replica.leader else (live[1], live[0])
            follower_id = _status(follower).replica.id
            killed = time.time()
            leader.kill()
            deadline = time.monotonic() + 120
            while (at := _health_check_at(conn)) <= killed * 1e6:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no health check within 120 s of the kill: {follower.log_tail()}")
                time.sleep(0.01)
            samples.append(at / 1e6 - killed)
            time.sleep(0.2)  # the log line follows the claim's commit
            events = follower.log_events()
            checks = [e for e in events if e.get("event") == "monitor.health_check" and _event_time(e) > killed]
            if not checks or checks[0].get("replica") != follower_id:
                raise RuntimeError(f"the health check after the kill was not the follower's: {checks[:1]}")
            log_checks.append(_event_time(checks[0]) - killed)
            leads = [e for e in events if e.get("event") == "replica.leader" and _event_time(e) > killed]
            if leads:
                takeovers.append(_event_time(leads[0]) - killed)
            live = [follower, new("c")]
        for s in live:
            s.stop()
    return {
        "leader_failover_s": round(statistics.median(samples), 3),
        "leader_failover_max_s": round(max(samples), 3),
        "leader_failover_log_s": round(statistics.median(log_checks), 3),
        "leader_takeover_s": round(statistics.median(takeovers), 3) if takeovers else None,
        "leader_failover_kills": len(samples),
    }


# --- serve --workers N: closed-loop Predict throughput -----------------------------------------


class LoadClients:
    """Client processes, each holding ``channels`` connections (its own subchannel pool each) to every
    target and one thread per connection running Predict in a closed loop when told to."""

    def __init__(self, targets: list[str], processes: int, channels: int) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.workers: dict[str, list[list[str]]] = {}
        for _ in range(processes):
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "client",
                        "--channels",
                        str(channels),
                        *(a for t in targets for a in ("--target", t)),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
            )
        for proc in self.procs:
            ready = json.loads(self._line(proc))
            for target, names in ready["workers"].items():
                self.workers.setdefault(target, []).append(names)

    @staticmethod
    def _line(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a client process exited {proc.wait()}")
        return line

    def cpu_us(self) -> float:
        return cpu_us([p.pid for p in self.procs])

    def run(self, target: str, seconds: float) -> tuple[Counter[str], int]:
        """Every process loops on ``target`` for ``seconds`` from a common start; calls per worker name."""
        start = time.time() + 0.3
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"target": target, "start": start, "seconds": seconds}) + "\n")
            proc.stdin.flush()
        calls: Counter[str] = Counter()
        errors = 0
        for proc in self.procs:
            done = json.loads(self._line(proc))
            calls.update(done["calls"])
            errors += done["errors"]
        return calls, errors

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                assert proc.stdin is not None
                proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def client_main(targets: list[str], channels: int, out: TextIO = sys.stdout) -> int:
    """One load process: report which worker each connection reached, then run what stdin asks."""
    from sahayak_rpc._proto.sahayak.v1 import monitor_pb2, monitor_pb2_grpc

    request = predict_request().SerializeToString()
    conns: dict[str, list[tuple[str, Any]]] = {}
    keep: list[grpc.Channel] = []
    for target in targets:
        conns[target] = []
        for _ in range(channels):
            channel = grpc.insecure_channel(target, options=OWN_CONNECTION)
            keep.append(channel)
            name = (
                monitor_pb2_grpc.MonitorServiceStub(channel)
                .GetServerStatus(monitor_pb2.GetServerStatusRequest(), timeout=30)
                .replica.name
            )
            # The request's bytes, made once, and the reply left as bytes: the client's CPU is the
            # machine's too (the load shares its cores), so it does no protobuf work per call.
            predict = channel.unary_unary("/sahayak.v1.InferenceService/Predict")
            for _ in range(20):
                predict(request, timeout=30)
            conns[target].append((name, predict))
    out.write(json.dumps({"workers": {t: [n for n, _ in c] for t, c in conns.items()}}) + "\n")
    out.flush()
    for line in sys.stdin:
        order = json.loads(line)
        counts = [0] * channels
        errors = [0] * channels
        start, seconds = float(order["start"]), float(order["seconds"])

        def loop(i: int, predict: Any) -> None:
            while time.time() < start:
                time.sleep(0.001)
            end = time.monotonic() + seconds
            n = e = 0
            while time.monotonic() < end:
                try:
                    predict(request, timeout=30)
                    n += 1
                except grpc.RpcError:
                    e += 1
            counts[i], errors[i] = n, e

        threads = [threading.Thread(target=loop, args=(i, p)) for i, (_, p) in enumerate(conns[order["target"]])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        per_worker: Counter[str] = Counter()
        for (name, _), n in zip(conns[order["target"]], counts, strict=True):
            per_worker[name] += n
        out.write(json.dumps({"calls": per_worker, "errors": sum(errors)}) + "\n")
        out.flush()
    for channel in keep:
        channel.close()
    return 0


def _worker_probes(target: str, want: int) -> list[Client]:
    """One client per worker of ``target`` (new connections until each worker is reached)."""
    found: dict[str, Client] = {}
    for _ in range(64):
        c = Client(target, options=OWN_CONNECTION)
        name = c.server_status().replica.name
        if name in found:
            c.close()
        else:
            found[name] = c
        if len(found) == want:
            break
    return list(found.values())


def _drained(probes: list[Client], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(p.server_status().queues.prediction_log for p in probes) and time.monotonic() < deadline:
        time.sleep(0.05)


def _copy_db(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for path in src.parent.iterdir():
        if path.name.startswith(src.name):
            target = dst_dir / path.name
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, target)
    return dst_dir / src.name


def bench_workers(
    tmp: Path, rounds: int, seconds: float, processes: int = 4, channels: int = 2, env: dict[str, str] | None = None
) -> dict[str, object]:
    """Closed-loop Predict throughput of ``serve --workers 2`` over ``--workers 1`` (SQLite, a copy of
    the same database each), interleaved: each round runs both, in alternating order. Beside it the
    servers' CPU per Predict (every process of theirs), and how the calls spread over the workers."""
    from bench.run import small_linear_db

    (tmp / "workers-base").mkdir(exist_ok=True)
    base = small_linear_db(tmp / "workers-base")
    results: dict[int, dict[str, list[float]]] = {
        n: {"rate": [], "cpu": [], "client_cpu": [], "busy": [], "others": []} for n in (1, 2)
    }
    cpus = os.cpu_count() or 1
    spread: Counter[str] = Counter()
    errors = 0
    with servers() as started:
        by_n: dict[int, Serve] = {}
        for n in (1, 2):
            db = _copy_db(base, tmp / f"workers-{n}")
            by_n[n] = Serve(str(db), tmp, f"workers-{n}", "--workers", str(n), env=env)
            started.append(by_n[n])
        clients = LoadClients([by_n[1].target, by_n[2].target], processes, channels)
        probes = {n: _worker_probes(by_n[n].target, n) for n in (1, 2)}
        try:
            connections = Counter(name for names in clients.workers[by_n[2].target] for name in names)
            # A round unmeasured: in trials the first round's ratio was the lowest of its run.
            for n in (1, 2):
                clients.run(by_n[n].target, seconds)
            for r in range(rounds):
                for n in (1, 2) if r % 2 == 0 else (2, 1):
                    _drained(probes[n])
                    before, client_before, machine_before = by_n[n].cpu_us(), clients.cpu_us(), machine_busy_us()
                    window = time.monotonic()
                    calls, errs = clients.run(by_n[n].target, seconds)
                    client_cpu = clients.cpu_us() - client_before
                    server_in_block = by_n[n].cpu_us() - before
                    machine = machine_busy_us() - machine_before
                    capacity = (time.monotonic() - window) * 1e6 * cpus
                    _drained(probes[n])  # the log's work on these calls is billed to them
                    cpu = by_n[n].cpu_us() - before
                    total = sum(calls.values())
                    errors += errs
                    results[n]["rate"].append(total / seconds)
                    results[n]["cpu"].append(cpu / max(total, 1))
                    results[n]["client_cpu"].append(client_cpu / max(total, 1))
                    # The machine's share the server and its clients kept busy (1.0: every core, all along)...
                    results[n]["busy"].append((server_in_block + client_cpu) / capacity)
                    # ...and what everything else on it took meanwhile (other people's work).
                    results[n]["others"].append(max(0.0, machine - server_in_block - client_cpu) / capacity)
                    if n == 2:
                        spread.update(calls)
        finally:
            clients.close()
            for group in probes.values():
                for p in group:
                    p.close()
        for s in started:
            s.stop()
    ratios = [b / a for a, b in zip(results[1]["rate"], results[2]["rate"], strict=True)]
    total2 = sum(spread.values()) or 1
    return {
        "workers_throughput_ratio": round(statistics.median(ratios), 3),
        "workers_throughput_ratios": [round(x, 3) for x in ratios],
        "workers1_predict_per_s": round(statistics.median(results[1]["rate"])),
        "workers2_predict_per_s": round(statistics.median(results[2]["rate"])),
        "workers1_rounds_per_s": [round(x) for x in results[1]["rate"]],
        "workers2_rounds_per_s": [round(x) for x in results[2]["rate"]],
        "predict_server_cpu_us": round(statistics.median(results[1]["cpu"]), 1),
        "predict_server_cpu_us_workers2": round(statistics.median(results[2]["cpu"]), 1),
        "predict_client_cpu_us": round(statistics.median(results[1]["client_cpu"] + results[2]["client_cpu"]), 1),
        "workers1_machine_busy": round(statistics.median(results[1]["busy"]), 2),
        # What --workers 2 could reach over --workers 1 if it kept every core busy at this CPU per call
        # (its own and its clients'): the ratio's ceiling on this machine.
        "workers_ratio_ceiling": round(
            statistics.median(
                cpus * 1e6 / (s2 + c2) / r1
                for s2, c2, r1 in zip(results[2]["cpu"], results[2]["client_cpu"], results[1]["rate"], strict=True)
            ),
            3,
        ),
        "workers2_machine_busy": round(statistics.median(results[2]["busy"]), 2),
        "workers_machine_busy_others": round(statistics.median(results[1]["others"] + results[2]["others"]), 2),
        "workers2_call_share": {k.rsplit("/", 1)[-1]: round(v / total2, 3) for k, v in sorted(spread.items())},
        "workers2_connections": {k.rsplit("/", 1)[-1]: v for k, v in sorted(connections.items())},
        "workers_load": f"{processes} processes x {channels} connections, {seconds:g} s blocks",
        "workers_errors": errors,
        "machine_cpus": os.cpu_count(),
    }


# --- all of it ---------------------------------------------------------------------------------


def run_scaleout(tmp: Path, repeats: int, calls: int, rows: int, quick: bool) -> dict[str, object]:
    # Other work on the machine shares its cores with these servers and their clients.
    figures: dict[str, object] = {"scaleout_loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    with pg_cluster() as pg:
        figures["pg_cluster"] = {"fsync": pg.fsync, "dir": tempfile.gettempdir()}
        figures.update(bench_pg_writes(pg.create_database(), tmp, repeats, calls, rows))
        replicas_db = pg.create_database()
        figures.update(bench_promotion(replicas_db, tmp, 20 if quick else 50))
        figures.update(bench_failover(replicas_db, tmp, 2 if quick else 5))
    figures.update(bench_workers(tmp, repeats, 2.0 if quick else 5.0))
    return figures


# --- retention: a day partition dropped against the same rows deleted -------------------------


def bench_retention(rows: int) -> dict[str, object]:
    """1M logged predictions in one day partition, twice: once dropped (``drop_partitions_before``, and a
    bare DROP TABLE), once deleted (one DELETE, then the batched DELETE purge() does for rows outside
    whole expired days). The rows go in with COPY into a database a server created."""
    import datetime as dt

    import psycopg

    from sahayak_rpc.store.postgres import DAY_US, PgDatabase

    out: dict[str, object] = {"rows": rows}
    with pg_cluster() as pg:
        url = pg.create_database()
        with tempfile.TemporaryDirectory() as work, servers() as started:
            s = Serve(url, Path(work), "retention")
            started.append(s)
            with Client(s.target) as c:
                from bench.run import make_model

                make_model(c, MODEL)
            s.stop()
        day = (int(time.time() * 1e6) // DAY_US - 10) * DAY_US  # a past day, wholly expired
        name = f"predictions_d{dt.datetime.fromtimestamp(day / 1e6, dt.UTC):%Y%m%d}"
        features = json.dumps(generate_outcomes(1, seed=7)[0].features)

        def value(conn: psycopg.Connection[Any], sql: str, args: tuple[Any, ...] = ()) -> Any:
            row = conn.execute(sql, args).fetchone()
            assert row is not None
            return row[0]

        def fill(conn: psycopg.Connection[Any]) -> float:
            # A store of its own each time: it remembers the partitions it made, and a bare DROP forgets them.
            store = PgDatabase(url)
            store.prepare_partitions("predictions", [day])
            store.close()
            model_id = value(conn, "SELECT id FROM models WHERE name = %s", (MODEL,))
            start = time.perf_counter()
            with conn.cursor().copy(
                "COPY predictions (prediction_id, model_id, version, features_json, probability,"
                " label, created_us, entities_json, source) FROM STDIN"
            ) as copy:
                for i in range(rows):
                    copy.write_row(
                        (f"p{i:08d}", model_id, 1, features, 0.5, 1, day + i * (DAY_US // rows), None, "predict")
                    )
            conn.execute("CHECKPOINT")
            return time.perf_counter() - start

        def size(conn: psycopg.Connection[Any]) -> int:
            return int(
                value(
                    conn,
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i"
                    " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'predictions'::regclass",
                )
            )

        times: dict[str, float] = {}
        db = PgDatabase(url)
        with psycopg.connect(url, autocommit=True) as conn:

            def timed(key: str, sql: str | None = None, fn: Any = None) -> Any:
                """Seconds and WAL bytes of one step (its SQL, or ``fn``)."""
                lsn = value(conn, "SELECT pg_current_wal_lsn()")
                start = time.perf_counter()
                result = conn.execute(sql) if sql else fn()
                took = time.perf_counter() - start
                out[f"{key}_s"] = round(took, 3)
                out[f"{key}_wal_mb"] = round(
                    float(value(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,))) / 2**20, 1
                )
                times[key] = took
                return result

            out["insert_s"] = round(fill(conn), 2)
            out["partition_mb"] = round(size(conn) / 2**20, 1)
            # The store's own drop counts the rows first (its return value): a scan of the partition.
            gone = timed("drop_partitions_before", fn=lambda: db.drop_partitions_before("predictions", day + DAY_US))
            assert gone == rows, gone

            fill(conn)
            timed("drop_table", f"DROP TABLE {name}")

            fill(conn)
            deleted = timed("delete", f"DELETE FROM predictions WHERE created_us < {day + DAY_US}").rowcount
            assert deleted == rows, deleted
            out["size_after_delete_mb"] = round(size(conn) / 2**20, 1)
            # The deleted rows' space comes back only when vacuumed (autovacuum would, later).
            timed("vacuum_after_delete", "VACUUM predictions")
            out["size_after_vacuum_mb"] = round(size(conn) / 2**20, 1)
            conn.execute(f"DROP TABLE {name}")

            fill(conn)
            from sahayak_rpc.store.monitoring import MonitoringRepository

            repo = MonitoringRepository(db)
            # purge() drops whole expired days first; a cutoff inside the day leaves it the batched DELETE
            # it does for rows outside whole expired days (1,000 rows a transaction).
            purged = timed("purge_batched_delete", fn=lambda: repo.purge("predictions", "created_us", day + DAY_US - 1))
            out["purge_batched_delete_rows"] = purged
        db.close()
    out["delete_and_vacuum_vs_drop_table"] = round(
        (times["delete"] + times["vacuum_after_delete"]) / max(times["drop_table"], 1e-6), 1
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="figures", choices=("figures", "retention", "client"))
    parser.add_argument("--target", action="append", default=[], help="(client) a server to load")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--channels", type=int, default=4)
    opts = parser.parse_args()
    if opts.mode == "client":
        return client_main(opts.target, opts.channels)
    if opts.mode == "retention":
        print(json.dumps(bench_retention(opts.rows), indent=2))
        return 0
    repeats, calls, rows = (2, 200, 10_000) if opts.quick else (5, 1000, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run_scaleout(Path(tmp), repeats, calls, rows, opts.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
