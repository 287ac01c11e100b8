"""Schema migrations, applied in order; PRAGMA user_version records the last one.

Never edit a released migration: append a new one.
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
