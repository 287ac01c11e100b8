"""Conversions between protobuf messages and domain objects shared by the services (times, page tokens,
ids, maps, enums, metrics, feature values and columns, outcomes). Each service's own are in
convert_<service>.py (registry, training, inference); monitor, feedback and OIP need only these."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2

from ..errors import InvalidArgument
from ..ingest import MAX_ID_LEN, MAX_MAP_ENTRIES, MAX_TEXT_LEN, OutcomeRecord, new_id
from ..schema import Column, FeatureType, FieldError, Row, Schema
from .._proto.sahayak.v1 import common_pb2

MAX_TIMESTAMP_S = 253402300799  # 9999-12-31T23:59:59Z


# Outcomes dated further ahead than this are a client clock or unit bug.
FUTURE_SLACK_US = 86_400_000_000


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
    return text[len(_TOKEN_PREFIX) :]


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


_VALUE_FIELDS = {
    FeatureType.NUMERIC: "number_value",
    FeatureType.CATEGORICAL: "string_value",
    FeatureType.BOOLEAN: "bool_value",
}


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


def outcome_from_proto(
    o: common_pb2.Outcome, now_us: int, prefix: str, source: str
) -> tuple[OutcomeRecord, list[FieldError]]:
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
        out.append(
            Column(
                c.name,
                numbers=numbers,
                strings=list(c.strings) if len(c.strings) else None,
                codes=codes,
                dictionary=list(c.dictionary) if codes is not None else None,
            )
        )
    return out


def enum_to_proto(enum: Any, prefix: str, name: str) -> Any:
    """ "logistic_regression" -> MODEL_FAMILY_LOGISTIC_REGRESSION (0 if unknown)."""
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
    return str(name[len(prefix) :].lower())


def stored_number(value: Any) -> float:
    """A stored metric: JSON keeps an undefined (NaN) one as null."""
    return math.nan if value is None else float(value)


# The metrics CompareModelVersions takes the difference of (metrics_to_proto sends these and two more).
COMPARED_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier_score",
                    "calibration_error")  # fmt: skip


def metrics_to_proto(m: Mapping[str, Any] | None) -> common_pb2.ClassificationMetrics:
    if not m:
        return common_pb2.ClassificationMetrics()
    f = {k: stored_number(m[k]) for k in (*COMPARED_METRICS, "max_calibration_error", "threshold")}
    return common_pb2.ClassificationMetrics(
        count=int(m["count"]),
        positives=int(m["positives"]),
        **f,
        confusion=common_pb2.ConfusionMatrix(
            true_positives=int(m["true_positives"]),
            false_positives=int(m["false_positives"]),
            true_negatives=int(m["true_negatives"]),
            false_negatives=int(m["false_negatives"]),
        ),
    )
