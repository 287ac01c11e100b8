"""Monitoring tables: the labelled prediction window, performance history, alerts, retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from ..drift import Chunk, CodesChunk, ValuesChunk
from . import events
from .batchcodec import decode_probabilities
from .database import Database, equal_clause, time_clause
from .segments import LostPayload, read_columns
from .sql import Conn, Lock

log = structlog.get_logger("sahayak_rpc.monitoring")

_IN = 500
# Retention deletes by each table's own key, a batch at a time.
_PURGE_KEYS = {"predictions": "seq", "prediction_batches": "batch_id", "performance_records": "id"}


@dataclass
class PredictionWindow:
    """Predictions in a window; ``labels`` holds 1/0 where an outcome names the prediction, else -1."""

    ids: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WindowColumns:
    """Logged features column by column (in chunks, never as row objects), their probabilities, and how
    many predictions they are."""

    columns: dict[str, list[Chunk]]
    probabilities: list[float]
    count: int


@dataclass(frozen=True, slots=True)
class _Logged:
    """A logged prediction as the labelled window reads it."""

    version: int
    probability: float
    created_us: int


@dataclass(frozen=True)
class AlertRow:
    """An alert as stored: its rule, severity, state ("open", "acknowledged", "resolved"), message, the
    value that breached its threshold, details, when it was raised, acknowledged and resolved (0: not yet),
    and the acknowledgement's note."""

    alert_id: str
    model_id: int
    rule: str
    severity: str
    state: str
    message: str
    value: float
    threshold: float
    details: dict[str, str]
    raised_us: int
    acknowledged_us: int
    resolved_us: int
    note: str


_ALERT_COLS = (
    "alert_id, model_id, rule, severity, state, message, coalesce(value, 0), coalesce(threshold, 0),"
    " details_json, raised_us, acknowledged_us, resolved_us, note"
)


def _alert(r: Any) -> AlertRow:
    return AlertRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], orjson.loads(r[8]), r[9], r[10], r[11], r[12])


@dataclass(frozen=True, slots=True)
class NumberedAlert:
    """An alert with its position in the alerts table (``list_alerts`` pages by it)."""

    seq: int
    alert: AlertRow


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert event: its cursor (``seq``), what happened ("raised", "acknowledged", "resolved") and the alert
    as it is now."""

    seq: int
    event: str
    alert: AlertRow


class MonitoringRepository:
    """The monitoring tables: predictions joined with their outcomes, performance history, alerts with
    their events (the WatchAlerts cursor), and retention."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # --- predictions joined with outcomes ----------------------------------

    def last_labelled(self, model_id: int, version: int, last_n: int) -> PredictionWindow:
        """The newest ``last_n`` predictions that an outcome has labelled: work in proportion to N, not to the log."""
        out = PredictionWindow()
        found: list[tuple[int, str, int, float, int]] = []
        batches: dict[str, tuple[int, int, list[float]] | None] = {}
        page = max(100, min(2 * last_n, 5000))
        with self._db.read() as conn:
            before = None
            while len(found) < last_n:
                # Newest labelled outcomes first, a page at a time (a cursor read to the end would
                # fetch every labelled outcome of the model).
                rows = conn.execute(
                    "SELECT seq, prediction_id, label FROM outcomes WHERE model_id = ? AND prediction_id IS NOT NULL"
                    + (" AND seq < ?" if before is not None else "")
                    + " ORDER BY seq DESC LIMIT ?",
                    (model_id, *(() if before is None else (before,)), page),
                ).fetchall()
                for _, pid, label in rows:
                    if len(found) >= last_n:
                        break
                    logged = self._logged(conn, model_id, pid, batches)
                    if logged is None or (version and logged.version != version):
                        continue
                    found.append((logged.created_us, pid, logged.version, logged.probability, label))
                if len(rows) < page:
                    break
                before = rows[-1][0]
        for created, pid, ver, prob, label in sorted(found):
            out.ids.append(pid)
            out.versions.append(ver)
            out.probabilities.append(prob)
            out.labels.append(label)
            out.times.append(created)
        return out

    @staticmethod
    def _logged(
        conn: Conn, model_id: int, pid: str, batches: dict[str, tuple[int, int, list[float]] | None]
    ) -> _Logged | None:
        """A logged prediction, served alone or in a batch."""
        row = conn.execute(
            "SELECT version, probability, created_us FROM predictions WHERE prediction_id = ? AND model_id = ?",
            (pid, model_id),
        ).fetchone()
        if row is not None:
            return _Logged(*row)
        if ":" not in pid:
            return None
        bid, _, index = pid.rpartition(":")
        if bid not in batches:
            b = conn.execute(
                "SELECT version, created_us, probabilities_data FROM prediction_batches"
                " WHERE batch_id = ? AND model_id = ?",
                (bid, model_id),
            ).fetchone()
            batches[bid] = (b[0], b[1], decode_probabilities(b[2])) if b else None
        found = batches[bid]
        if found is None or not index.isdigit():
            return None
        version, created_us, probabilities = found
        i = int(index)
        return _Logged(version, probabilities[i], created_us) if i < len(probabilities) else None

    def window(
        self, model_id: int, version: int, start_us: int | None, end_us: int | None, last_n: int
    ) -> PredictionWindow:
        """Predictions (served, logged and batched), oldest first, with their outcomes' labels."""
        if last_n and start_us is None and end_us is None:
            return self.last_labelled(model_id, version, last_n)
        out = PredictionWindow()
        window_sql, args = time_clause("created_us", start_us, end_us)
        where = "model_id = ?" + (" AND version = ?" if version else "") + window_sql
        args = [model_id, *([version] if version else []), *args]
        items: list[tuple[int, str, int, float]] = []
        with self._db.read() as conn:
            for pid, ver, prob, created in conn.execute(
                f"SELECT prediction_id, version, probability, created_us FROM predictions WHERE {where}", args
            ):
                items.append((created, pid, ver, prob))
            for bid, ver, probs, created in conn.execute(
                f"SELECT batch_id, version, probabilities_data, created_us FROM prediction_batches WHERE {where}", args
            ):
                items += [(created, f"{bid}:{i}", ver, p) for i, p in enumerate(decode_probabilities(probs))]
            items.sort(key=lambda t: t[0])
            labels: dict[str, int] = {}
            ids = [t[1] for t in items]
            for start in range(0, len(ids), _IN):
                where, chunk = conn.any_of("prediction_id", ids[start : start + _IN])
                labels.update(
                    conn.execute(
                        f"SELECT prediction_id, label FROM outcomes WHERE model_id = ? AND {where}", (model_id, *chunk)
                    ).fetchall()
                )
        if last_n:
            # The newest N *labelled* predictions.
            items = [t for t in items if t[1] in labels][-last_n:]
        for created, pid, ver, prob in items:
            out.ids.append(pid)
            out.versions.append(ver)
            out.probabilities.append(prob)
            out.labels.append(labels.get(pid, -1))
            out.times.append(created)
        return out

    def window_columns(self, model_id: int, start_us: int | None, end_us: int | None, last_n: int = 0) -> WindowColumns:
        """The window's logged features, column by column. ``last_n`` keeps the newest N predictions (whole batches are kept or cut at the boundary)."""
        window_sql, window_args = time_clause("created_us", start_us, end_us)
        where = "model_id = ?" + window_sql
        args = [model_id, *window_args]
        columns: dict[str, list[Chunk]] = {}
        probs: list[float] = []
        n = lost = 0
        lost_error = ""
        with self._db.read() as conn:
            singles = conn.execute(
                f"SELECT features_json, probability FROM predictions WHERE {where}"
                " ORDER BY created_us DESC" + (" LIMIT ?" if last_n else ""),
                (*args, last_n) if last_n else args,
            ).fetchall()
            rows = [orjson.loads(f) for f, _ in singles]
            if rows:
                names = {k for r in rows for k in r}
                for name in names:
                    columns.setdefault(name, []).append(ValuesChunk([r.get(name) for r in rows]))
                probs += [p for _, p in singles]
                n += len(rows)
            budget = last_n - n if last_n else None
            for cols, ps, count in conn.execute(
                f"SELECT columns_data, probabilities_data, row_count FROM prediction_batches WHERE {where}"
                " ORDER BY created_us DESC",
                args,
            ):
                if budget is not None and budget <= 0:
                    break
                try:
                    decoded = read_columns(self._db.segments, cols)
                except LostPayload as exc:  # its features are gone (store/segments.py): the window skips it
                    lost += 1
                    lost_error = str(exc)
                    continue
                take = count if budget is None else min(count, budget)
                for name, values in decoded.items():
                    if values is None:  # a column of an empty batch: no values
                        continue
                    if isinstance(values, dict):
                        columns.setdefault(name, []).append(CodesChunk(values["dictionary"], values["codes"][:take]))
                    else:
                        columns.setdefault(name, []).append(ValuesChunk(values[:take]))
                probs += decode_probabilities(ps)[:take]
                n += take
                if budget is not None:
                    budget -= take
        if lost:
            log.warning("monitoring.batches_lost", model_id=model_id, batches=lost, error=lost_error)
        return WindowColumns(columns, probs, n)

    def last_prediction_us(self, model_id: int) -> int:
        """When the model's newest logged prediction or batch was made (0: none)."""
        conn = self._db.reader()
        a = conn.execute(
            "SELECT coalesce(max(created_us), 0) FROM predictions WHERE model_id = ?", (model_id,)
        ).fetchone()[0]
        b = conn.execute(
            "SELECT coalesce(max(created_us), 0) FROM prediction_batches WHERE model_id = ?", (model_id,)
        ).fetchone()[0]
        return int(max(a, b))

    def last_outcome_us(self, model_id: int) -> int:
        """When the model's newest outcome was received (0: none)."""
        r = (
            self._db.reader()
            .execute("SELECT coalesce(max(received_us), 0) FROM outcomes WHERE model_id = ?", (model_id,))
            .fetchone()
        )
        return int(r[0])

    # --- performance history ------------------------------------------------

    def record_performance(
        self, model_id: int, version: int, start_us: int, end_us: int, metrics: dict[str, Any], source: str, now_us: int
    ) -> int:
        """Store one window's metrics for a version (``source``: what computed them); returns the record's id,
        committed before it returns."""
        with self._db.write() as conn:
            row = conn.execute(
                "INSERT INTO performance_records (model_id, version, start_us, end_us, metrics_json, source, created_us)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (model_id, version, start_us, end_us, orjson.dumps(metrics).decode(), source, now_us),
            ).fetchone()
            return int(row[0])

    # --- alerts ---------------------------------------------------------------

    def latest_alert(self, model_id: int, rule: str) -> AlertRow | None:
        """The model's most recently raised alert of ``rule``, whatever its state, or None."""
        r = (
            self._db.reader()
            .execute(
                f"SELECT {_ALERT_COLS} FROM alerts WHERE model_id = ? AND rule = ? ORDER BY raised_us DESC, seq DESC LIMIT 1",
                (model_id, rule),
            )
            .fetchone()
        )
        return _alert(r) if r else None

    def raise_alert(self, a: AlertRow, cooldown_us: int) -> int | None:
        """Store a new alert and its 'raised' event; returns the event's cursor. None, storing nothing,
        when an alert of the model and rule is not resolved yet or was raised within ``cooldown_us``
        (a unique index keeps one unresolved alert per model and rule, whichever replica raises it)."""
        with self._db.write() as conn:
            latest = conn.execute(
                "SELECT state, raised_us FROM alerts WHERE model_id = ? AND rule = ?"
                " ORDER BY raised_us DESC, seq DESC LIMIT 1",
                (a.model_id, a.rule),
            ).fetchone()
            if latest is not None:
                state, raised_us = latest
                if state != "resolved" or a.raised_us - raised_us < cooldown_us:
                    return None
            stored = conn.try_execute(
                "INSERT INTO alerts (alert_id, model_id, rule, severity, state, message, value, threshold, details_json,"
                " raised_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    a.alert_id,
                    a.model_id,
                    a.rule,
                    a.severity,
                    a.state,
                    a.message,
                    a.value,
                    a.threshold,
                    orjson.dumps(a.details).decode(),
                    a.raised_us,
                ),
            )
            if stored is None:
                return None
            return self._event(conn, a.alert_id, "raised", a.model_id, a.raised_us)

    @staticmethod
    def _event(conn: Conn, alert_id: str, event: str, model_id: int, now_us: int) -> int:
        """Append an alert event (the WatchAlerts cursor: inserts serialised so that it follows commit order)."""
        conn.lock(Lock.ALERT_EVENTS)
        row = conn.execute(
            "INSERT INTO alert_events (alert_id, event, created_us) VALUES (?, ?, ?) RETURNING seq",
            (alert_id, event, now_us),
        ).fetchone()
        events.append(conn, events.ALERT, now_us, model_id, alert_id)
        return int(row[0])

    def transition(self, alert_id: str, state: str, now_us: int, note: str = "") -> AlertRow | None:
        """acknowledged or resolved; appends the event. None if the alert does not exist."""
        column = "acknowledged_us" if state == "acknowledged" else "resolved_us"
        with self._db.write() as conn:
            changed = conn.execute(
                f"UPDATE alerts SET state = ?, {column} = ?, note = CASE WHEN ? = '' THEN note ELSE ? END"
                " WHERE alert_id = ? AND state != ? AND state != 'resolved' RETURNING model_id",
                (state, now_us, note, note, alert_id, state),
            ).fetchone()
            if changed is not None:
                self._event(conn, alert_id, state, int(changed[0]), now_us)
        return self.get_alert(alert_id)

    def get_alert(self, alert_id: str) -> AlertRow | None:
        """The alert with this id, or None."""
        r = self._db.reader().execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        return _alert(r) if r else None

    def list_alerts(
        self, model_id: int | None, state: str, severities: tuple[str, ...], before: int, limit: int
    ) -> list[NumberedAlert]:
        """Up to ``limit`` alerts with a position below ``before``, newest first, of one model (None: all), one
        state ("": all) and the given severities (none: all)."""
        filters, values = equal_clause(model_id=model_id, state=state)
        sql = f"SELECT seq, {_ALERT_COLS} FROM alerts WHERE seq < ?" + filters
        args: list[Any] = [before, *values]
        if severities:
            sql += f" AND severity IN ({','.join('?' * len(severities))})"
            args += list(severities)
        rows = self._db.reader().execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [NumberedAlert(r[0], _alert(r[1:])) for r in rows]

    def events_after(self, cursor: int, limit: int = 500) -> list[AlertChange]:
        """Up to ``limit`` alert events with a seq above ``cursor``, oldest first, each with its alert as it is now."""
        rows = (
            self._db.reader()
            .execute(
                "SELECT e.seq, e.event, a.alert_id, a.model_id, a.rule, a.severity, a.state, a.message,"
                " coalesce(a.value, 0), coalesce(a.threshold, 0), a.details_json, a.raised_us, a.acknowledged_us,"
                " a.resolved_us, a.note FROM alert_events e JOIN alerts a ON a.alert_id = e.alert_id WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
                (cursor, limit),
            )
            .fetchall()
        )
        return [AlertChange(r[0], r[1], _alert(r[2:])) for r in rows]

    def last_event_seq(self) -> int:
        """The newest alert event's seq (0: none): where a watcher that wants only new events starts."""
        return int(self._db.reader().execute("SELECT coalesce(max(seq), 0) FROM alert_events").fetchone()[0])

    def open_alerts_by_severity(self) -> dict[str, int]:
        """How many alerts are not resolved, per severity (every severity listed, 0 included)."""
        rows = (
            self._db.reader()
            .execute("SELECT severity, count(*) FROM alerts WHERE state != 'resolved' GROUP BY severity")
            .fetchall()
        )
        counts = {"info": 0, "warning": 0, "critical": 0}
        counts.update({s: int(n) for s, n in rows})
        return counts

    def open_alerts(self, model_id: int) -> int:
        """How many of the model's alerts are not resolved."""
        r = (
            self._db.reader()
            .execute("SELECT count(*) FROM alerts WHERE model_id = ? AND state != 'resolved'", (model_id,))
            .fetchone()
        )
        return int(r[0])

    # --- retention ------------------------------------------------------------

    def purge(self, table: str, column: str, before_us: int, batch: int = 1000) -> int:
        """Delete rows older than ``before_us`` in small transactions; returns how many went. Where the table
        is partitioned by time (the prediction log on PostgreSQL), whole expired days are dropped first."""
        key = _PURGE_KEYS[table]
        assert column == "created_us"
        total = self._db.drop_partitions_before(table, before_us)
        while True:
            with self._db.write() as conn:
                deleted = conn.execute(
                    f"DELETE FROM {table} WHERE {column} < ? AND {key} IN"
                    f" (SELECT {key} FROM {table} WHERE {column} < ? LIMIT ?)",
                    (before_us, before_us, batch),
                ).rowcount
            total += deleted
            if deleted < batch:
                return total
