"""Converters of TrainingService: outcomes sent as columns, and training runs."""

from __future__ import annotations

from typing import Any


from ..errors import InvalidArgument
from ..ingest import MAX_ID_LEN, MAX_MAP_ENTRIES, OutcomeRecord, new_id
from ..schema import FieldError, Schema, SchemaError, rows_from_columns
from .._proto.sahayak.v1 import common_pb2, registry_pb2
from .convert_registry import gate_to_proto
from .convert import (
    FUTURE_SLACK_US,
    MAX_TIMESTAMP_S,
    stored_number,
    check_id,
    columns_from_proto,
    enum_to_proto,
    metrics_to_proto,
    s_to_duration,
    us_to_ts,
)


def outcomes_from_columns(
    cols: common_pb2.OutcomeColumns, schema: Schema, now_us: int, source: str
) -> list[tuple[OutcomeRecord, list[FieldError]]]:
    """Parse a columnar batch; the feature values come out already checked against ``schema``."""
    n = cols.features.row_count
    problems: list[FieldError] = []
    if n < 0:
        problems.append(FieldError("columns.features.row_count", "must not be negative"))
    for name, values, required in (
        ("labels", cols.labels, True),
        ("outcome_ids", cols.outcome_ids, False),
        ("occurred_at_micros", cols.occurred_at_micros, False),
        ("prediction_ids", cols.prediction_ids, False),
    ):
        if len(values) != n and (required or len(values)):
            problems.append(FieldError(f"columns.{name}", f"has {len(values)} entries for {n} rows"))
    for group, string_cols in (("entities", cols.entities), ("metadata", cols.metadata)):
        for i, sc in enumerate(string_cols):
            if len(sc.values) != n:
                problems.append(FieldError(f"columns.{group}[{i}]", f"has {len(sc.values)} entries for {n} rows"))
            if not sc.name or len(sc.name) > MAX_ID_LEN:
                problems.append(FieldError(f"columns.{group}[{i}].name", f"must be 1-{MAX_ID_LEN} characters"))
    if len(cols.entities) > MAX_MAP_ENTRIES or len(cols.metadata) > MAX_MAP_ENTRIES:
        problems.append(FieldError("columns.entities", f"at most {MAX_MAP_ENTRIES} entity and metadata columns each"))
    if problems:
        raise InvalidArgument.fields(problems)
    try:
        rows, row_errors = rows_from_columns(schema, n, columns_from_proto(cols.features), "outcome.features")
    except SchemaError as exc:
        raise InvalidArgument.fields(
            [
                FieldError(e.field.replace("outcome.features", "columns.features.columns", 1), e.reason)
                for e in exc.errors
            ]
        ) from None
    labels = cols.labels
    ids = cols.outcome_ids or [""] * n
    times = cols.occurred_at_micros or [0] * n
    preds = cols.prediction_ids or [""] * n
    ent_cols = [(c.name, c.values) for c in cols.entities]
    meta_cols = [(c.name, c.values) for c in cols.metadata]
    limit = now_us + FUTURE_SLACK_US
    out = []
    for i in range(n):
        errors: list[FieldError] = []
        if i in row_errors:
            errors.append(row_errors[i])
        oid, pid, when, lab = ids[i], preds[i], times[i], labels[i]
        given = when != 0
        if oid:
            check_id(oid, "outcome.outcome_id", errors)
        if pid:
            check_id(pid, "outcome.prediction_id", errors)
        if lab != common_pb2.LABEL_POSITIVE and lab != common_pb2.LABEL_NEGATIVE:
            errors.append(FieldError("outcome.label", "required: LABEL_POSITIVE or LABEL_NEGATIVE"))
        if when == 0:
            when = now_us
        elif not 0 < when <= MAX_TIMESTAMP_S * 1_000_000:
            errors.append(FieldError("outcome.occurred_at", "timestamp out of range"))
        elif when > limit:
            errors.append(FieldError("outcome.occurred_at", "more than a day in the future"))
        entities = {name: values[i] for name, values in ent_cols if values[i]} if ent_cols else {}
        metadata = {name: values[i] for name, values in meta_cols if values[i]} if meta_cols else {}
        record = OutcomeRecord(
            outcome_id=oid or new_id(),
            features=rows[i],
            label=lab == common_pb2.LABEL_POSITIVE,
            occurred_at_us=when,
            entities=entities,
            metadata=metadata,
            prediction_id=pid,
            source=source,
            occurred_at_given=given,
        )
        out.append((record, errors))
    return out


def run_to_proto(model_name: str, run: Any) -> Any:
    from .._proto.sahayak.v1 import training_pb2

    result = run.result or {}
    data = result.get("data") or {}
    out = training_pb2.TrainingRun(
        run_id=run.run_id,
        model=model_name,
        kind=enum_to_proto(training_pb2.TrainingKind, "TRAINING_KIND_", run.kind),
        trigger=enum_to_proto(training_pb2.TrainingTrigger, "TRAINING_TRIGGER_", run.trigger),
        state=enum_to_proto(training_pb2.TrainingRunState, "TRAINING_RUN_STATE_", run.state),
        create_time=us_to_ts(run.created_us),
        data=training_pb2.DataSummary(
            outcome_count=int(data.get("outcome_count", 0)),
            train_count=int(data.get("train_count", 0)),
            validation_count=int(data.get("validation_count", 0)),
            positives=int(data.get("positives", 0)),
        ),
        parameters={str(k): str(v) for k, v in (result.get("parameters") or {}).items()},
        produced_version=run.produced_version,
        gate=gate_to_proto(result.get("gate")),
        promoted=run.promoted,
        end_reason=run.end_reason,
        description=run.description,
    )
    if run.started_us:
        out.start_time.CopyFrom(us_to_ts(run.started_us))
    if run.ended_us:
        out.end_time.CopyFrom(us_to_ts(run.ended_us))
    if "duration_s" in result:
        out.duration.CopyFrom(s_to_duration(float(result["duration_s"])))
    for key, field in (("first_outcome_us", "first_outcome_time"), ("last_outcome_us", "last_outcome_time")):
        if data.get(key):
            getattr(out.data, field).CopyFrom(us_to_ts(int(data[key])))
    for c in result.get("candidates") or []:
        out.candidates.add(
            family=enum_to_proto(registry_pb2.ModelFamily, "MODEL_FAMILY_", c["family"]),
            calibration=enum_to_proto(registry_pb2.CalibrationMethod, "CALIBRATION_METHOD_", c["calibration"]),
            validation_metrics=metrics_to_proto(c["metrics"]),
            stop_reason=enum_to_proto(training_pb2.StopReason, "STOP_REASON_", c["stop_reason"]),
            iterations=int(c["iterations"]),
            final_loss=stored_number(c["final_loss"]),
            fit_duration=s_to_duration(stored_number(c["fit_seconds"])),
            selected=bool(c["selected"]),
        )
    return out
