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
from typing import TYPE_CHECKING, Any, NamedTuple

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
# portable artifact's bound too (artifact.py). A stored value past it made every
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


# --- The value rules: every check of a feature's value, wherever the value came from, is one of these.

MISSING_REQUIRED = "required feature is missing"


def number_bounds(spec: FeatureSpec) -> tuple[float, float]:
    """The closed interval a numeric feature's values must lie in: its min and max, within
    ±MAX_MAGNITUDE. NaN and the infinities fall outside it."""
    return (
        -MAX_MAGNITUDE if spec.min is None else max(spec.min, -MAX_MAGNITUDE),
        MAX_MAGNITUDE if spec.max is None else min(spec.max, MAX_MAGNITUDE),
    )


def number_problem(spec: FeatureSpec, v: float) -> str | None:
    """What is wrong with the number ``v`` (not NaN: missing is the caller's to judge) for the numeric
    feature ``spec``, or None when it keeps number_bounds."""
    if not math.isfinite(v):
        return f"must be finite, got {v}"
    if abs(v) > MAX_MAGNITUDE:
        return f"{v} is beyond the limit of ±{MAX_MAGNITUDE:g}"
    if spec.min is not None and v < spec.min:
        return f"{v} is below the minimum {spec.min}"
    if spec.max is not None and v > spec.max:
        return f"{v} is above the maximum {spec.max}"
    return None


def category_problem(spec: FeatureSpec, word: str) -> str | None:
    """What is wrong with the category ``word`` (not "": missing) for the categorical feature ``spec``,
    or None when it is one of its categories, or may be unknown."""
    if len(word) > MAX_CATEGORY_LEN:
        return f"longer than {MAX_CATEGORY_LEN} characters"
    if not spec.allow_unknown_categories and word not in spec.categories:
        return f"unknown category {word!r}; allowed: {', '.join(spec.categories)}"
    return None


def code_problem(spec: FeatureSpec, v: float) -> str | None:
    """What is wrong with ``v`` (not NaN) as a boolean's or a categorical's value in the raw layout (a
    boolean as 0 / 1, a categorical as the index of its value in the declared categories), or None."""
    if spec.type is FeatureType.BOOLEAN:
        return None if v in (0.0, 1.0) else f"{v!r}: a boolean is 0 (false), 1 (true) or NaN (missing)"
    top = len(spec.categories) - 1
    if 0 <= v <= top and v == int(v):
        return None
    if not spec.categories:
        return f"{v!r}: {spec.name} declares no categories, so only NaN (missing) fits"
    shown = ", ".join(spec.categories[:10]) + (", ..." if len(spec.categories) > 10 else "")
    return f"{v!r} is not a category index: an integer 0-{top} into the categories ({shown}), or NaN for missing"


def raw_bounds(spec: FeatureSpec) -> tuple[float, float]:
    """The closed interval of a feature's values in the raw layout (NaN aside): number_bounds for a
    number, 0-1 for a boolean, 0 to the last category's index for a categorical (whole numbers only,
    for both: code_problem)."""
    if spec.type is FeatureType.NUMERIC:
        return number_bounds(spec)
    return 0.0, 1.0 if spec.type is FeatureType.BOOLEAN else len(spec.categories) - 1.0


class FeatureCheck(NamedTuple):
    """A feature's rules for the common case, decided with no attribute look-ups (Schema.validate_row's
    fast path and the single-row scorer's): ``kind`` 1 numeric, 2 categorical, 3 boolean; a number's
    number_bounds; a categorical's allowed values (None: any)."""

    kind: int
    lo: float
    hi: float
    categories: frozenset[str] | None


_KIND_CODE = {FeatureType.NUMERIC: 1, FeatureType.CATEGORICAL: 2, FeatureType.BOOLEAN: 3}


@dataclass(frozen=True)
class Schema:
    features: tuple[FeatureSpec, ...]
    label: LabelSpec = field(default_factory=LabelSpec)
    # Derived in __post_init__.
    by_name: Mapping[str, FeatureSpec] = field(init=False, repr=False, compare=False)
    required_names: frozenset[str] = field(init=False, repr=False, compare=False)
    checks: Mapping[str, FeatureCheck] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        errors = check_schema(self.features)
        if errors:
            raise SchemaError(errors)
        object.__setattr__(self, "by_name", {f.name: f for f in self.features})
        object.__setattr__(self, "required_names", frozenset(f.name for f in self.features if f.required))
        object.__setattr__(
            self,
            "checks",
            {
                f.name: FeatureCheck(
                    _KIND_CODE[f.type],
                    *number_bounds(f),
                    None if f.allow_unknown_categories else frozenset(f.categories),
                )
                for f in self.features
            },
        )

    def feature(self, name: str) -> FeatureSpec | None:
        return self.by_name.get(name)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def validate_row(
        self, row: Mapping[str, FeatureValue], prefix: str = "features", required: bool = True
    ) -> list[FieldError]:
        """Every problem with ``row`` against this schema (empty: valid).

        ``required=False`` checks only the values present (for part of a row).
        """
        errors: list[FieldError] = []
        checks = self.checks
        given: Mapping[str, Any] = row  # the fast path tests each value's exact class itself
        for name, value in given.items():
            check = checks.get(name)
            if check is not None:
                # The common case: the right kind, in bounds, or a known category.
                kind, lo, hi, cats = check
                cls = value.__class__
                if kind == 1 and cls is float and lo <= value <= hi:
                    continue
                if kind == 2 and cls is str and (cats is None or value in cats) and len(value) <= MAX_CATEGORY_LEN:
                    continue
                if kind == 3 and cls is bool:
                    continue
            spec = self.by_name.get(name)
            problem: str | None
            if spec is None:
                problem = "unknown feature"
            elif spec.type is FeatureType.NUMERIC:
                problem = (
                    number_problem(spec, value)
                    if isinstance(value, float) and value.__class__ is float
                    else f"numeric feature needs number_value, got {_kind_name(value)}"
                )
            elif spec.type is FeatureType.CATEGORICAL:
                problem = (
                    category_problem(spec, value)
                    if isinstance(value, str)
                    else f"categorical feature needs string_value, got {_kind_name(value)}"
                )
            else:
                problem = (
                    None if value.__class__ is bool else f"boolean feature needs bool_value, got {_kind_name(value)}"
                )
            if problem is not None:
                errors.append(FieldError(f"{prefix}.{name}", problem))
        if required and (len(row) < len(self.features) or errors):
            for spec in self.features:
                if spec.required and spec.name not in row:
                    errors.append(FieldError(f"{prefix}.{spec.name}", MISSING_REQUIRED))
        return errors

    def missing_required(self, *parts: Mapping[str, FeatureValue]) -> list[str]:
        """Required features present in none of ``parts``."""
        missing = self.required_names
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
                problems.append(
                    FieldError(f"{path}.codes", f"codes must be -1 (missing) or index the {size}-entry dictionary")
                )
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
                flag(range(n), name, MISSING_REQUIRED)
            continue
        if spec.type is FeatureType.CATEGORICAL:
            # Judge the distinct values (a dictionary's entries; a set of strings is built in C), then
            # find the rows only for bad ones.
            if given.codes is not None:
                words = list(given.dictionary or ())
                codes = given.codes
                if spec.required:
                    flag(np.flatnonzero(codes == -1).tolist(), name, MISSING_REQUIRED)
                bad = {k: p for k, word in enumerate(words) if (p := category_problem(spec, word)) is not None}
                if bad:
                    for i in np.flatnonzero(np.isin(codes, list(bad))).tolist():
                        errors.setdefault(i, FieldError(f"{prefix}.{name}", bad[int(codes[i])]))
                continue
            strings = given.strings or ()
            distinct = set(strings)
            if spec.required and "" in distinct:
                flag([i for i, v in enumerate(strings) if not v], name, MISSING_REQUIRED)
            bad_words = {v: p for v in distinct - {""} if (p := category_problem(spec, v)) is not None}
            if bad_words:
                for i, v in enumerate(strings):
                    if v in bad_words:
                        errors.setdefault(i, FieldError(f"{prefix}.{name}", bad_words[v]))
            continue
        arr = as_array(given.numbers, n)
        missing = np.isnan(arr)
        if spec.required and missing.any():
            flag(np.flatnonzero(missing).tolist(), name, MISSING_REQUIRED)
        if spec.type is FeatureType.BOOLEAN:
            bad_rows = ~missing & (arr != 0) & (arr != 1)
            why = code_problem
        else:
            lo, hi = number_bounds(spec)
            bad_rows = ~missing & ~((arr >= lo) & (arr <= hi))
            why = number_problem
        for i in np.flatnonzero(bad_rows).tolist():
            errors.setdefault(i, FieldError(f"{prefix}.{name}", why(spec, float(arr[i])) or ""))
    return errors


def as_array(values: Sequence[float] | np.ndarray | None, n: int) -> Any:
    """A column's numbers as a float64 numpy array (no copy if it already is one)."""
    import numpy as np

    if isinstance(values, np.ndarray):
        return values
    return np.fromiter(values or (), dtype=np.float64, count=n)


def columns_to_rows(
    schema: Schema, n: int, columns: Sequence[Column], indices: Sequence[int] | None = None
) -> list[Row]:
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
