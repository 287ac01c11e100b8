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
