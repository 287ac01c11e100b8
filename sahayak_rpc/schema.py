"""Feature schemas: what a model's rows look like, and row validation.

A row is a ``dict`` from feature name to ``float`` (numeric), ``str``
(categorical) or ``bool`` (boolean); a missing feature is an absent key.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

FeatureValue = float | str | bool
Row = dict[str, FeatureValue]

# Feature and label names as CSV headers and pandas columns have them: letters of either case, digits,
# "_", "." and "-", and spaces inside (not at either end); 1-64 characters.
NAME_RE = re.compile(r"^[A-Za-z0-9_.-](?:[A-Za-z0-9_. -]{0,62}[A-Za-z0-9_.-])?$")
NAME_RULE = "1-64 letters, digits, '_', '.', '-', and spaces inside"
MODEL_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MAX_CATEGORY_LEN = 256
MAX_FEATURES = 1000
# The largest magnitude a numeric value may have, whatever its feature's bounds: the
# portable artifact's bound (artifact.MAX_MAGNITUDE). A stored value past it made every
# later training run of its model fail (means, scales, tree thresholds past the bound).
MAX_MAGNITUDE = 1e100


class FeatureType(enum.IntEnum):
    NUMERIC = 1
    CATEGORICAL = 2
    BOOLEAN = 3


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    type: FeatureType
    required: bool = False
    description: str = ""
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    allow_unknown_categories: bool = False
    group: str = ""


@dataclass(frozen=True)
class LabelSpec:
    name: str = "label"
    positive_class: str = "positive"
    negative_class: str = "negative"
    description: str = ""


@dataclass(frozen=True)
class FieldError:
    """A problem with one field: a dotted path (``features.age``) and why."""

    field: str
    reason: str


class SchemaError(ValueError):
    """A schema declaration that cannot be used."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.reason}" for e in errors))
        self.errors = errors


# A feature's check on validate_row's fast path: (kind: 1 numeric, 2 categorical, 3 boolean; the lowest and
# highest number allowed; the categories allowed, None for any).
FeatureCheck = tuple[int, float, float, frozenset[str] | None]


@dataclass(frozen=True)
class Schema:
    features: tuple[FeatureSpec, ...]
    label: LabelSpec = field(default_factory=LabelSpec)
    # Worked out from the features in __post_init__: not arguments, not compared or shown.
    _by_name: dict[str, FeatureSpec] = field(init=False, repr=False, compare=False)
    _required: frozenset[str] = field(init=False, repr=False, compare=False)
    _checks: dict[str, FeatureCheck] = field(init=False, repr=False, compare=False)
    _categories: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        errors = check_schema(self.features)
        if errors:
            raise SchemaError(errors)
        by_name = {f.name: f for f in self.features}
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_required", frozenset(f.name for f in self.features if f.required))
        # Bounds within the magnitude limit, so an infinity or a huge value fails them too.
        big = MAX_MAGNITUDE
        object.__setattr__(self, "_checks", {
            f.name: (
                {FeatureType.NUMERIC: 1, FeatureType.CATEGORICAL: 2, FeatureType.BOOLEAN: 3}[f.type],
                -big if f.min is None else max(f.min, -big),  # NaN fails both bounds: the slow path names it
                big if f.max is None else min(f.max, big),
                None if f.allow_unknown_categories else frozenset(f.categories),
            )
            for f in self.features
        })
        object.__setattr__(
            self,
            "_categories",
            {f.name: frozenset(f.categories) for f in self.features},
        )

    def feature(self, name: str) -> FeatureSpec | None:
        return self._by_name.get(name)

    def bounds(self, name: str) -> tuple[float, float]:
        """The lowest and highest value feature ``name`` may take, as validation applies them: its declared
        min and max, within the magnitude limit (±MAX_MAGNITUDE where none is declared)."""
        _, lo, hi, _ = self._checks[name]
        return lo, hi

    def categories_of(self, name: str) -> frozenset[str]:
        """Feature ``name``'s declared categories."""
        return self._categories[name]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def validate_row(self, row: Mapping[str, FeatureValue], prefix: str = "features",
                     required: bool = True) -> list[FieldError]:
        """Every problem with ``row`` against this schema (empty: valid).

        ``required=False`` checks only the values present (for part of a row).
        """
        errors: list[FieldError] = []
        by_name = self._by_name
        checks = self._checks
        # The values as Any: the fast path below tests each one's exact class (``cls is float``: no subclass,
        # no bool for a number), which a type checker cannot follow through ``cls``; the slow path tests
        # ``type(value)`` likewise.
        values: Mapping[str, Any] = row
        for name, value in values.items():
            check = checks.get(name)
            if check is not None:
                # The common case, decided with no attribute look-ups: the right
                # kind, finite and in bounds, or a known category.
                kind, lo, hi, cats = check
                cls = value.__class__
                if kind == 1 and cls is float and lo <= value <= hi:
                    continue
                if kind == 2 and cls is str and (cats is None or value in cats) and len(value) <= MAX_CATEGORY_LEN:
                    continue
                if kind == 3 and cls is bool:
                    continue
            spec = by_name.get(name)
            if spec is None:
                errors.append(FieldError(f"{prefix}.{name}", "unknown feature"))
                continue
            vtype = type(value)
            if spec.type is FeatureType.NUMERIC:
                if vtype is not float:
                    errors.append(FieldError(f"{prefix}.{name}", f"numeric feature needs number_value, got {_kind_name(value)}"))
                elif not math.isfinite(value):
                    errors.append(FieldError(f"{prefix}.{name}", f"must be finite, got {value}"))
                elif abs(value) > MAX_MAGNITUDE:
                    errors.append(FieldError(f"{prefix}.{name}", f"{value} is beyond the limit of ±{MAX_MAGNITUDE:g}"))
                elif spec.min is not None and value < spec.min:
                    errors.append(FieldError(f"{prefix}.{name}", f"{value} is below the minimum {spec.min}"))
                elif spec.max is not None and value > spec.max:
                    errors.append(FieldError(f"{prefix}.{name}", f"{value} is above the maximum {spec.max}"))
            elif spec.type is FeatureType.CATEGORICAL:
                if vtype is not str:
                    errors.append(FieldError(f"{prefix}.{name}", f"categorical feature needs string_value, got {_kind_name(value)}"))
                elif len(value) > MAX_CATEGORY_LEN:
                    errors.append(FieldError(f"{prefix}.{name}", f"longer than {MAX_CATEGORY_LEN} characters"))
                elif not spec.allow_unknown_categories and value not in self._categories[name]:
                    errors.append(FieldError(f"{prefix}.{name}", f"unknown category {value!r}; allowed: {', '.join(spec.categories)}"))
            elif vtype is not bool:
                errors.append(FieldError(f"{prefix}.{name}", f"boolean feature needs bool_value, got {_kind_name(value)}"))
        if required and (len(row) < len(by_name) or errors):
            for spec in self.features:
                if spec.required and spec.name not in row:
                    errors.append(FieldError(f"{prefix}.{spec.name}", "required feature is missing"))
        return errors


    def missing_required(self, *parts: Mapping[str, FeatureValue]) -> list[str]:
        """Required features present in none of ``parts``."""
        missing = self._required
        for part in parts:
            if not missing:
                break
            missing = missing.difference(part.keys())
        return sorted(missing)


def _kind_name(value: object) -> str:
    if isinstance(value, bool):
        return "bool_value"
    if isinstance(value, float):
        return "number_value"
    if isinstance(value, str):
        return "string_value"
    return "no value"


def check_label(label: LabelSpec) -> list[FieldError]:
    """Problems with a new model's label declaration (labels stored before the rule are left as they are)."""
    if NAME_RE.fullmatch(label.name):
        return []
    return [FieldError("label.name", f"{label.name!r} is not a label name: {NAME_RULE}")]


def check_schema(features: Iterable[FeatureSpec]) -> list[FieldError]:
    """Problems with a schema declaration (empty: usable)."""
    errors: list[FieldError] = []
    seen: set[str] = set()
    features = list(features)
    if not features:
        errors.append(FieldError("features", "a model needs at least one feature"))
    if len(features) > MAX_FEATURES:
        errors.append(FieldError("features", f"at most {MAX_FEATURES} features"))
    for i, spec in enumerate(features):
        path = f"features[{i}]"
        if not NAME_RE.fullmatch(spec.name):
            errors.append(FieldError(f"{path}.name", f"{spec.name!r} is not a feature name: {NAME_RULE}"))
        elif spec.name in seen:
            errors.append(FieldError(f"{path}.name", f"duplicate feature {spec.name!r}"))
        seen.add(spec.name)
        if not isinstance(spec.type, FeatureType):
            errors.append(FieldError(f"{path}.type", "must be numeric, categorical or boolean"))
            continue
        if spec.type is not FeatureType.NUMERIC and (spec.min is not None or spec.max is not None):
            errors.append(FieldError(f"{path}.min", "bounds apply to numeric features only"))
        for bound, value in (("min", spec.min), ("max", spec.max)):
            if value is not None and not math.isfinite(value):
                errors.append(FieldError(f"{path}.{bound}", "must be finite"))
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            errors.append(FieldError(f"{path}.max", "max is below min"))
        if spec.type is FeatureType.CATEGORICAL:
            if not spec.categories and not spec.allow_unknown_categories:
                errors.append(FieldError(f"{path}.categories", "list the categories or allow unknown ones"))
            if len(set(spec.categories)) != len(spec.categories):
                errors.append(FieldError(f"{path}.categories", "duplicate category"))
            if any(not c or len(c) > MAX_CATEGORY_LEN for c in spec.categories):
                errors.append(FieldError(f"{path}.categories", f"categories must be 1-{MAX_CATEGORY_LEN} characters"))
        elif spec.categories:
            errors.append(FieldError(f"{path}.categories", "categories apply to categorical features only"))
    return errors


def schema_to_dict(schema: Schema) -> dict[str, object]:
    """A JSON-ready form of the schema (stored with the model and in artifacts)."""
    return {
        "features": [
            {
                "name": f.name,
                "type": f.type.name.lower(),
                "required": f.required,
                "description": f.description,
                "min": f.min,
                "max": f.max,
                "categories": list(f.categories),
                "allow_unknown_categories": f.allow_unknown_categories,
                "group": f.group,
            }
            for f in schema.features
        ],
        "label": {
            "name": schema.label.name,
            "positive_class": schema.label.positive_class,
            "negative_class": schema.label.negative_class,
            "description": schema.label.description,
        },
    }


def schema_from_dict(d: Mapping[str, Any]) -> Schema:
    """Inverse of schema_to_dict; raises SchemaError on a bad declaration."""
    try:
        feats = tuple(
            FeatureSpec(
                name=str(f["name"]),
                type=FeatureType[str(f["type"]).upper()],
                required=bool(f.get("required", False)),
                description=str(f.get("description", "")),
                min=None if f.get("min") is None else float(f["min"]),
                max=None if f.get("max") is None else float(f["max"]),
                categories=tuple(str(c) for c in f.get("categories", ())),
                allow_unknown_categories=bool(f.get("allow_unknown_categories", False)),
                group=str(f.get("group", "")),
            )
            for f in d["features"]
        )
        lab = d.get("label") or {}
        label = LabelSpec(**{k: str(v) for k, v in lab.items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SchemaError([FieldError("schema", f"malformed schema: {exc}")]) from None
    return Schema(feats, label)


@dataclass(frozen=True)
class Column:
    """One feature's values for every row: ``numbers`` (NaN = missing), ``strings``
    ("" = missing), or ``codes`` into ``dictionary`` (-1 = missing)."""

    name: str
    numbers: Sequence[float] | np.ndarray | None = None
    strings: Sequence[str] | None = None
    codes: Any = None
    dictionary: Sequence[str] | None = None

    def decoded(self) -> Sequence[str] | None:
        """The categorical values as strings ("" = missing), whichever form they came in."""
        if self.codes is None:
            return self.strings
        words = [*(self.dictionary or ()), ""]  # code -1 picks the trailing ""
        return [words[c] for c in self.codes.tolist()]


def rows_from_columns(
    schema: Schema, n: int, columns: Sequence[Column], prefix: str = "features"
) -> tuple[list[Row], dict[int, FieldError]]:
    """Rows from a columnar batch, checked column by column (vectorised).

    A column that cannot apply to any row (unknown name, wrong kind, wrong
    length) raises SchemaError; a bad value rejects just its row, reported in
    the returned ``{row index: first error}``.
    """
    errors = check_columns(schema, n, columns, prefix)
    return columns_to_rows(schema, n, columns), errors


def check_columns(schema: Schema, n: int, columns: Sequence[Column], prefix: str = "features") -> dict[int, FieldError]:
    """The checks of rows_from_columns without building the rows."""
    import numpy as np  # numpy is only needed on the bulk paths

    problems: list[FieldError] = []
    seen: set[str] = set()
    for i, col in enumerate(columns):
        path = f"{prefix}[{i}]"
        spec = schema.feature(col.name)
        if spec is None:
            problems.append(FieldError(f"{path}.name", f"unknown feature {col.name!r}"))
            continue
        if col.name in seen:
            problems.append(FieldError(f"{path}.name", f"duplicate column {col.name!r}"))
        seen.add(col.name)
        wants_strings = spec.type is FeatureType.CATEGORICAL
        if wants_strings and col.codes is not None:
            if col.strings is not None and len(col.strings):
                problems.append(FieldError(path, f"column {col.name!r} has both strings and codes"))
                continue
            codes = col.codes
            size = len(col.dictionary or ())
            if len(codes) != n:
                problems.append(FieldError(path, f"column {col.name!r} has {len(codes)} codes for {n} rows"))
            elif len(codes) and (codes.min() < -1 or codes.max() >= size):
                problems.append(FieldError(f"{path}.codes", f"codes must be -1 (missing) or index the {size}-entry dictionary"))
            if len(set(col.dictionary or ())) != size:
                problems.append(FieldError(f"{path}.dictionary", "duplicate entry"))
            continue
        values = col.strings if wants_strings else col.numbers
        other = col.numbers if wants_strings else (col.strings if col.codes is None else col.codes)
        if other is not None and len(other):
            kind = "strings" if wants_strings else "numbers"
            problems.append(FieldError(path, f"{spec.type.name.lower()} feature {col.name!r} takes {kind}"))
        elif (0 if values is None else len(values)) != n:
            count = 0 if values is None else len(values)
            problems.append(FieldError(path, f"column {col.name!r} has {count} values for {n} rows"))
    if problems:
        raise SchemaError(problems)

    errors: dict[int, FieldError] = {}

    def flag(indices: Iterable[int], name: str, reason: str) -> None:
        for idx in indices:
            errors.setdefault(idx, FieldError(f"{prefix}.{name}", reason))

    by_name = {c.name: c for c in columns}
    for spec in schema.features:
        given = by_name.get(spec.name)
        name = spec.name
        if given is None:
            if spec.required and n:
                flag(range(n), name, "required feature is missing")
            continue
        if spec.type is FeatureType.CATEGORICAL and given.codes is not None:
            dictionary = list(given.dictionary or ())
            codes = given.codes
            if spec.required:
                flag_codes = np.flatnonzero(codes == -1)
                if len(flag_codes):
                    flag(flag_codes.tolist(), name, "required feature is missing")
            too_long = [i for i, d in enumerate(dictionary) if len(d) > MAX_CATEGORY_LEN]
            unknown_codes = [] if spec.allow_unknown_categories else [
                i for i, d in enumerate(dictionary) if d not in schema.categories_of(name)]
            for bad_codes, reason in ((too_long, f"longer than {MAX_CATEGORY_LEN} characters"),
                                      (unknown_codes, None)):
                if not bad_codes:
                    continue
                for i in np.flatnonzero(np.isin(codes, bad_codes)).tolist():
                    word = dictionary[codes[i]]
                    text = reason or f"unknown category {word!r}; allowed: {', '.join(spec.categories)}"
                    errors.setdefault(i, FieldError(f"{prefix}.{name}", text))
            continue
        if spec.type is FeatureType.CATEGORICAL:
            strings = given.strings or ()
            # Judge the distinct values (a set is built in C), then find rows only for bad ones.
            distinct = set(strings)
            bad = {v for v in distinct if len(v) > MAX_CATEGORY_LEN}
            unknown = set() if spec.allow_unknown_categories else distinct - schema.categories_of(name) - {""}
            if spec.required and "" in distinct:
                flag([i for i, v in enumerate(strings) if not v], name, "required feature is missing")
            if bad:
                flag([i for i, v in enumerate(strings) if v in bad], name, f"longer than {MAX_CATEGORY_LEN} characters")
            if unknown:
                allowed = ", ".join(spec.categories)
                for i, v in enumerate(strings):
                    if v in unknown:
                        errors.setdefault(i, FieldError(f"{prefix}.{name}", f"unknown category {v!r}; allowed: {allowed}"))
            continue
        arr = as_array(given.numbers, n)
        missing = np.isnan(arr)

        def flag_mask(mask: np.ndarray, reason: str) -> None:
            if mask.any():
                flag(np.flatnonzero(mask).tolist(), name, reason)

        if spec.required:
            flag_mask(missing, "required feature is missing")
        if spec.type is FeatureType.BOOLEAN:
            flag_mask(~missing & (arr != 0) & (arr != 1), "boolean column values must be 0, 1 or NaN")
            continue
        flag_mask(np.isinf(arr), "must be finite")
        flag_mask(np.abs(arr) > MAX_MAGNITUDE, f"beyond the limit of ±{MAX_MAGNITUDE:g}")
        if spec.min is not None:
            flag_mask(arr < spec.min, f"below the minimum {spec.min}")
        if spec.max is not None:
            flag_mask(arr > spec.max, f"above the maximum {spec.max}")
    return errors


def as_array(values: Sequence[float] | np.ndarray | None, n: int) -> Any:
    """A column's numbers as a float64 numpy array (no copy if it already is one)."""
    import numpy as np

    if isinstance(values, np.ndarray):
        return values
    return np.fromiter(values or (), dtype=np.float64, count=n)


def columns_to_rows(schema: Schema, n: int, columns: Sequence[Column],
                    indices: Sequence[int] | None = None) -> list[Row]:
    """Rows (missing values left out) from columns already checked with check_columns;
    with ``indices``, only those rows, in that order."""
    import numpy as np

    take = None if indices is None else np.asarray(indices, dtype=np.intp)
    rows: list[Row] = [{} for _ in range(n if take is None else len(take))]
    for col in columns:
        spec = schema.feature(col.name)
        if spec is None:
            continue
        name = col.name
        if spec.type is FeatureType.CATEGORICAL:
            words = col.decoded() or ()
            if take is not None:
                words = [words[i] for i in take.tolist()]
            for row, v in zip(rows, words, strict=True):
                if v:
                    row[name] = v
            continue
        arr = as_array(col.numbers, n)
        if take is not None:
            arr = arr[take]
        missing = np.isnan(arr)
        values: list[FeatureValue] = (arr == 1).tolist() if spec.type is FeatureType.BOOLEAN else arr.tolist()
        if missing.any():
            for i in np.flatnonzero(~missing).tolist():
                rows[i][name] = values[i]
        else:
            for row, value in zip(rows, values, strict=True):
                row[name] = value
    return rows
