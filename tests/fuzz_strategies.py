"""Hypothesis strategies that build any protobuf request from its descriptor.

``Walker(hints).message(descriptor)`` walks a message descriptor and fills
its fields with hostile values: empty, huge and unicode-laden strings (NULs,
bidi controls, combining marks, non-ASCII digits), extreme numbers (NaN, the
infinities, -0.0, the int64 edges), empty and long repeated fields, maps,
oneofs, unknown enum numbers, and nested messages down to a bounded depth
(long strings, blobs and long lists only near the top, never nested in one
another, so one request stays at a few MB). ``raw_bodies`` makes request
bodies that are not valid protobuf.

Pure noise stops at the first ``NOT_FOUND``, so ``Hints`` (what the test
learned from the live server: the model's name, its features and valid rows,
run, prediction and alert ids, page tokens, an exported artifact) bias a good
share of the values towards real ones, by field name or message type; the
generic strategy stays mixed in everywhere.

Nothing here knows the RPC list: a new service or method gets the generic
walk for free, and the hints apply wherever their field names appear.
"""

from __future__ import annotations

import base64
import gzip
import math
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor as pbd
from google.protobuf import message_factory
from hypothesis import strategies as st

MAX_DEPTH = 4
FD = pbd.FieldDescriptor

# --- primitives -----------------------------------------------------------


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A choice among strategies with integer weights; shrinks towards the first.

    (``st.one_of`` picks its branches about evenly, and repeating a branch
    does not weigh it: one_of drops the duplicates.)
    """
    strategies = [s for _, s in choices]
    index = [i for i, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(index).flatmap(strategies.__getitem__)


WEIRD_STRINGS = [
    "",
    " ",
    "  ",
    "\x00",
    "a\x00b",
    "\x00" * 64,
    "\t",
    "\n",
    "\r\n",
    "\x7f",
    "\x1b[31m",
    "\u202e\u202d",
    "\u200b",
    "\ufeff",
    "e\u0301\u0301\u0301",
    "\uffff",
    "\ufffd",
    "\U0010ffff",
    "\U0001f600" * 3,
    "\U0001d54a",
    "İ",
    "ß",
    "ﬃ",
    "Ⅻ",
    # Characters for which str.isdigit() is True but int() fails or differs.
    "²",
    "¹²³",
    "٣",
    "١٢٣",
    "௧",
    "𝟗",
    "9" * 30,
    "0" * 30,
    "-1",
    "+1",
    "1_000",
    " 7",
    "7 ",
    "0",
    "1",
    "2",
    "1e309",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "null",
    "None",
    "true",
    "[]",
    "{}",
    "' OR 1=1 --",
    '"; DROP TABLE outcomes; --',
    "%s%n%x",
    "{0}{1}",
    "${x}",
    "../../etc/passwd",
    "\\",
    "/",
    ".",
    "..",
    "*",
    "%",
    "_",
    "a/b",
    "p1:",
    "cDE6",
    "cDE6Mg==",
    "cDE6wrI=",
    "====",
    "champion",
    "CHAMPION",
    "scheme-sahayak",
    "Scheme-Sahayak",
    "scheme_sahayak",
]
LONG_SIZES = [63, 64, 65, 200, 201, 256, 257, 1000, 4096, 4097, 65_537, 300_001]
_LONG_UNITS = ["a", "é", "\U0001f600", "\x00", "ab c", "9", "-"]


def _long_string(unit: str, size: int) -> str:
    return (unit * size)[:size]


long_strings = st.builds(_long_string, st.sampled_from(_LONG_UNITS), st.sampled_from(LONG_SIZES))
# Hypothesis' text() never draws surrogates, so every string here is valid UTF-8.
strings = weighted(
    (3, st.sampled_from(WEIRD_STRINGS)),
    (3, st.text(max_size=24)),
    (1, st.text(st.characters(codec="utf-8"), min_size=1, max_size=300)),
    (1, long_strings),
)
short_strings = st.one_of(st.sampled_from(WEIRD_STRINGS), st.text(max_size=16))
idents = st.text(string.ascii_lowercase + string.digits + "_-", min_size=1, max_size=12)

DOUBLES = [
    0.0,
    -0.0,
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    -5e-324,
    2.0**53,
    2.0**63,
    -(2.0**63),
    2.0**64,
    0.5,
    1.0,
    -1.0,
    1e-9,
    1.0000000000000002,
    0.9999999999999999,
]
doubles = weighted(
    (2, st.sampled_from(DOUBLES)),
    (2, st.floats()),
    (1, st.floats(-1e6, 1e6)),
)
floats32 = st.one_of(st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 3.4e38]), st.floats(width=32))
INT64_EDGES = [0, 1, -1, 2, 2**31 - 1, -(2**31), 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, -(2**63), -(2**63) + 1]
INT32_EDGES = [0, 1, -1, 2, 100, 2**31 - 1, -(2**31), 2**15]


def ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = [v for v in (INT64_EDGES if bits == 64 else INT32_EDGES) + [hi, lo] if lo <= v <= hi]
    return weighted((2, st.sampled_from(edges)), (2, st.integers(max(lo, -3), 12)), (1, st.integers(lo, hi)))


small_ints = st.one_of(st.integers(0, 6), st.sampled_from([-1, 0, 1, 2, 3, 10, 50, 501, 2**31 - 1, -(2**31)]))
binaries = weighted(
    (3, st.binary(max_size=64)),
    (1, st.builds(lambda b, n: (b * n)[:n], st.binary(min_size=1, max_size=4), st.sampled_from([1000, 70_000]))),
)

# Malformed protobuf encodings for the raw-bytes requests.
BAD_WIRE = [
    b"\x08",
    b"\x08\xff",
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # truncated / overlong varint
    b"\x0a\x05ab",
    b"\x0a\xff\xff\xff\xff\x0f",
    b"\x0a\x02\xff\xfe",  # truncated length, huge length, bad UTF-8
    b"\x0b",
    b"\x0c",
    b"\x0b\x0c",
    b"\x07",
    b"\x00",
    b"\x00\x00",
    b"\xf8\xff\xff\xff\x7f",  # groups, wire 7, field 0
    b"\x12\x03\x0a\x01\xff",
    b"\x22\x04\x0a\x02\xc3\x28",
    b"\x11\x00",
    b"\x15\x01\x02",  # nested bad UTF-8, short fixed
    b"\xff" * 32,
    b"\x80" * 16,
]

# --- the context learned from the live server ------------------------------


@dataclass
class FeatureInfo:
    name: str
    kind: str  # "numeric" | "categorical" | "boolean"
    categories: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None


@dataclass
class Hints:
    model_names: list[str]
    features: list[FeatureInfo]
    rows: list[dict[str, Any]]  # valid feature rows of the main model
    now_s: float  # the server clock
    run_ids: list[str] = field(default_factory=list)
    prediction_ids: list[str] = field(default_factory=list)
    recommendation_ids: list[str] = field(default_factory=list)
    alert_ids: list[str] = field(default_factory=list)
    outcome_ids: list[str] = field(default_factory=list)
    page_tokens: list[str] = field(default_factory=list)
    artifacts: list[bytes] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)  # for the reflection service
    # StartTraining and Import of an intact artifact are expensive: a strategy
    # asks ``allow(key)`` and sends a cheaper variant when the budget is spent.
    budgets: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        left = self.budgets.get(key, 0)
        if left <= 0:
            return False
        self.budgets[key] = left - 1
        return True


def _mixed(real: Sequence[Any], generic: st.SearchStrategy[Any], real_weight: int = 3) -> st.SearchStrategy[Any]:
    if not real:
        return generic
    return weighted((real_weight, st.sampled_from(list(real))), (1, generic))


# --- feature values, rows and columns --------------------------------------


def _value_for(info: FeatureInfo, text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """A value of the right kind, mostly in range, sometimes just outside it."""
    if info.kind == "numeric":
        lo = info.lo if info.lo is not None else -1e6
        hi = info.hi if info.hi is not None else 1e7
        edges = [v for v in (info.lo, info.hi) if v is not None]
        nudged = [v + d for v in edges for d in (-1e-9, 1e-9)]
        # Where a side is unbounded, the schema admits any finite magnitude there.
        huge = [
            v
            for v in (1e16, 1e100, 1e101, 1e300, 1.7976931348623157e308)
            if (info.hi is None and v > lo) or (info.lo is None and -v < hi)
        ]
        signed = [v if info.hi is None else -v for v in huge]
        return weighted(
            (4, st.floats(lo, hi)),
            (1, st.sampled_from(edges + nudged or [0.0])),
            (1, doubles),
            (1 if signed else 0, st.sampled_from(signed or [0.0])),
        )
    if info.kind == "categorical":
        cats = list(info.categories) or ["x"]
        return weighted(
            (5, st.sampled_from(cats)), (1, st.sampled_from([c.upper() for c in cats] + [" " + cats[0]])), (1, text)
        )
    return weighted((5, st.booleans()), (1, st.sampled_from([0.0, 1.0, "true", "1"])))


def _fv(value: Any) -> dict[str, Any]:
    """A FeatureValue as a kind -> value dict ({} is an empty FeatureValue: a missing value)."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"bool_value": value}
    if isinstance(value, str):
        return {"string_value": value}
    return {"number_value": float(value)}


def _any_value(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), doubles, text)


def feature_rows(h: Hints, text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A real row, mutated a little: a value changed, a feature dropped or added, a kind swapped."""
    if not h.rows or not h.features:
        return st.dictionaries(text, _any_value(text), max_size=6)
    by_name = {f.name: f for f in h.features}
    names = [f.name for f in h.features]

    @st.composite
    def build(draw: Callable[..., Any]) -> dict[str, Any]:
        row = dict(draw(st.sampled_from(h.rows)))
        for _ in range(draw(weighted((3, st.just(0)), (2, st.integers(1, 3))))):
            op = draw(st.sampled_from(["value", "value", "drop", "add", "any", "none"]))
            name = draw(st.sampled_from(names))
            if op == "value":
                row[name] = draw(_value_for(by_name[name], text))
            elif op == "drop":
                row.pop(name, None)
            elif op == "add":
                row[draw(weighted((3, st.sampled_from(names + [n.upper() for n in names])), (1, text)))] = draw(
                    _any_value(text)
                )
            elif op == "any":
                row[name] = draw(_any_value(text))
            else:
                row[name] = None
        return row

    return build()


def feature_map(
    h: Hints, text: st.SearchStrategy[str], subset: str = ""
) -> st.SearchStrategy[dict[str, dict[str, Any]]]:
    """map<string, FeatureValue> as {name: FeatureValue-kwargs}; ``subset`` keeps a feature group."""
    rows = feature_rows(h, text)
    if subset and h.features:
        keep = {f.name for f in h.features if f.name.startswith("scheme_")}
        keep = keep if subset == "scheme" else {f.name for f in h.features} - keep
        rows = rows.map(lambda r: {k: v for k, v in r.items() if k in keep or k not in {f.name for f in h.features}})
    return rows.map(lambda r: {k: _fv(v) for k, v in r.items()})


def _column_for(info: FeatureInfo | None, name: str, values: list[Any], draw: Callable[..., Any]) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name}
    if info is None or info.kind != "categorical":
        col["numbers"] = [math.nan if v is None else float(v) if not isinstance(v, str) else math.nan for v in values]
    elif draw(st.booleans()):
        col["strings"] = ["" if v is None else str(v) for v in values]
    else:
        dictionary = sorted({str(v) for v in values if v is not None})
        col["dictionary"] = dictionary
        col["codes"] = [-1 if v is None else dictionary.index(str(v)) for v in values]
    return col


def feature_columns(h: Hints, text: st.SearchStrategy[str], subset: str = "") -> st.SearchStrategy[dict[str, Any]]:
    """FeatureColumns kwargs built from a few real rows, then mutated (lengths, names, kinds, codes)."""
    by_name = {f.name: f for f in h.features}

    @st.composite
    def build(draw: Callable[..., Any]) -> dict[str, Any]:
        n = draw(st.integers(0, 5))
        rows = [draw(feature_rows(h, text)) for _ in range(n)]
        names = [f.name for f in h.features]
        if subset == "scheme":
            names = [x for x in names if x.startswith("scheme_")]
        columns = [_column_for(by_name.get(name), name, [r.get(name) for r in rows], draw) for name in names]
        row_count: int = n
        for _ in range(draw(st.integers(0, 2))):
            op = draw(st.sampled_from(["count", "drop", "truncate", "extra", "both", "codes", "dup", "unknown"]))
            if op == "count":
                row_count = draw(st.sampled_from([n + 1, max(0, n - 1), 0, -1, -(2**31), 2**31 - 1, 100_001, 100_000]))
            elif op == "drop" and columns:
                columns.pop(draw(st.integers(0, len(columns) - 1)))
            elif op == "truncate" and columns:
                col = columns[draw(st.integers(0, len(columns) - 1))]
                for key, filler in (("numbers", math.nan), ("strings", ""), ("codes", -1)):
                    if key in col:
                        col[key] = col[key][:-1] if col[key] else [filler]
            elif op == "extra" and columns:
                columns.append(dict(columns[draw(st.integers(0, len(columns) - 1))]))
            elif op == "both" and columns:
                col = columns[draw(st.integers(0, len(columns) - 1))]
                col["strings"] = ["x"] * n
                col["numbers"] = [1.0] * n
            elif op == "codes" and columns:
                col = columns[draw(st.integers(0, len(columns) - 1))]
                col["codes"] = [draw(st.sampled_from([-2, -1, 0, 1, 2**31 - 1, -(2**31)])) for _ in range(n)]
                col.setdefault("dictionary", draw(st.lists(text, max_size=3)))
            elif op == "dup" and columns:
                col = columns[draw(st.integers(0, len(columns) - 1))]
                col["dictionary"] = ["a", "a"]
            elif op == "unknown":
                columns.append({"name": draw(text), "numbers": [draw(doubles) for _ in range(n)]})
        return {"row_count": row_count, "columns": columns}

    return build()


# --- the generic walk -------------------------------------------------------

_WKT_TIMESTAMP = "google.protobuf.Timestamp"
_WKT_DURATION = "google.protobuf.Duration"
_WKT_FIELDMASK = "google.protobuf.FieldMask"

UPDATE_PATHS = [
    "description",
    "settings",
    "settings.decision_threshold",
    "settings.training",
    "settings.training.families",
    "settings.training.retrain_interval",
    "settings.training.incremental_every",
    "settings.training.validation_fraction",
    "settings.training.split",
    "settings.training.min_samples",
    "settings.training.logistic_regression",
    "settings.training.logistic_regression.l2",
    "settings.training.logistic_regression.max_iterations",
    "settings.training.gradient_boosting.max_leaf_nodes",
    "settings.training.gradient_boosting",
    "settings.training.random_seed",
    "settings.training.schedule_enabled",
    "settings.gate",
    "settings.gate.min_accuracy",
    "settings.gate.max_roc_auc_drop",
    "settings.monitoring",
    "settings.monitoring.drift_psi_threshold",
    "settings.monitoring.drift_share",
    "settings.monitoring.alert_cooldown",
    "settings.monitoring.freshness_limit",
    "settings.monitoring.retrain_on_breach",
    "name",
    "features",
    "label",
    "aliases",
    "settings.",
    "settings..gate",
    ".",
    "settings.gate.min_accuracy.x",
    "settings.training.families.0",
    "settings.retrain_interval_s",
    "settings.training.retrain_interval_s",
    "Settings.Gate",
]
METRIC_NAMES = [
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier_score",
    "calibration_error",
    "max_calibration_error",
    "count",
    "positives",
    "threshold",
    "confusion",
    "__class__",
    "to_dict",
    "ACCURACY",
]
# Fields that select what a request is about: present, and real, nearly always.
KEY_FIELDS = {
    "model",
    "model_name",
    "name",
    "run_id",
    "alert_id",
    "feedback",
    "outcome",
    "features",
    "rows",
    "columns",
    "inputs",
    "window",
    "range",
    "data",
}
ALIASES = ["champion", "challenger", "shadow", "staging", "", "Champion", "champion ", "a" * 64, "1", "-"]


class Walker:
    """Builds strategies for messages of one descriptor pool, biased by ``Hints``."""

    def __init__(self, hints: Hints, max_depth: int = MAX_DEPTH, small: bool = False) -> None:
        self.h = hints
        self.max_depth = max_depth
        # A small walker draws no long strings, big blobs or long lists: it fills the
        # items of a long list, so sizes never multiply down the levels of a message.
        self.small = small
        self.text = short_strings if small else strings
        self._small = self if small else Walker(hints, max_depth, small=True)
        self._cache: dict[tuple[str, int], st.SearchStrategy[Any]] = {}

    # Public: a strategy of message instances.
    def message(self, desc: pbd.Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
        key = (desc.full_name, depth)
        if key not in self._cache:
            cls = message_factory.GetMessageClass(desc)
            self._cache[key] = self.kwargs(desc, depth).map(lambda kw: build(cls, kw))
        return self._cache[key]

    # A message as a {field: python value} dict (nested messages as dicts too).
    def kwargs(self, desc: pbd.Descriptor, depth: int) -> st.SearchStrategy[dict[str, Any]]:
        special = self._message_hint(desc, depth)
        generic = self._generic_kwargs(desc, depth)
        return generic if special is None else weighted((2, special), (1, generic))

    def _generic_kwargs(self, desc: pbd.Descriptor, depth: int) -> st.SearchStrategy[dict[str, Any]]:
        plain: dict[str, st.SearchStrategy[Any]] = {}
        groups: list[st.SearchStrategy[dict[str, Any]]] = []
        for oneof in desc.oneofs:
            real = [f for f in oneof.fields]
            synthetic = len(real) == 1 and oneof.name == "_" + real[0].name
            if synthetic:
                continue
            choices = [st.just({})]
            for f in real:
                s = self.field(f, depth)
                if s is not None:
                    choices.append(s.map(lambda v, name=f.name: {name: v}))
            groups.append(st.one_of(choices))
        for f in desc.fields:
            oneof = f.containing_oneof
            if oneof is not None and not (len(oneof.fields) == 1 and oneof.name == "_" + f.name):
                continue
            s = self.field(f, depth)
            if s is not None:
                plain[f.name] = s
        # Most handlers check their required fields first, so near the top a field is
        # present three times in four; deeper down, half the time.
        present = 3 if depth <= 1 else 1
        body = st.fixed_dictionaries(
            {k: weighted((1, st.just(_ABSENT)), (9 if k in KEY_FIELDS else present, v)) for k, v in plain.items()}
        )
        return st.tuples(body, *groups).map(_merge)

    def field(self, f: pbd.FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
        hint = self._field_hint(f, depth)
        if _is_map(f):
            key_f = f.message_type.fields_by_name["key"]
            value_f = f.message_type.fields_by_name["value"]
            value = self._single(value_f, depth + 1)
            if value is None:
                return hint
            generic = st.dictionaries(self._single(key_f, depth + 1), value, max_size=5)
            if not self.small and depth <= 1:
                many = self._small._single(value_f, depth + 1)
                generic = weighted(
                    (3, generic), (1, st.dictionaries(st.text(max_size=6), many, min_size=60, max_size=70))
                )
        elif f.is_repeated:
            item = self._single(f, depth)
            if item is None:
                return hint
            generic = st.lists(item, max_size=4)
            if not self.small and depth <= 1:
                many = self._small._single(f, depth)
                generic = weighted(
                    (4, generic), (1, st.builds(lambda v, n: [v] * n, many, st.sampled_from([65, 501, 1001])))
                )
        else:
            generic = self._single(f, depth)
            if generic is None:
                return hint
        if hint is None:
            return generic
        return weighted((12 if f.name in KEY_FIELDS else 3, hint), (1, generic))

    def _single(self, f: pbd.FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
        t = f.type
        if t == FD.TYPE_MESSAGE or t == FD.TYPE_GROUP:
            name = f.message_type.full_name
            if name in (_WKT_TIMESTAMP, _WKT_DURATION, _WKT_FIELDMASK):
                return self._wkt(name)
            if depth + 1 > self.max_depth:
                return st.just({})
            return self.kwargs(f.message_type, depth + 1)
        if t in (FD.TYPE_DOUBLE,):
            return doubles
        if t == FD.TYPE_FLOAT:
            return floats32
        if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
            return ints(64, True)
        if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
            return ints(64, False)
        if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
            return ints(32, True)
        if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
            return ints(32, False)
        if t == FD.TYPE_BOOL:
            return st.booleans()
        if t == FD.TYPE_STRING:
            return strings if depth <= 1 and not self.small else short_strings
        if t == FD.TYPE_BYTES:
            return binaries if depth <= 1 and not self.small else st.binary(max_size=32)
        if t == FD.TYPE_ENUM:
            known = [v.number for v in f.enum_type.values]
            return weighted((4, st.sampled_from(known)), (1, ints(32, True)))
        return None

    def _wkt(self, name: str) -> st.SearchStrategy[Any]:
        now = int(self.h.now_s)
        if name == _WKT_TIMESTAMP:
            realistic = st.builds(
                lambda d, n: {"seconds": now + d, "nanos": n},
                st.integers(-800 * 86400, 2 * 86400),
                st.integers(0, 999_999_999),
            )
            extreme = st.fixed_dictionaries({}, optional={"seconds": ints(64, True), "nanos": ints(32, True)})
            edges = st.sampled_from(
                [
                    {"seconds": 253402300799, "nanos": 999_999_999},
                    {"seconds": 253402300800},
                    {"seconds": 2**63 - 1},
                    {"seconds": -(2**63)},
                    {"seconds": 2**44},
                    {"seconds": -62135596800},
                    {"seconds": -1},
                    {"nanos": -1},
                    {"nanos": 10**9},
                    {"seconds": 0, "nanos": 0},
                    {"seconds": now + 10 * 86400},
                ]
            )
            return weighted((2, realistic), (1, extreme), (1, edges))
        if name == _WKT_DURATION:
            realistic = st.builds(
                lambda s, n: {"seconds": s, "nanos": n}, st.integers(0, 40 * 86400), st.integers(0, 999_999_999)
            )
            tiny = st.sampled_from(
                [
                    {"nanos": 1},
                    {"nanos": 999},
                    {"nanos": 1000},
                    {"seconds": 0},
                    {"seconds": -1},
                    {"nanos": -1},
                    {"seconds": 1, "nanos": -1},
                    {"seconds": 315_576_000_001},
                ]
            )
            extreme = st.fixed_dictionaries({}, optional={"seconds": ints(64, True), "nanos": ints(32, True)})
            return weighted((3, realistic), (3, tiny), (1, extreme))
        paths = weighted((4, st.sampled_from(UPDATE_PATHS)), (1, self.text))
        return st.fixed_dictionaries(
            {"paths": weighted((3, st.lists(paths, min_size=1, max_size=2)), (1, st.lists(paths, max_size=5)))}
        )

    # --- hints -------------------------------------------------------------

    def _field_hint(self, f: pbd.FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
        h = self.h
        owner = f.containing_type.full_name if f.containing_type is not None else ""
        name = f.name
        t = f.type
        if _is_map(f):
            value_type = f.message_type.fields_by_name["value"].message_type
            if value_type is not None and value_type.full_name == "sahayak.v1.FeatureValue":
                subset = "scheme" if owner == "sahayak.v1.Candidate" else ""
                subset = "artisan" if name == "subject_features" else subset
                return feature_map(h, self.text, subset)
            if name in ("entities", "metadata"):
                return st.dictionaries(st.sampled_from(["artisan_id", "scheme_id", "x", ""]), self.text, max_size=3)
            return None
        if t == FD.TYPE_STRING and not f.is_repeated:
            if owner == "sahayak.v1.Model" and name == "name":
                fresh = idents.map(lambda s: "fz-" + s)
                return weighted((3, st.sampled_from(h.model_names)), (2, fresh))
            if owner == "sahayak.v1.FeatureSpec" and name == "name":
                return weighted(
                    (3, st.text(string.ascii_lowercase, min_size=1, max_size=8)),
                    (1, st.sampled_from([f.name for f in h.features] or ["x"])),
                )
            if name in ("model", "model_name") or (name == "name" and owner.endswith("Request")):
                return st.sampled_from(h.model_names)
            if name == "alias":
                return weighted(
                    (4, st.just("")), (2, st.just("champion")), (1, st.sampled_from(ALIASES)), (1, self.text)
                )
            if name in ("version", "model_version"):
                return st.sampled_from(
                    [
                        "",
                        "",
                        "1",
                        "2",
                        "3",
                        "0",
                        "-1",
                        "01",
                        "²",
                        "١",
                        str(2**63 - 1),
                        str(2**63),
                        "9" * 40,
                        " 1",
                        "1.0",
                    ]
                )
            if name == "run_id":
                return _mixed(h.run_ids, idents, 4)
            if name == "prediction_id":
                return _mixed(h.prediction_ids, idents, 3)
            if name == "recommendation_id":
                return _mixed(h.recommendation_ids, idents, 3)
            if name == "alert_id":
                return _mixed(h.alert_ids, idents, 3)
            if name in ("outcome_id", "feedback_id"):
                return weighted((2, idents), (1, st.sampled_from(h.outcome_ids or ["o-1"])), (1, self.text))
            if name == "page_token":
                forged = st.sampled_from(
                    [
                        "p1:",
                        "p1:²",
                        "p1:-5",
                        "p1:" + "9" * 30,
                        "p1:1/2",
                        "p1:²/³",
                        "p1:x/",
                        "p1:" + "9" * 25 + "/" + "9" * 25,
                        "p1:\x00",
                        "x",
                    ]
                ).map(lambda s: base64.urlsafe_b64encode(s.encode()).decode())
                return weighted((2, st.sampled_from(h.page_tokens or [""])), (2, forged))
            if name == "cursor":
                return st.sampled_from(["0", "1", "2", "99", "9" * 25, "-1", "²", "١٢٣", "௧", "1.5", " 1"])
            if name == "metric":
                return st.sampled_from(METRIC_NAMES)
            if name == "scheme_id":
                return st.sampled_from(["pmegp", "ahvy", "samarth", ""])
            if name in ("artisan_id", "candidate_id"):
                return idents
            if name in ("service",):
                return st.sampled_from(h.services + [""])
            if name in ("file_by_filename",):
                return st.sampled_from(["sahayak/v1/common.proto", "sahayak/v1/registry.proto", "nope.proto"])
            if name in ("file_containing_symbol", "all_extension_numbers_of_type"):
                return st.sampled_from(h.symbols or ["sahayak.v1.Outcome"])
            return None
        if t == FD.TYPE_STRING and f.is_repeated and name == "categories":
            return st.lists(st.sampled_from(["weaver", "potter", "a", "a", "", "x" * 300]), max_size=4)
        if t in (FD.TYPE_INT64, FD.TYPE_INT32) and not f.is_repeated:
            if name in ("version", "version_a", "version_b"):
                return weighted((4, st.just(0)), (4, st.sampled_from([1, 2])), (1, small_ints), (1, ints(64, True)))
            if name in (
                "page_size",
                "top_k",
                "explain_top_k",
                "last_n",
                "rating",
                "row_count",
                "min_samples",
                "incremental_every",
                "max_iterations",
                "max_leaf_nodes",
            ):
                return small_ints
            return None
        if t == FD.TYPE_BYTES and name == "artifact" and h.artifacts and not self.small:
            return self._artifact()
        if t == FD.TYPE_DOUBLE and not f.is_repeated and owner == "sahayak.v1.ClassificationMetrics":
            return weighted((3, st.floats(0, 1)), (1, doubles))
        if (
            t == FD.TYPE_DOUBLE
            and not f.is_repeated
            and name
            in ("probability", "decision_threshold", "min_accuracy", "min_f1", "validation_fraction", "drift_share")
        ):
            return weighted((3, st.floats(0, 1)), (1, doubles))
        return None

    def _message_hint(self, desc: pbd.Descriptor, depth: int) -> st.SearchStrategy[dict[str, Any]] | None:
        name = desc.full_name
        if name == "sahayak.v1.FeatureColumns" and self.h.features:
            return feature_columns(self.h, self.text)
        if name == "sahayak.v1.CandidateColumns" and self.h.features:

            @st.composite
            def candidates(draw: Callable[..., Any]) -> dict[str, Any]:
                cols = draw(feature_columns(self.h, self.text, "scheme"))
                n = max(0, min(cols["row_count"], 10))
                ids = draw(st.sampled_from([[f"c{i}" for i in range(n)], [f"c{i}" for i in range(n + 1)], ["c"] * n]))
                benefits = draw(st.lists(doubles, min_size=n, max_size=n) | st.just([]) | st.just([1.0] * (n + 1)))
                return {"candidate_ids": ids, "benefits": benefits, "features": cols}

            return candidates()
        if name == "sahayak.v1.OutcomeColumns" and self.h.features:

            @st.composite
            def outcome_columns(draw: Callable[..., Any]) -> dict[str, Any]:
                cols = draw(feature_columns(self.h, self.text))
                n = max(0, min(cols["row_count"], 10))
                labels = draw(st.lists(st.sampled_from([1, 2, 2, 0, 7, -1]), min_size=n, max_size=n + 1))
                out: dict[str, Any] = {"features": cols, "labels": labels}
                if draw(st.booleans()):
                    out["outcome_ids"] = [draw(weighted((3, idents), (1, self.text))) for _ in range(n)]
                if draw(st.booleans()):
                    now_us = int(self.h.now_s * 1e6)
                    out["occurred_at_micros"] = [
                        draw(st.one_of(st.integers(now_us - 10**12, now_us), ints(64, True))) for _ in range(n)
                    ]
                if draw(st.booleans()):
                    out["entities"] = [
                        {
                            "name": draw(st.sampled_from(["artisan_id", "", "x" * 201])),
                            "values": [draw(self.text) for _ in range(draw(st.sampled_from([n, n + 1])))],
                        }
                    ]
                return out

            return outcome_columns()
        if name == "sahayak.v1.TimeWindow":
            now = int(self.h.now_s)
            point = st.integers(now - 800 * 86400, now + 86400)

            @st.composite
            def window(draw: Callable[..., Any]) -> dict[str, Any]:
                a, b = sorted([draw(point), draw(point)])
                out = {"start_time": {"seconds": a}, "end_time": {"seconds": b + draw(st.integers(0, 86400))}}
                for end in draw(st.sets(st.sampled_from(["start_time", "end_time"]), max_size=2)):
                    out[end] = draw(self._wkt(_WKT_TIMESTAMP))
                return out

            return window()
        if name == "sahayak.v1.FeatureSpec":
            return st.fixed_dictionaries(
                {"name": st.text(string.ascii_lowercase, min_size=1, max_size=8), "type": st.sampled_from([1, 2, 3])},
                optional={
                    "required": st.booleans(),
                    "min": doubles,
                    "max": doubles,
                    "categories": st.lists(st.sampled_from(["a", "b", "c", "weaver"]), max_size=3),
                    "allow_unknown_categories": st.booleans(),
                },
            )
        if name == "sahayak.v1.Model" and depth <= 1:
            return self._model_spec()
        return None

    def _model_spec(self) -> st.SearchStrategy[dict[str, Any]]:
        """A declarable model (fresh name, distinct feature names, sane bounds), or the real one, with settings."""

        @st.composite
        def spec(draw: Callable[..., Any]) -> dict[str, Any]:
            names = draw(
                st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=6), min_size=1, max_size=5, unique=True)
            )
            features = []
            for n in names:
                kind = draw(st.sampled_from([1, 2, 3]))
                f: dict[str, Any] = {"name": n, "type": kind, "required": draw(st.booleans())}
                if kind == 1 and draw(st.booleans()):
                    lo = draw(st.floats(-1e6, 1e6))
                    f["min"], f["max"] = lo, lo + draw(st.floats(0, 1e6))
                if kind == 2:
                    f["categories"] = draw(
                        st.lists(
                            st.sampled_from(["a", "b", "c", "weaver", "é", "x y"]), min_size=1, max_size=4, unique=True
                        )
                    )
                    f["allow_unknown_categories"] = draw(st.booleans())
                features.append(f)
            out: dict[str, Any] = {
                "name": draw(weighted((2, idents.map(lambda x: "fz-" + x)), (2, st.sampled_from(self.h.model_names)))),
                "features": features,
                "label": {"name": "y", "positive_class": "yes", "negative_class": "no"},
            }
            if draw(st.booleans()):
                out["description"] = draw(self.text)
            if draw(st.booleans()):
                out["settings"] = draw(self.kwargs(self._settings_desc(), 2))
            return out

        return spec()

    def _settings_desc(self) -> pbd.Descriptor:
        from sahayak_rpc._proto.sahayak.v1 import registry_pb2

        return registry_pb2.ModelSettings.DESCRIPTOR

    def _artifact(self) -> st.SearchStrategy[bytes]:
        h = self.h

        def mutate(data: bytes, op: str, pos: int, byte: int) -> bytes:
            if op == "intact":
                # An intact artifact registers a new version: rate-limited.
                return data if h.allow("import_intact") else data[:-1]
            i = pos % max(1, len(data))
            if op == "truncate":
                return data[:i]
            if op == "flip":
                return data[:i] + bytes([data[i] ^ (byte or 1)]) + data[i + 1 :]
            if op == "json":
                try:
                    text = gzip.decompress(data)
                except (OSError, EOFError):
                    return data
                j = pos % max(1, len(text))
                return gzip.compress(text[:j] + bytes([byte]) + text[j + 1 :])
            if op == "plain-json":
                return gzip.compress(b'{"format": "sahayak-model/1", "payload": {}, "signature": ""}')
            if op == "gzip-bomb":
                return gzip_bomb()
            return data + bytes([byte]) * 10

        return st.builds(
            mutate,
            st.sampled_from(h.artifacts),
            st.sampled_from(
                ["intact", "truncate", "flip", "flip", "json", "json", "plain-json", "gzip-bomb", "append"]
            ),
            st.integers(0, 2**31),
            st.integers(0, 255),
        )


_BOMB: list[bytes] = []


def gzip_bomb() -> bytes:
    """About 100 KB of gzip that inflates to 96 MiB of zeros (past the server's 64 MiB artifact limit)."""
    if not _BOMB:
        import zlib

        z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        chunk = bytes(1 << 20)
        _BOMB.append(b"".join([*(z.compress(chunk) for _ in range(96)), z.flush()]))
    return _BOMB[0]


# --- assembly ---------------------------------------------------------------


def _is_map(f: pbd.FieldDescriptor) -> bool:
    return f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


_ABSENT = object()


def _merge(parts: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parts:
        out.update((k, v) for k, v in p.items() if v is not _ABSENT)
    return out


def build(cls: Any, kwargs: Mapping[str, Any]) -> Any:
    """A message of ``cls`` from {field: value}; nested messages and map values come as dicts."""
    msg = cls()
    fill(msg, kwargs)
    return msg


def fill(msg: Any, kwargs: Mapping[str, Any]) -> None:
    desc = msg.DESCRIPTOR
    for name, value in kwargs.items():
        f = desc.fields_by_name[name]
        target = getattr(msg, name) if (f.is_repeated or f.type == FD.TYPE_MESSAGE) else None
        if _is_map(f):
            value_f = f.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_f.type == FD.TYPE_MESSAGE:
                    fill(target[k], v)
                else:
                    target[k] = v
        elif f.is_repeated:
            if f.type == FD.TYPE_MESSAGE:
                for item in value:
                    fill(target.add(), item)
            else:
                target.extend(value)
        elif f.type == FD.TYPE_MESSAGE:
            if isinstance(value, Mapping):
                fill(target, value)
                target.SetInParent()
            else:
                target.CopyFrom(value)
        else:
            setattr(msg, name, value)


def raw_bodies(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Request bodies that are not (or barely) protobuf: noise, known-bad encodings, damaged good ones."""

    def damage(data: bytes, op: str, pos: int, byte: int) -> bytes:
        i = pos % (len(data) + 1)
        if op == "truncate":
            return data[:i]
        if op == "flip" and data:
            i = min(i, len(data) - 1)
            return data[:i] + bytes([data[i] ^ (byte or 0x80)]) + data[i + 1 :]
        if op == "insert":
            return data[:i] + bytes([byte]) + data[i:]
        return data + bytes([byte])

    damaged = st.builds(
        lambda m, op, pos, byte: damage(m.SerializeToString(), op, pos, byte),
        valid,
        st.sampled_from(["truncate", "flip", "insert", "append"]),
        st.integers(0, 2**16),
        st.integers(0, 255),
    )
    return weighted(
        (2, st.binary(max_size=256)),
        (2, st.sampled_from(BAD_WIRE)),
        (3, damaged),
        (1, st.binary(min_size=1000, max_size=5000)),
    )
