"""feedback: user reactions to recommendations, idempotent by (model, feedback_id)."""

from __future__ import annotations

from typing import Any

import orjson

from ..feedback import FeedbackRecord, Reaction
from .database import Database, time_clause

_COLUMNS = (
    "model_id",
    "feedback_id",
    "recommendation_id",
    "prediction_id",
    "artisan_id",
    "scheme_id",
    "interaction",
    "outcome",
    "rating",
    "comment",
    "features_json",
    "occurred_us",
    "received_us",
    "content_hash",
    "outcome_id",
)


class FeedbackRepository:
    """The feedback table: user reactions to recommendations, idempotent by (model, feedback_id)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def insert(self, model_id: int, records: list[FeedbackRecord], received_us: int) -> list[str]:
        """Store new records in one transaction; per record "inserted", "duplicate" or "conflict" (its id
        is taken by other content). Idempotent by (model, feedback_id), decided by the unique key."""
        rows, hashes = [], []
        for rec in records:
            digest = rec.content_hash()
            hashes.append(digest)
            rows.append(
                (
                    model_id,
                    rec.feedback_id,
                    rec.recommendation_id or None,
                    rec.prediction_id or None,
                    rec.artisan_id or None,
                    rec.scheme_id or None,
                    rec.interaction,
                    rec.outcome or None,
                    rec.rating or None,
                    rec.comment or None,
                    orjson.dumps(rec.features).decode() if rec.features else None,
                    rec.occurred_at_us,
                    received_us,
                    digest,
                    rec.training_outcome_id if rec.outcome else None,
                )
            )
        with self._db.write() as conn:
            stored = conn.insert_new("feedback", _COLUMNS, rows, ("model_id", "feedback_id"))
            others = [rec.feedback_id for rec, new in zip(records, stored) if not new]
            known: dict[str, bytes] = {}
            if others:
                where, args = conn.any_of("feedback_id", others)
                known = {
                    fid: bytes(h)
                    for fid, h in conn.execute(
                        f"SELECT feedback_id, content_hash FROM feedback WHERE model_id = ? AND {where}",
                        (model_id, *args),
                    )
                }
        return [
            "inserted" if new else "duplicate" if known.get(rec.feedback_id) == digest else "conflict"
            for rec, digest, new in zip(records, hashes, stored, strict=True)
        ]

    def summary_rows(self, model_id: int, start_us: int | None, end_us: int | None, scheme_id: str) -> list[Reaction]:
        """Each feedback of the model that occurred in [start_us, end_us) (None: unbounded), of one scheme
        when ``scheme_id`` is given: its scheme, interaction, outcome and rating ("" or 0 when absent)."""
        sql = (
            "SELECT coalesce(scheme_id, ''), interaction, coalesce(outcome, ''), coalesce(rating, 0)"
            " FROM feedback WHERE model_id = ?"
        )
        window_sql, window_args = time_clause("occurred_us", start_us, end_us)
        sql += window_sql
        args: list[Any] = [model_id, *window_args]
        if scheme_id:
            sql += " AND scheme_id = ?"
            args.append(scheme_id)
        return [Reaction(str(s), str(i), str(o), int(r)) for s, i, o, r in self._db.reader().execute(sql, args)]
