"""Conversions between protobuf messages and domain objects."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2

from .. import settings as ms
from ..errors import InvalidArgument
from ..ingest import MAX_ID_LEN, MAX_MAP_ENTRIES, MAX_TEXT_LEN, OutcomeRecord, new_id
from ..schema import (Column, FeatureSpec, FeatureType, FieldError, LabelSpec, Row, Schema, SchemaError, check_label,
                      check_schema, rows_from_columns)
from ..store import ModelRecord
from .._proto.sahayak.v1 import common_pb2, registry_pb2

MAX_TIMESTAMP_S = 253402300799  # 9999-12-31T23:59:59Z
# Outcomes dated further ahead than this are a client clock or unit bug.
FUTURE_SLACK_US = 86_400_000_000


# --- time ---------------------------------------------------------------

def ts_to_us(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def us_to_ts(us: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def s_to_duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int(round((seconds - whole) * 1e9)))


def duration_to_s(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def check_timestamp(ts: timestamp_pb2.Timestamp, path: str, errors: list[FieldError]) -> bool:
    if not 0 <= ts.seconds <= MAX_TIMESTAMP_S or not 0 <= ts.nanos < 1_000_000_000:
        errors.append(FieldError(path, "timestamp out of range (1970-01-01 to 9999-12-31)"))
        return False
    return True


def time_window(tw: common_pb2.TimeWindow, path: str) -> tuple[int | None, int | None]:
    """A TimeWindow's ends in microseconds (None: open); bad timestamps are INVALID_ARGUMENT."""
    errors: list[FieldError] = []
    start = end = None
    if tw.HasField("start_time") and check_timestamp(tw.start_time, f"{path}.start_time", errors):
        start = ts_to_us(tw.start_time)
    if tw.HasField("end_time") and check_timestamp(tw.end_time, f"{path}.end_time", errors):
        end = ts_to_us(tw.end_time)
    if start is not None and end is not None and end <= start:
        errors.append(FieldError(path, "end_time must be after start_time"))
    if errors:
        raise InvalidArgument.fields(errors)
    return start, end


# --- pagination ---------------------------------------------------------

INT64_MAX = 2**63 - 1


def parse_int64(text: str) -> int | None:
    """A plain ASCII decimal in [0, 2**63 - 1], else None.

    Not ``text.isdigit()`` then ``int(text)``: isdigit() is True for "²" (which
    int() rejects) and for "٣" (which it reads as 3), and SQLite cannot bind a
    number past int64.
    """
    if not text or len(text) > 19 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= INT64_MAX else None


_TOKEN_PREFIX = "p1:"


def encode_token(value: str) -> str:
    """An opaque page token for the last key of a page ("" = no more pages)."""
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + value).encode()).decode() if value else ""


def decode_token(token: str, path: str = "page_token") -> str:
    if not token:
        return ""
    try:
        text = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise InvalidArgument.fields([FieldError(path, "not a page token this server issued")])
    return text[len(_TOKEN_PREFIX):]


# --- features -----------------------------------------------------------

def packed_field(number: int, payload: bytes) -> bytes:
    """One packed repeated field in protobuf's wire format (tag, length, payload), to be merged into a
    message with MergeFromString: the message then reads a whole array in C, where filling the field
    from a Python list converts (and, for an enum, checks) each element."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    """A non-negative int as a protobuf varint."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def packed_doubles(number: int, values: np.ndarray) -> bytes:
    """A ``repeated double`` field: the packed payload is the values as little-endian float64."""
    return packed_field(number, np.ascontiguousarray(values, dtype="<f8").tobytes())


def packed_labels(number: int, positive: np.ndarray) -> bytes:
    """A ``repeated Label`` field from a boolean array: each element one varint byte (both values < 128)."""
    codes = np.where(positive, common_pb2.LABEL_POSITIVE, common_pb2.LABEL_NEGATIVE).astype(np.uint8)
    return packed_field(number, codes.tobytes())


def row_from_proto(features: Mapping[str, common_pb2.FeatureValue], fields: Mapping[str, str] | None = None) -> Row:
    """Feature map -> Row; a FeatureValue with nothing set counts as missing.

    ``fields`` (feature name -> the FeatureValue field its type uses, see value_fields) lets the
    common case skip asking which field is set: a non-default value in the expected field is the
    one set (a oneof holds one). A default or unexpected value is decided by WhichOneof, as without.
    """
    row: Row = {}
    if not fields:
        for name in features:
            fv = features[name]
            kind = fv.WhichOneof("kind")
            if kind is not None:
                row[name] = getattr(fv, kind)
        return row
    expected = fields.get
    for name in features:
        fv = features[name]
        field = expected(name)
        if field is not None:
            value = getattr(fv, field)
            if value:
                row[name] = value
                continue
        kind = fv.WhichOneof("kind")
        if kind is not None:
            row[name] = getattr(fv, kind)
    return row


_VALUE_FIELDS = {FeatureType.NUMERIC: "number_value", FeatureType.CATEGORICAL: "string_value",
                 FeatureType.BOOLEAN: "bool_value"}


def value_fields(schema: Schema) -> dict[str, str]:
    """Feature name -> the FeatureValue field that carries its type's values (for row_from_proto)."""
    return {f.name: _VALUE_FIELDS[f.type] for f in schema.features}


def value_to_proto(value: float | str | bool) -> common_pb2.FeatureValue:
    if isinstance(value, bool):
        return common_pb2.FeatureValue(bool_value=value)
    if isinstance(value, str):
        return common_pb2.FeatureValue(string_value=value)
    return common_pb2.FeatureValue(number_value=value)


def check_string_map(m: Mapping[str, str], path: str, errors: list[FieldError]) -> None:
    if len(m) > MAX_MAP_ENTRIES:
        errors.append(FieldError(path, f"at most {MAX_MAP_ENTRIES} entries"))
        return
    for k, v in m.items():
        if not k or len(k) > MAX_ID_LEN:
            errors.append(FieldError(f"{path}.{k[:40]}", f"keys must be 1-{MAX_ID_LEN} characters"))
        elif len(v) > MAX_TEXT_LEN:
            errors.append(FieldError(f"{path}.{k}", f"values must be at most {MAX_TEXT_LEN} characters"))


def check_id(value: str, path: str, errors: list[FieldError]) -> None:
    if len(value) > MAX_ID_LEN:
        errors.append(FieldError(path, f"at most {MAX_ID_LEN} characters"))
    # isprintable() is False for every whitespace character but the ASCII space.
    elif value and (" " in value or not value.isprintable()):
        errors.append(FieldError(path, "must not contain whitespace or control characters"))


def outcome_from_proto(o: common_pb2.Outcome, now_us: int, prefix: str, source: str) -> tuple[OutcomeRecord, list[FieldError]]:
    """Parse one outcome; problems outside the feature schema are returned, not raised."""
    errors: list[FieldError] = []
    check_id(o.outcome_id, f"{prefix}.outcome_id", errors)
    check_id(o.prediction_id, f"{prefix}.prediction_id", errors)
    if o.label == common_pb2.LABEL_POSITIVE:
        label = True
    elif o.label == common_pb2.LABEL_NEGATIVE:
        label = False
    else:
        label = False
        errors.append(FieldError(f"{prefix}.label", "required: LABEL_POSITIVE or LABEL_NEGATIVE"))
    occurred = now_us
    given = o.HasField("occurred_at")
    if given and check_timestamp(o.occurred_at, f"{prefix}.occurred_at", errors):
        occurred = ts_to_us(o.occurred_at)
        if occurred > now_us + FUTURE_SLACK_US:
            errors.append(FieldError(f"{prefix}.occurred_at", "more than a day in the future"))
    entities: dict[str, str] = {}
    metadata: dict[str, str] = {}
    if o.entities:
        check_string_map(o.entities, f"{prefix}.entities", errors)
        entities = dict(o.entities)
    if o.metadata:
        check_string_map(o.metadata, f"{prefix}.metadata", errors)
        metadata = dict(o.metadata)
    record = OutcomeRecord(
        outcome_id=o.outcome_id or new_id(),
        features=row_from_proto(o.features),
        label=label,
        occurred_at_us=occurred,
        entities=entities,
        metadata=metadata,
        prediction_id=o.prediction_id,
        source=source,
        occurred_at_given=given,
    )
    return record, errors


# --- schema -------------------------------------------------------------

_TYPES = {
    registry_pb2.FEATURE_TYPE_NUMERIC: FeatureType.NUMERIC,
    registry_pb2.FEATURE_TYPE_CATEGORICAL: FeatureType.CATEGORICAL,
    registry_pb2.FEATURE_TYPE_BOOLEAN: FeatureType.BOOLEAN,
}
_TYPES_BACK = {v: k for k, v in _TYPES.items()}


def schema_from_proto(m: registry_pb2.Model) -> Schema:
    errors: list[FieldError] = []
    feats = []
    for i, f in enumerate(m.features):
        ftype = _TYPES.get(f.type)
        if ftype is None:
            errors.append(FieldError(f"model.features[{i}].type", "must be FEATURE_TYPE_NUMERIC, _CATEGORICAL or _BOOLEAN"))
            continue
        feats.append(FeatureSpec(
            name=f.name, type=ftype, required=f.required, description=f.description,
            min=f.min if f.HasField("min") else None, max=f.max if f.HasField("max") else None,
            categories=tuple(f.categories), allow_unknown_categories=f.allow_unknown_categories, group=f.group,
        ))
    label = LabelSpec(
        name=m.label.name or "label",
        positive_class=m.label.positive_class or "positive",
        negative_class=m.label.negative_class or "negative",
        description=m.label.description,
    )
    # Every problem at once; the declaration's own checks only when every feature has its type (the indices match).
    problems = check_label(label) + ([] if errors else check_schema(feats))
    errors += [FieldError("model." + e.field, e.reason) for e in problems]
    if errors:
        raise InvalidArgument.fields(errors)
    try:
        return Schema(tuple(feats), label)
    except SchemaError as exc:
        raise InvalidArgument.fields([FieldError("model." + e.field, e.reason) for e in exc.errors]) from None


def schema_to_proto(schema: Schema, target: registry_pb2.Model) -> None:
    for f in schema.features:
        spec = target.features.add(
            name=f.name, type=_TYPES_BACK[f.type], required=f.required, description=f.description,
            categories=f.categories, allow_unknown_categories=f.allow_unknown_categories, group=f.group,
        )
        if f.min is not None:
            spec.min = f.min
        if f.max is not None:
            spec.max = f.max
    target.label.CopyFrom(registry_pb2.LabelSpec(
        name=schema.label.name, positive_class=schema.label.positive_class,
        negative_class=schema.label.negative_class, description=schema.label.description,
    ))


# --- settings -----------------------------------------------------------

_FAMILY_PREFIX = "MODEL_FAMILY_"
_SPLIT_PREFIX = "SPLIT_STRATEGY_"
# proto field name -> domain field name where they differ (durations carry a unit).
_RENAMES = {"retrain_interval": "retrain_interval_s", "alert_cooldown": "alert_cooldown_s",
            "freshness_limit": "freshness_limit_s"}


def _family_name(value: int, path: str) -> str:
    try:
        name = registry_pb2.ModelFamily.Name(value)  # type: ignore[arg-type]
    except ValueError:
        name = ""
    if not name.startswith(_FAMILY_PREFIX) or value == registry_pb2.MODEL_FAMILY_UNSPECIFIED:
        raise InvalidArgument.fields([FieldError(path, f"unknown model family {value}")])
    return name[len(_FAMILY_PREFIX):].lower()


def settings_proto_to_dict(p: registry_pb2.ModelSettings, path: str = "model.settings") -> dict[str, Any]:
    """Only the fields the message sets, keyed by domain names."""

    def walk(msg: Any, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in msg.ListFields():
            name = _RENAMES.get(field.name, field.name)
            if field.message_type is not None and field.message_type.full_name == "google.protobuf.Duration":
                seconds = duration_to_s(value)
                if not math.isfinite(seconds) or seconds < 0:
                    raise InvalidArgument.fields([FieldError(f"{where}.{field.name}", "must not be negative")])
                out[name] = seconds
            elif field.name == "families":
                out[name] = tuple(_family_name(v, f"{where}.families") for v in value)
            elif field.name == "split":
                label = registry_pb2.SplitStrategy.Name(value) if value in registry_pb2.SplitStrategy.values() else ""
                out[name] = label[len(_SPLIT_PREFIX):].lower() if label else f"unknown({value})"
            elif field.message_type is not None:
                out[name] = walk(value, f"{where}.{field.name}")
            else:
                out[name] = value
        return out

    return walk(p, path)


def settings_to_proto(s: ms.ModelSettings) -> registry_pb2.ModelSettings:
    t, g, m = s.training, s.gate, s.monitoring
    return registry_pb2.ModelSettings(
        decision_threshold=s.decision_threshold,
        training=registry_pb2.TrainingSettings(
            retrain_interval=s_to_duration(t.retrain_interval_s),
            incremental_every=t.incremental_every,
            validation_fraction=t.validation_fraction,
            split=registry_pb2.SplitStrategy.Value(_SPLIT_PREFIX + t.split.upper()),
            min_samples=t.min_samples,
            families=[registry_pb2.ModelFamily.Value(_FAMILY_PREFIX + f.upper()) for f in t.families],
            logistic_regression=registry_pb2.LogisticRegressionParams(**vars(t.logistic_regression)),
            gradient_boosting=registry_pb2.GradientBoostingParams(**vars(t.gradient_boosting)),
            random_seed=t.random_seed,
            schedule_enabled=t.schedule_enabled,
        ),
        gate=registry_pb2.QualityGate(**vars(g)),
        monitoring=registry_pb2.MonitoringSettings(
            drift_psi_threshold=m.drift_psi_threshold,
            drift_share=m.drift_share,
            alert_cooldown=s_to_duration(m.alert_cooldown_s),
            freshness_limit=s_to_duration(m.freshness_limit_s),
            retrain_on_breach=m.retrain_on_breach,
        ),
    )


def settings_from_partial(partial: dict[str, Any], base: ms.ModelSettings) -> ms.ModelSettings:
    try:
        return ms.from_dict(partial, base)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument.fields([FieldError("model.settings", str(exc))]) from None


def apply_update_mask(
    current: ms.ModelSettings, defaults: ms.ModelSettings, partial: dict[str, Any], paths: list[str]
) -> ms.ModelSettings:
    """AIP-134 semantics: a masked field takes the request's value, or the server default if unset."""
    merged = ms.to_dict(current)
    base = ms.to_dict(defaults)
    for i, path in enumerate(paths):
        parts = [_RENAMES.get(p, p) for p in path.split(".")]
        target, src_default, src = merged, base, partial
        for depth, key in enumerate(parts):
            if not isinstance(target, dict) or key not in target:
                raise InvalidArgument.fields([FieldError(f"update_mask.paths[{i}]", f"unknown field {path!r}")])
            last = depth == len(parts) - 1
            if last:
                value = src.get(key) if isinstance(src, dict) else None
                if isinstance(src_default[key], dict):
                    value = _deep_merge(src_default[key], value or {})
                elif value is None:
                    value = src_default[key]
                target[key] = value
            else:
                target, src_default = target[key], src_default[key]
                src = src.get(key, {}) if isinstance(src, dict) else {}
    return settings_from_partial(merged, ms.ModelSettings())


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def model_to_proto(record: ModelRecord) -> registry_pb2.Model:
    m = registry_pb2.Model(
        name=record.name,
        description=record.description,
        settings=settings_to_proto(record.settings),
        create_time=us_to_ts(record.created_us),
        update_time=us_to_ts(record.updated_us),
    )
    schema_to_proto(record.schema, m)
    return m


def columns_from_proto(cols: common_pb2.FeatureColumns) -> list[Column]:
    """Columns with their numbers already in numpy (converted once, read by every step)."""
    out = []
    for c in cols.columns:
        numbers = None
        if len(c.numbers):
            # np.array reads a protobuf repeated field in C (6x np.fromiter's per-element path).
            numbers = np.array(c.numbers, dtype=np.float64)
        codes = None
        if len(c.codes) or len(c.dictionary):
            codes = np.array(c.codes, dtype=np.int64)
        # Materialise the strings once: each pass over a protobuf container makes new str objects.
        out.append(Column(c.name, numbers=numbers, strings=list(c.strings) if len(c.strings) else None,
                          codes=codes, dictionary=list(c.dictionary) if codes is not None else None))
    return out


def outcomes_from_columns(
    cols: common_pb2.OutcomeColumns, schema: Schema, now_us: int, source: str
) -> list[tuple[OutcomeRecord, list[FieldError]]]:
    """Parse a columnar batch; the feature values come out already checked against ``schema``."""
    n = cols.features.row_count
    problems: list[FieldError] = []
    if n < 0:
        problems.append(FieldError("columns.features.row_count", "must not be negative"))
    for name, values, required in (
        ("labels", cols.labels, True), ("outcome_ids", cols.outcome_ids, False),
        ("occurred_at_micros", cols.occurred_at_micros, False), ("prediction_ids", cols.prediction_ids, False),
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
            [FieldError(e.field.replace("outcome.features", "columns.features.columns", 1), e.reason) for e in exc.errors]
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
            outcome_id=oid or new_id(), features=rows[i], label=lab == common_pb2.LABEL_POSITIVE,
            occurred_at_us=when, entities=entities, metadata=metadata, prediction_id=pid, source=source,
            occurred_at_given=given,
        )
        out.append((record, errors))
    return out


# --- enums --------------------------------------------------------------

def enum_to_proto(enum: Any, prefix: str, name: str) -> Any:
    """"logistic_regression" -> MODEL_FAMILY_LOGISTIC_REGRESSION (0 if unknown)."""
    try:
        return int(enum.Value(prefix + name.upper()))
    except ValueError:
        return 0


def enum_from_proto(enum: Any, prefix: str, value: int, path: str, allow_unspecified: bool = True) -> str:
    """MODEL_FAMILY_LOGISTIC_REGRESSION -> "logistic_regression"; "" for UNSPECIFIED."""
    if value == 0 and allow_unspecified:
        return ""
    try:
        name = enum.Name(value)
    except ValueError:
        name = ""
    if not name or value == 0:
        raise InvalidArgument.fields([FieldError(path, f"unknown value {value}")])
    return str(name[len(prefix):].lower())


# --- metrics, versions, runs --------------------------------------------

def _num(value: Any) -> float:
    """A stored metric: JSON keeps an undefined (NaN) one as null."""
    return math.nan if value is None else float(value)


def metrics_to_proto(m: Mapping[str, Any] | None) -> common_pb2.ClassificationMetrics:
    if not m:
        return common_pb2.ClassificationMetrics()
    f = {k: _num(m[k]) for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss",
                                  "brier_score", "calibration_error", "max_calibration_error", "threshold")}
    return common_pb2.ClassificationMetrics(
        count=int(m["count"]), positives=int(m["positives"]), **f,
        confusion=common_pb2.ConfusionMatrix(
            true_positives=int(m["true_positives"]), false_positives=int(m["false_positives"]),
            true_negatives=int(m["true_negatives"]), false_negatives=int(m["false_negatives"])),
    )


def gate_to_proto(g: Mapping[str, Any] | None) -> registry_pb2.GateResult:
    if not g:
        return registry_pb2.GateResult()
    return registry_pb2.GateResult(
        passed=bool(g["passed"]), baseline_version=int(g["baseline_version"]), reasons=list(g["reasons"]),
        checks=[registry_pb2.GateCheck(metric=c["metric"], comparison=c["comparison"], threshold=_num(c["threshold"]),
                                       value=_num(c["value"]), passed=c["passed"]) for c in g["checks"]],
    )


def version_to_proto(model_name: str, v: Any) -> registry_pb2.ModelVersion:
    lineage = v.lineage or {}
    params = lineage.get("parameters") or {}
    out = registry_pb2.ModelVersion(
        model=model_name, version=v.version,
        family=enum_to_proto(registry_pb2.ModelFamily, "MODEL_FAMILY_", v.family),
        status=enum_to_proto(registry_pb2.ModelVersionStatus, "MODEL_VERSION_STATUS_", v.status),
        aliases=list(v.aliases), validation_metrics=metrics_to_proto(v.metrics), gate=gate_to_proto(v.gate),
        feature_weights=[registry_pb2.FeatureWeight(feature=f, weight=_num(w)) for f, w in v.weights],
        lineage=registry_pb2.Lineage(
            source=enum_to_proto(registry_pb2.VersionSource, "VERSION_SOURCE_", v.source),
            training_run_id=v.training_run_id, parent_version=v.parent_version,
            outcome_count=int(lineage.get("outcome_count", 0)),
            parameters={str(k): str(val) for k, val in params.items()},
            artifact_sha256=v.artifact_sha256,
        ),
        calibration=enum_to_proto(registry_pb2.CalibrationMethod, "CALIBRATION_METHOD_", v.calibration),
        decision_threshold=v.threshold, create_time=us_to_ts(v.created_us), description=v.description,
        artifact_size_bytes=v.artifact_size,
    )
    for key, field in (("first_outcome_us", "first_outcome_time"), ("last_outcome_us", "last_outcome_time")):
        if lineage.get(key):
            getattr(out.lineage, field).CopyFrom(us_to_ts(int(lineage[key])))
    if lineage.get("imported_from"):
        out.lineage.parameters["imported_from"] = str(lineage["imported_from"])
    return out


def alias_event_to_proto(model_name: str, e: Any) -> registry_pb2.AliasEvent:
    return registry_pb2.AliasEvent(event_id=e.event_id, model=model_name, alias=e.alias, version=e.version,
                                   previous_version=e.previous_version, reason=e.reason, time=us_to_ts(e.created_us))


def run_to_proto(model_name: str, run: Any) -> Any:
    from .._proto.sahayak.v1 import training_pb2

    result = run.result or {}
    data = result.get("data") or {}
    out = training_pb2.TrainingRun(
        run_id=run.run_id, model=model_name,
        kind=enum_to_proto(training_pb2.TrainingKind, "TRAINING_KIND_", run.kind),
        trigger=enum_to_proto(training_pb2.TrainingTrigger, "TRAINING_TRIGGER_", run.trigger),
        state=enum_to_proto(training_pb2.TrainingRunState, "TRAINING_RUN_STATE_", run.state),
        create_time=us_to_ts(run.created_us),
        data=training_pb2.DataSummary(
            outcome_count=int(data.get("outcome_count", 0)), train_count=int(data.get("train_count", 0)),
            validation_count=int(data.get("validation_count", 0)), positives=int(data.get("positives", 0))),
        parameters={str(k): str(v) for k, v in (result.get("parameters") or {}).items()},
        produced_version=run.produced_version, gate=gate_to_proto(result.get("gate")), promoted=run.promoted,
        end_reason=run.end_reason, description=run.description,
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
            iterations=int(c["iterations"]), final_loss=_num(c["final_loss"]),
            fit_duration=s_to_duration(_num(c["fit_seconds"])), selected=bool(c["selected"]),
        )
    return out


def contributions_to_proto(parts: Any, row: Mapping[str, Any], target: Any) -> None:
    add = target.add
    for name, value in parts:
        c = add(feature=name, contribution=value)
        v = row.get(name)
        if v is None:
            continue
        if v.__class__ is bool:
            c.value.bool_value = v
        elif v.__class__ is str:
            c.value.string_value = v
        else:
            c.value.number_value = v
