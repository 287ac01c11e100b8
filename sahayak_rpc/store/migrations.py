"""Schema migrations for both backends, applied in order.

``MIGRATIONS`` are SQLite's (PRAGMA user_version records the last one applied);
``PG_MIGRATIONS`` are PostgreSQL's (the ``schema_version`` table records it).
PostgreSQL's first migration is the whole schema as SQLite has it after its
ninth, in PostgreSQL's types: BIGINT microsecond times and keys, BYTEA,
DOUBLE PRECISION, identity keys, and the prediction log partitioned by day.
Never edit a released migration: append a new one (to both lists, where the
change concerns both).

Timestamps are integer microseconds since the Unix epoch (UTC).
"""

MIGRATIONS: list[str] = [
    # 1: declared models and their labelled outcomes.
    """
    CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        schema_json TEXT NOT NULL,
        settings_json TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL
    );
    CREATE TABLE outcomes (
        seq INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        outcome_id TEXT NOT NULL,
        label INTEGER NOT NULL CHECK (label IN (0, 1)),
        features_json TEXT NOT NULL,
        entities_json TEXT,
        metadata_json TEXT,
        occurred_us INTEGER NOT NULL,
        received_us INTEGER NOT NULL,
        prediction_id TEXT,
        content_hash BLOB NOT NULL,
        source TEXT NOT NULL,
        UNIQUE (model_id, outcome_id)
    );
    CREATE INDEX outcomes_by_model_seq ON outcomes (model_id, seq);
    CREATE INDEX outcomes_by_model_time ON outcomes (model_id, occurred_us);
    CREATE INDEX outcomes_by_prediction ON outcomes (prediction_id) WHERE prediction_id IS NOT NULL
    """,
]

MIGRATIONS.append(
    # 2: the registry (versions, aliases and their history), training runs,
    # the prediction log and server secrets.
    """
    CREATE TABLE model_versions (
        id INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        version INTEGER NOT NULL,
        family TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ready', 'rejected', 'archived')),
        source TEXT NOT NULL,
        training_run_id TEXT,
        parent_version INTEGER NOT NULL DEFAULT 0,
        metrics_json TEXT NOT NULL,
        gate_json TEXT NOT NULL,
        weights_json TEXT NOT NULL,
        lineage_json TEXT NOT NULL,
        calibration TEXT NOT NULL,
        threshold REAL NOT NULL,
        artifact BLOB NOT NULL,
        artifact_sha256 TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_us INTEGER NOT NULL,
        UNIQUE (model_id, version)
    );
    CREATE TABLE aliases (
        model_id INTEGER NOT NULL REFERENCES models(id),
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_us INTEGER NOT NULL,
        PRIMARY KEY (model_id, alias)
    );
    CREATE TABLE alias_events (
        id INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        previous_version INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_us INTEGER NOT NULL
    );
    CREATE INDEX alias_events_by_model ON alias_events (model_id, alias, id);
    CREATE TABLE training_runs (
        run_id TEXT PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        kind TEXT NOT NULL,
        trigger TEXT NOT NULL,
        state TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        started_us INTEGER NOT NULL DEFAULT 0,
        ended_us INTEGER NOT NULL DEFAULT 0,
        through_seq INTEGER NOT NULL DEFAULT 0,
        request_json TEXT NOT NULL,
        result_json TEXT NOT NULL DEFAULT '{}',
        produced_version INTEGER NOT NULL DEFAULT 0,
        promoted INTEGER NOT NULL DEFAULT 0,
        end_reason TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX training_runs_by_model ON training_runs (model_id, created_us);
    CREATE TABLE predictions (
        seq INTEGER PRIMARY KEY,
        prediction_id TEXT NOT NULL,
        model_id INTEGER NOT NULL REFERENCES models(id),
        version INTEGER NOT NULL,
        features_json TEXT NOT NULL,
        probability REAL NOT NULL,
        label INTEGER NOT NULL,
        created_us INTEGER NOT NULL,
        entities_json TEXT,
        source TEXT NOT NULL
    );
    CREATE INDEX predictions_by_id ON predictions (prediction_id);
    CREATE INDEX predictions_by_model_time ON predictions (model_id, created_us);
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    )
    """
)

MIGRATIONS.append(
    # 3: each version's reference profile (for drift), stored beside its artifact.
    """
    ALTER TABLE model_versions ADD COLUMN profile_json TEXT NOT NULL DEFAULT '{}'
    """
)

MIGRATIONS.append(
    # 4: columnar batches are logged whole: one row per PredictBatch call, its
    # feature columns and probabilities as JSON arrays (row i is "<batch_id>:<i>").
    """
    CREATE TABLE prediction_batches (
        batch_id TEXT PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        version INTEGER NOT NULL,
        row_count INTEGER NOT NULL,
        columns_json TEXT NOT NULL,
        probabilities_json TEXT NOT NULL,
        threshold REAL NOT NULL,
        created_us INTEGER NOT NULL,
        source TEXT NOT NULL
    );
    CREATE INDEX prediction_batches_by_model_time ON prediction_batches (model_id, created_us)
    """
)

MIGRATIONS.append(
    # 5: user feedback on recommendations; one with an outcome also becomes a
    # training outcome (outcome_id names it).
    """
    CREATE TABLE feedback (
        seq INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        feedback_id TEXT NOT NULL,
        recommendation_id TEXT,
        prediction_id TEXT,
        artisan_id TEXT,
        scheme_id TEXT,
        interaction TEXT NOT NULL,
        outcome TEXT,
        rating INTEGER,
        comment TEXT,
        features_json TEXT,
        occurred_us INTEGER NOT NULL,
        received_us INTEGER NOT NULL,
        content_hash BLOB NOT NULL,
        outcome_id TEXT,
        UNIQUE (model_id, feedback_id)
    );
    CREATE INDEX feedback_by_model_time ON feedback (model_id, occurred_us)
    """
)

MIGRATIONS.append(
    # 6: monitoring: performance history, alerts and their event log (the
    # event seq is the WatchAlerts cursor).
    """
    CREATE TABLE performance_records (
        id INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        version INTEGER NOT NULL,
        start_us INTEGER NOT NULL,
        end_us INTEGER NOT NULL,
        metrics_json TEXT NOT NULL,
        source TEXT NOT NULL,
        created_us INTEGER NOT NULL
    );
    CREATE INDEX performance_by_model_time ON performance_records (model_id, created_us);
    CREATE TABLE alerts (
        alert_id TEXT PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        rule TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        value REAL,
        threshold REAL,
        details_json TEXT NOT NULL,
        raised_us INTEGER NOT NULL,
        acknowledged_us INTEGER NOT NULL DEFAULT 0,
        resolved_us INTEGER NOT NULL DEFAULT 0,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX alerts_by_model_rule ON alerts (model_id, rule, raised_us);
    CREATE TABLE alert_events (
        seq INTEGER PRIMARY KEY,
        alert_id TEXT NOT NULL REFERENCES alerts(alert_id),
        event TEXT NOT NULL,
        created_us INTEGER NOT NULL
    );
    CREATE INDEX predictions_by_created ON predictions (created_us);
    CREATE INDEX prediction_batches_by_created ON prediction_batches (created_us)
    """
)

MIGRATIONS.append(
    # 7: logged batches are stored in a binary layout (store/batchcodec.py), so
    # the columns are no longer JSON only; rows from before keep their JSON text.
    """
    ALTER TABLE prediction_batches RENAME COLUMN columns_json TO columns_data;
    ALTER TABLE prediction_batches RENAME COLUMN probabilities_json TO probabilities_data
    """
)

MIGRATIONS.append(
    # 8: logged batches' features may live in log segments beside the database
    # (store/segments.py; columns_data then holds a reference). Each segment's
    # newest record time tells retention when the whole file may go.
    """
    CREATE TABLE log_segments (
        segment INTEGER PRIMARY KEY,
        newest_us INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    )
    """
)

MIGRATIONS.append(
    # 9: many processes, one database (docs/scale-out.md).
    # - training runs are a queue: a worker (a replica's id) claims a queued run and heartbeats it (a
    #   counter the worker bumps: the leader judges it by whether it moves); a cancel may come from any replica; at most one queued or running run per model (an index).
    #   The table gets an explicit key (seq) for ordering and paging, in place of SQLite's rowid.
    # - alerts get an explicit key too, and at most one alert per model and rule is not resolved (an older
    #   server could leave two open when two health checks raced: all but the newest are resolved).
    # - outcome_totals: per model, the outcomes stored, the newest seq, and how many of them the
    #   last run that ended (not interrupted) had read (its through_count): "labels since training"
    #   for every replica, kept in the ingest transaction.
    # - events: the change feed replicas follow (a promotion, a model update, a run queued ...);
    #   run_events: a run's progress, for WatchTrainingRun on any replica; replicas: one row per
    #   serving process, heartbeated; schedule: when the leader last ran each periodic task.
    """
    CREATE TABLE training_runs_new (
        seq INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        model_id INTEGER NOT NULL REFERENCES models(id),
        kind TEXT NOT NULL,
        trigger TEXT NOT NULL,
        state TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        started_us INTEGER NOT NULL DEFAULT 0,
        ended_us INTEGER NOT NULL DEFAULT 0,
        through_seq INTEGER NOT NULL DEFAULT 0,
        request_json TEXT NOT NULL,
        result_json TEXT NOT NULL DEFAULT '{}',
        produced_version INTEGER NOT NULL DEFAULT 0,
        promoted INTEGER NOT NULL DEFAULT 0,
        end_reason TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        worker INTEGER NOT NULL DEFAULT 0,
        heartbeat INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        through_count INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO training_runs_new (seq, run_id, model_id, kind, trigger, state, created_us, started_us, ended_us,
        through_seq, request_json, result_json, produced_version, promoted, end_reason, description)
        SELECT rowid, run_id, model_id, kind, trigger, state, created_us, started_us, ended_us, through_seq,
        request_json, result_json, produced_version, promoted, end_reason, description FROM training_runs;
    DROP TABLE training_runs;
    ALTER TABLE training_runs_new RENAME TO training_runs;
    CREATE INDEX training_runs_by_model ON training_runs (model_id, created_us);
    CREATE UNIQUE INDEX training_runs_one_active ON training_runs (model_id) WHERE state IN ('queued', 'running');
    CREATE INDEX training_runs_queued ON training_runs (created_us) WHERE state = 'queued';
    CREATE TABLE alerts_new (
        seq INTEGER PRIMARY KEY,
        alert_id TEXT NOT NULL UNIQUE,
        model_id INTEGER NOT NULL REFERENCES models(id),
        rule TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        value REAL,
        threshold REAL,
        details_json TEXT NOT NULL,
        raised_us INTEGER NOT NULL,
        acknowledged_us INTEGER NOT NULL DEFAULT 0,
        resolved_us INTEGER NOT NULL DEFAULT 0,
        note TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO alerts_new (seq, alert_id, model_id, rule, severity, state, message, value, threshold, details_json,
        raised_us, acknowledged_us, resolved_us, note)
        SELECT rowid, alert_id, model_id, rule, severity, state, message, value, threshold, details_json, raised_us,
        acknowledged_us, resolved_us, note FROM alerts;
    DROP TABLE alerts;
    ALTER TABLE alerts_new RENAME TO alerts;
    UPDATE alerts SET state = 'resolved', resolved_us = raised_us, note = 'resolved when upgrading: a newer alert of its rule was open'
        WHERE state != 'resolved' AND seq NOT IN (SELECT max(seq) FROM alerts WHERE state != 'resolved' GROUP BY model_id, rule);
    CREATE INDEX alerts_by_model_rule ON alerts (model_id, rule, raised_us);
    CREATE UNIQUE INDEX alerts_one_open ON alerts (model_id, rule) WHERE state != 'resolved';
    CREATE TABLE outcome_totals (
        model_id INTEGER PRIMARY KEY REFERENCES models(id),
        outcomes INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        trained_outcomes INTEGER NOT NULL DEFAULT 0,
        importing_until_us INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO outcome_totals (model_id, outcomes, last_seq, trained_outcomes)
        SELECT m.id,
            (SELECT count(*) FROM outcomes o WHERE o.model_id = m.id),
            (SELECT coalesce(max(o.seq), 0) FROM outcomes o WHERE o.model_id = m.id),
            (SELECT count(*) FROM outcomes o WHERE o.model_id = m.id AND o.seq <=
                (SELECT coalesce(max(r.through_seq), 0) FROM training_runs r WHERE r.model_id = m.id))
        FROM models m;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        model_id INTEGER NOT NULL DEFAULT 0,
        subject TEXT NOT NULL DEFAULT '',
        created_us INTEGER NOT NULL
    );
    CREATE INDEX events_by_time ON events (created_us);
    CREATE TABLE run_events (
        run_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        event_json TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        PRIMARY KEY (run_id, n)
    );
    CREATE TABLE replicas (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        address TEXT NOT NULL,
        version TEXT NOT NULL,
        trains INTEGER NOT NULL,
        started_us INTEGER NOT NULL,
        heartbeat_us INTEGER NOT NULL,
        leader INTEGER NOT NULL DEFAULT 0,
        stopped_us INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE schedule (
        task TEXT PRIMARY KEY,
        at_us INTEGER NOT NULL
    )
    """
)

# PostgreSQL: the prediction log's two tables are partitioned by day of created_us
# (store/postgres.py creates and drops the partitions), so their keys include it.
PG_MIGRATIONS: list[str] = [
    """
    CREATE TABLE models (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        schema_json TEXT NOT NULL,
        settings_json TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        updated_us BIGINT NOT NULL
    );
    CREATE TABLE outcomes (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        model_id BIGINT NOT NULL REFERENCES models(id),
        outcome_id TEXT NOT NULL,
        label SMALLINT NOT NULL CHECK (label IN (0, 1)),
        features_json TEXT NOT NULL,
        entities_json TEXT,
        metadata_json TEXT,
        occurred_us BIGINT NOT NULL,
        received_us BIGINT NOT NULL,
        prediction_id TEXT,
        content_hash BYTEA NOT NULL,
        source TEXT NOT NULL,
        UNIQUE (model_id, outcome_id)
    );
    CREATE INDEX outcomes_by_model_seq ON outcomes (model_id, seq);
    CREATE INDEX outcomes_by_model_time ON outcomes (model_id, occurred_us);
    CREATE INDEX outcomes_by_prediction ON outcomes (prediction_id) WHERE prediction_id IS NOT NULL;
    CREATE TABLE outcome_totals (
        model_id BIGINT PRIMARY KEY REFERENCES models(id),
        outcomes BIGINT NOT NULL DEFAULT 0,
        last_seq BIGINT NOT NULL DEFAULT 0,
        trained_outcomes BIGINT NOT NULL DEFAULT 0,
        importing_until_us BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE model_versions (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        model_id BIGINT NOT NULL REFERENCES models(id),
        version BIGINT NOT NULL,
        family TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ready', 'rejected', 'archived')),
        source TEXT NOT NULL,
        training_run_id TEXT,
        parent_version BIGINT NOT NULL DEFAULT 0,
        metrics_json TEXT NOT NULL,
        gate_json TEXT NOT NULL,
        weights_json TEXT NOT NULL,
        lineage_json TEXT NOT NULL,
        calibration TEXT NOT NULL,
        threshold DOUBLE PRECISION NOT NULL,
        artifact BYTEA NOT NULL,
        artifact_sha256 TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_us BIGINT NOT NULL,
        profile_json TEXT NOT NULL DEFAULT '{}',
        UNIQUE (model_id, version)
    );
    CREATE TABLE aliases (
        model_id BIGINT NOT NULL REFERENCES models(id),
        alias TEXT NOT NULL,
        version BIGINT NOT NULL,
        updated_us BIGINT NOT NULL,
        PRIMARY KEY (model_id, alias)
    );
    CREATE TABLE alias_events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        model_id BIGINT NOT NULL REFERENCES models(id),
        alias TEXT NOT NULL,
        version BIGINT NOT NULL,
        previous_version BIGINT NOT NULL,
        reason TEXT NOT NULL,
        created_us BIGINT NOT NULL
    );
    CREATE INDEX alias_events_by_model ON alias_events (model_id, alias, id);
    CREATE TABLE training_runs (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        model_id BIGINT NOT NULL REFERENCES models(id),
        kind TEXT NOT NULL,
        trigger TEXT NOT NULL,
        state TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        started_us BIGINT NOT NULL DEFAULT 0,
        ended_us BIGINT NOT NULL DEFAULT 0,
        through_seq BIGINT NOT NULL DEFAULT 0,
        request_json TEXT NOT NULL,
        result_json TEXT NOT NULL DEFAULT '{}',
        produced_version BIGINT NOT NULL DEFAULT 0,
        promoted SMALLINT NOT NULL DEFAULT 0,
        end_reason TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        worker BIGINT NOT NULL DEFAULT 0,
        heartbeat BIGINT NOT NULL DEFAULT 0,
        cancel_requested SMALLINT NOT NULL DEFAULT 0,
        through_count BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX training_runs_by_model ON training_runs (model_id, created_us);
    CREATE UNIQUE INDEX training_runs_one_active ON training_runs (model_id) WHERE state IN ('queued', 'running');
    CREATE INDEX training_runs_queued ON training_runs (created_us) WHERE state = 'queued';
    CREATE SEQUENCE predictions_seq AS BIGINT;
    CREATE TABLE predictions (
        seq BIGINT NOT NULL DEFAULT nextval('predictions_seq'),
        prediction_id TEXT NOT NULL,
        model_id BIGINT NOT NULL REFERENCES models(id),
        version BIGINT NOT NULL,
        features_json TEXT NOT NULL,
        probability DOUBLE PRECISION NOT NULL,
        label SMALLINT NOT NULL,
        created_us BIGINT NOT NULL,
        entities_json TEXT,
        source TEXT NOT NULL,
        PRIMARY KEY (seq, created_us)
    ) PARTITION BY RANGE (created_us);
    ALTER SEQUENCE predictions_seq OWNED BY predictions.seq;
    CREATE INDEX predictions_by_id ON predictions (prediction_id);
    CREATE INDEX predictions_by_model_time ON predictions (model_id, created_us);
    CREATE INDEX predictions_by_created ON predictions (created_us);
    CREATE TABLE prediction_batches (
        batch_id TEXT NOT NULL,
        model_id BIGINT NOT NULL REFERENCES models(id),
        version BIGINT NOT NULL,
        row_count BIGINT NOT NULL,
        columns_data BYTEA NOT NULL,
        probabilities_data BYTEA NOT NULL,
        threshold DOUBLE PRECISION NOT NULL,
        created_us BIGINT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (batch_id, created_us)
    ) PARTITION BY RANGE (created_us);
    CREATE INDEX prediction_batches_by_model_time ON prediction_batches (model_id, created_us);
    CREATE INDEX prediction_batches_by_created ON prediction_batches (created_us);
    CREATE TABLE log_segments (
        segment BIGINT PRIMARY KEY,
        newest_us BIGINT NOT NULL,
        bytes BIGINT NOT NULL
    );
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
    CREATE TABLE feedback (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        model_id BIGINT NOT NULL REFERENCES models(id),
        feedback_id TEXT NOT NULL,
        recommendation_id TEXT,
        prediction_id TEXT,
        artisan_id TEXT,
        scheme_id TEXT,
        interaction TEXT NOT NULL,
        outcome TEXT,
        rating BIGINT,
        comment TEXT,
        features_json TEXT,
        occurred_us BIGINT NOT NULL,
        received_us BIGINT NOT NULL,
        content_hash BYTEA NOT NULL,
        outcome_id TEXT,
        UNIQUE (model_id, feedback_id)
    );
    CREATE INDEX feedback_by_model_time ON feedback (model_id, occurred_us);
    CREATE TABLE performance_records (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        model_id BIGINT NOT NULL REFERENCES models(id),
        version BIGINT NOT NULL,
        start_us BIGINT NOT NULL,
        end_us BIGINT NOT NULL,
        metrics_json TEXT NOT NULL,
        source TEXT NOT NULL,
        created_us BIGINT NOT NULL
    );
    CREATE INDEX performance_by_model_time ON performance_records (model_id, created_us);
    CREATE TABLE alerts (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        alert_id TEXT NOT NULL UNIQUE,
        model_id BIGINT NOT NULL REFERENCES models(id),
        rule TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        value DOUBLE PRECISION,
        threshold DOUBLE PRECISION,
        details_json TEXT NOT NULL,
        raised_us BIGINT NOT NULL,
        acknowledged_us BIGINT NOT NULL DEFAULT 0,
        resolved_us BIGINT NOT NULL DEFAULT 0,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX alerts_by_model_rule ON alerts (model_id, rule, raised_us);
    CREATE UNIQUE INDEX alerts_one_open ON alerts (model_id, rule) WHERE state != 'resolved';
    CREATE TABLE alert_events (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        alert_id TEXT NOT NULL REFERENCES alerts(alert_id),
        event TEXT NOT NULL,
        created_us BIGINT NOT NULL
    );
    CREATE TABLE events (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        kind TEXT NOT NULL,
        model_id BIGINT NOT NULL DEFAULT 0,
        subject TEXT NOT NULL DEFAULT '',
        created_us BIGINT NOT NULL
    );
    CREATE INDEX events_by_time ON events (created_us);
    CREATE TABLE run_events (
        run_id TEXT NOT NULL,
        n BIGINT NOT NULL,
        event_json TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        PRIMARY KEY (run_id, n)
    );
    CREATE TABLE replicas (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL,
        host TEXT NOT NULL,
        pid BIGINT NOT NULL,
        address TEXT NOT NULL,
        version TEXT NOT NULL,
        trains SMALLINT NOT NULL,
        started_us BIGINT NOT NULL,
        heartbeat_us BIGINT NOT NULL,
        leader SMALLINT NOT NULL DEFAULT 0,
        stopped_us BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE schedule (
        task TEXT PRIMARY KEY,
        at_us BIGINT NOT NULL
    )
    """,
]
