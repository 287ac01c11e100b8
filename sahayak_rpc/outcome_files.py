"""Reading outcome files (CSV or JSON Lines) for `sahayak-rpc import`.

JSONL: one object per line: {"features": {...}, "label": ..., "outcome_id",
"entities", "metadata", "occurred_at" (ISO 8601), "prediction_id"}.
CSV: a header row; columns named after features, the label's column (named
after the model's label, or `label`), and the optional `outcome_id`,
`occurred_at`, `prediction_id`, `entity.<key>` and `meta.<key>` (a column
that names a feature is that feature, whatever its name looks like). An empty
cell is a missing value. A label is true/false, 1/0, or the model's
positive/negative class name (e.g. approved/rejected).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from .client import OutcomeInput
from .schema import FeatureType, LabelSpec, Row, Schema

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


class FileRowError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


@dataclass(frozen=True)
class ParsedLine:
    line: int
    outcome: OutcomeInput | None
    error: str = ""


def parse_label(value: Any, label: LabelSpec) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text == label.positive_class.lower():
        return True
    if text in _FALSE or text == label.negative_class.lower():
        return False
    raise ValueError(f"label {value!r} is not true/false, 1/0, {label.positive_class} or {label.negative_class}")


def _parse_time(value: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _cell(value: str, ftype: FeatureType | None) -> float | str | bool | None:
    if value == "":
        return None
    if ftype is FeatureType.NUMERIC:
        return float(value)
    if ftype is FeatureType.BOOLEAN:
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean")
    return value


def _json_features(raw: dict[str, Any], schema: Schema) -> Row:
    row: Row = {}
    for name, value in raw.items():
        if value is None:
            continue
        spec = schema.feature(name)
        if (
            spec is not None
            and spec.type is FeatureType.NUMERIC
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            value = float(value)
        row[name] = value
    return row


def read_outcomes(path: Path, schema: Schema) -> Iterator[ParsedLine]:
    """Yield each line's outcome, or the reason it could not be read."""
    with path.open(newline="") as fh:
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            yield from _read_jsonl(fh, schema)
        else:
            yield from _read_csv(fh, schema)


def _read_jsonl(fh: TextIO, schema: Schema) -> Iterator[ParsedLine]:
    for n, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict) or not isinstance(obj.get("features"), dict):
                raise ValueError('expected an object with a "features" object')
            if "label" not in obj:
                raise ValueError('missing "label"')
            yield ParsedLine(
                n,
                OutcomeInput(
                    features=_json_features(obj["features"], schema),
                    label=parse_label(obj["label"], schema.label),
                    outcome_id=str(obj.get("outcome_id") or ""),
                    entities={str(k): str(v) for k, v in (obj.get("entities") or {}).items()},
                    metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
                    occurred_at=_parse_time(obj["occurred_at"]) if obj.get("occurred_at") else None,
                    prediction_id=str(obj.get("prediction_id") or ""),
                ),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            yield ParsedLine(n, None, str(exc))


def _read_csv(fh: TextIO, schema: Schema) -> Iterator[ParsedLine]:
    reader = csv.DictReader(fh)
    header = reader.fieldnames or []
    label_column = (
        schema.label.name if schema.label.name in header and schema.feature(schema.label.name) is None else "label"
    )
    if label_column not in header:
        yield ParsedLine(1, None, f"the header must have the label's column ({schema.label.name!r} or 'label')")
        return
    special = {label_column, "outcome_id", "occurred_at", "prediction_id"}
    for record in reader:
        n = reader.line_num
        try:
            features: Row = {}
            entities: dict[str, str] = {}
            metadata: dict[str, str] = {}
            for key, value in record.items():
                if key is None:
                    raise ValueError("more cells than header columns")
                spec = schema.feature(key)
                if spec is not None:
                    parsed = _cell(value or "", spec.type)
                    if parsed is not None:
                        features[key] = parsed
                elif key in special:
                    continue
                elif key.startswith("entity."):
                    if value:
                        entities[key[7:]] = value
                elif key.startswith("meta."):
                    if value:
                        metadata[key[5:]] = value
                elif value:  # (not a feature: the server names it in its answer)
                    features[key] = value
            when = record.get("occurred_at") or ""
            yield ParsedLine(
                n,
                OutcomeInput(
                    features=features,
                    label=parse_label(record[label_column], schema.label),
                    outcome_id=record.get("outcome_id") or "",
                    entities=entities,
                    metadata=metadata,
                    occurred_at=_parse_time(when) if when else None,
                    prediction_id=record.get("prediction_id") or "",
                ),
            )
        except (ValueError, TypeError) as exc:
            yield ParsedLine(n, None, str(exc))
