"""Portable, code-free, tamper-evident model artifacts (format ``sahayak-model/1``).

An artifact is gzip of three newline-separated parts: the magic line
``SAHAYAK-MODEL/1``, a one-line JSON header (payload length, SHA-256 and an
HMAC-SHA256 of the payload under a named key), and the payload: canonical JSON
holding every number a scorer needs. Loading never runs code from the
artifact: it parses JSON, checks every field, and only then builds the
scorer classes this server already has. See docs/artifact.md.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import math
import numbers
import operator
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

import numpy as np
import orjson

from .encoding import MISSING, UNKNOWN, LinearEncoder, RawEncoder
from .schema import MAX_MAGNITUDE, MODEL_NAME_RE, Schema, SchemaError, schema_from_dict, schema_to_dict
from .scoring import Calibrator, LinearScorer, ScoringModel, TreeArrays, TreeScorer
from .settings import FAMILIES

__all__ = ["FORMAT", "MAGIC", "ArtifactError", "ArtifactInfo", "dump", "load", "peek"]

FORMAT = "sahayak-model/1"
MAGIC = b"SAHAYAK-MODEL/1"
DEFAULT_MAX_BYTES = 64 << 20

CALIBRATION_METHODS = ("none", "sigmoid", "isotonic")
# Hard caps, checked before any per-element work; the byte limit usually binds first.
MAX_TREE_NODES = 2_000_000
MAX_DESIGN_COLUMNS = 100_000
MAX_CALIBRATION_POINTS = 1_000_000
# MAX_MAGNITUDE (schema.py) bounds every number an artifact holds: no fitted value comes near it, and
# with it sums and products over a whole model (<= 2M tree values, <= 100k weight * mean products)
# cannot overflow to inf.
# fit_linear replaces a smaller spread with 1.0, so a valid encoder never has one.
MIN_STD = 1e-12
# The scorer's vectorised path reads a categorical split as 8 x 32-bit words.
MAX_BITSET_BITS = 256
MIN_KEY_BYTES = 16
MAX_METADATA_DEPTH = 64
# Thresholds may be +inf (scikit-learn's "missing vs everything else" split); JSON
# has no infinity, so that one value is spelled as this string.
INF = "inf"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BITSET_HEX = re.compile(r"^(0|[1-9a-f][0-9a-f]{0,63})$")  # canonical: no prefix, no leading zeros
_KEY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_MAX_INT64 = (1 << 63) - 1

_HEADER_KEYS = ("hmac_sha256", "key_id", "payload_bytes", "sha256")
_PAYLOAD_KEYS = (
    "calibration",
    "created_at_us",
    "family",
    "format",
    "linear",
    "metadata",
    "model_name",
    "raw_encoder",
    "schema",
    "threshold",
    "trees",
    "version",
)
_LINEAR_KEYS = ("column_means", "encoder", "intercept", "weights")
_TREE_KEYS = (
    "baseline",
    "bitset",
    "bitsets",
    "feature",
    "left",
    "missing_left",
    "right",
    "roots",
    "threshold",
    "value",
)
_NODE_ARRAYS = ("feature", "threshold", "missing_left", "left", "right", "value", "bitset")
_ENCODING_KEYS = {
    "numeric": ("impute", "kind", "mean", "name", "std"),
    "categorical": ("kind", "levels", "name"),
    "boolean": ("impute", "kind", "name"),
}


class ArtifactError(ValueError):
    """An artifact that cannot be written or trusted; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __repr__(self) -> str:
        return f"ArtifactError({self.field!r}, {self.message!r})"


@dataclass(frozen=True)
class ArtifactInfo:
    """What a loaded artifact says about itself (authentic when load() was given keys)."""

    model_name: str
    version: int
    family: str
    created_at_us: int
    sha256: str  # hex SHA-256 of the payload bytes
    key_id: str
    metadata: dict[str, object] = field(default_factory=dict)


# --- writing ----------------------------------------------------------------


def dump(
    model: ScoringModel,
    *,
    model_name: str,
    version: int,
    created_at_us: int,
    metadata: Mapping[str, object],
    key: bytes,
    key_id: str,
) -> bytes:
    """Serialise ``model`` into a signed artifact; raises ArtifactError if it would not load back."""
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        raise ArtifactError("key", f"the signing key must be at least {MIN_KEY_BYTES} bytes")
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ArtifactError("key_id", f"key id must match {_KEY_ID.pattern}")
    payload = {
        "format": FORMAT,
        "model_name": model_name,
        "version": version,
        "family": model.family,
        "created_at_us": created_at_us,
        "schema": schema_to_dict(model.schema),
        "threshold": _float_out(model.threshold, "payload.threshold"),
        "calibration": _calibration_out(model.calibrator),
        "linear": None,
        "trees": None,
        "raw_encoder": None,
        "metadata": _metadata_out(metadata, "payload.metadata", 0),
    }
    if model.linear is not None and model.trees is not None:
        raise ArtifactError("payload.family", "a model has either a linear or a tree scorer, not both")
    if model.linear is not None:
        payload["linear"] = _linear_out(model.linear)
    if model.trees is not None:
        payload["trees"] = _trees_out(model.trees.trees)
        raw = model.trees.raw
        payload["raw_encoder"] = {
            "names": list(raw.names),
            "kinds": list(raw.kinds),
            "categories": [list(c) for c in raw.categories],
        }
    # The same checks load() runs: an artifact that would be refused is never written.
    _check_payload(payload)
    try:
        body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise ArtifactError("payload", f"not serialisable as JSON: {exc}") from None
    header = orjson.dumps(
        {
            "sha256": hashlib.sha256(body).hexdigest(),
            "hmac_sha256": hmac.new(bytes(key), body, hashlib.sha256).hexdigest(),
            "key_id": key_id,
            "payload_bytes": len(body),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    # mtime=0: the same model and inputs always give the same bytes.
    return gzip.compress(MAGIC + b"\n" + header + b"\n" + body, compresslevel=6, mtime=0)


def _float_out(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArtifactError(path, f"must be a number, got {type(value).__name__}")
    return float(value)


def _floats_out(values: Sequence[object], path: str) -> list[float]:
    return [_float_out(v, f"{path}[{i}]") for i, v in enumerate(values)]


def _ints_out(values: Sequence[Any], path: str) -> list[int]:
    out = []
    for i, v in enumerate(values):
        try:
            out.append(operator.index(v))  # accepts numpy integers, refuses floats
        except TypeError:
            raise ArtifactError(f"{path}[{i}]", f"must be an integer, got {type(v).__name__}") from None
    return out


def _calibration_out(cal: Calibrator) -> dict[str, object]:
    d = cal.to_dict()
    for k in ("a", "b"):
        d[k] = _float_out(d[k], f"payload.calibration.{k}")
    d["x"] = _floats_out(cal.x, "payload.calibration.x")
    d["y"] = _floats_out(cal.y, "payload.calibration.y")
    return d


def _linear_out(lin: LinearScorer) -> dict[str, object]:
    encoder = lin.encoder.to_dict()
    for i, enc in enumerate(encoder):
        for k in ("impute", "mean", "std"):
            if k in enc:
                enc[k] = _float_out(enc[k], f"payload.linear.encoder[{i}].{k}")
    return {
        "encoder": encoder,
        "weights": _floats_out(lin.weights.tolist(), "payload.linear.weights"),
        "intercept": _float_out(lin.intercept, "payload.linear.intercept"),
        "column_means": _floats_out(lin.column_means.tolist(), "payload.linear.column_means"),
    }


def _trees_out(t: TreeArrays) -> dict[str, object]:
    threshold = [INF if v == math.inf else v for v in _floats_out(t.threshold, "payload.trees.threshold")]
    bitsets = []
    for i, b in enumerate(_ints_out(t.bitsets, "payload.trees.bitsets")):
        if b < 0:
            raise ArtifactError(f"payload.trees.bitsets[{i}]", "a category bitset cannot be negative")
        bitsets.append(format(b, "x"))
    missing_left = []
    for i, v in enumerate(t.missing_left):
        if not isinstance(v, bool | np.bool_):  # numpy's bool is not a bool subclass
            raise ArtifactError(f"payload.trees.missing_left[{i}]", f"must be a boolean, got {type(v).__name__}")
        missing_left.append(bool(v))
    return {
        "baseline": _float_out(t.baseline, "payload.trees.baseline"),
        "roots": _ints_out(t.roots, "payload.trees.roots"),
        "feature": _ints_out(t.feature, "payload.trees.feature"),
        "threshold": threshold,
        "missing_left": missing_left,
        "left": _ints_out(t.left, "payload.trees.left"),
        "right": _ints_out(t.right, "payload.trees.right"),
        "value": _floats_out(t.value, "payload.trees.value"),
        "bitset": _ints_out(t.bitset, "payload.trees.bitset"),
        "bitsets": bitsets,
    }


def _metadata_out(value: object, path: str, depth: int) -> object:
    """A plain-JSON copy of caller metadata; refuses what would not survive the round trip."""
    if depth > MAX_METADATA_DEPTH:
        raise ArtifactError(path, f"nested deeper than {MAX_METADATA_DEPTH} levels")
    if depth == 0 and not isinstance(value, Mapping):
        raise ArtifactError(path, f"must be a dict, got {type(value).__name__}")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        v = int(value)
        if not -(1 << 63) <= v < (1 << 64):
            raise ArtifactError(path, "integer out of the 64-bit range JSON parsers keep exactly")
        return v
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            # JSON has no NaN/inf (orjson would silently write null): the caller must choose a value.
            raise ArtifactError(path, f"must be finite, got {f}; use null for an unknown value")
        return f
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ArtifactError(path, f"keys must be strings, got {type(k).__name__}")
            out[k] = _metadata_out(v, f"{path}.{k}", depth + 1)
        return out
    if isinstance(value, list | tuple):  # a tuple comes back as a list
        return [_metadata_out(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise ArtifactError(path, f"must be JSON data (null, bool, number, string, list, dict), got {type(value).__name__}")


# --- reading ----------------------------------------------------------------


def load(
    data: bytes, *, keys: Mapping[str, bytes] | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[ScoringModel, ArtifactInfo]:
    """Verify integrity and signature (``keys``: key id -> HMAC key), validate every field, build the model.

    ``keys=None`` skips only the signature, for clients whose authenticated channel is the trust anchor."""
    header, body = _unwrap(data, max_bytes)
    # None must be passed explicitly (no default): skipping authenticity is never an accident.
    if keys is not None:
        key = keys.get(header["key_id"])
        if key is None:
            raise ArtifactError("key_id", f"signed by a key this server does not trust (key id {header['key_id']!r})")
        expected = hmac.new(bytes(key), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, header["hmac_sha256"]):
            raise ArtifactError(
                "signature",
                f"HMAC does not match key {header['key_id']!r}: the artifact was tampered "
                "with or re-signed with another key",
            )
    payload = _parse_json(body)
    checked = _check_payload(payload)
    info = ArtifactInfo(
        model_name=checked.model_name,
        version=checked.version,
        family=checked.family,
        created_at_us=checked.created_at_us,
        sha256=header["sha256"],
        key_id=header["key_id"],
        metadata=checked.metadata,
    )
    return checked.build(), info


def peek(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, object]:
    """Header and self-description of an artifact, checking integrity but NOT the signature: display only."""
    header, body = _unwrap(data, max_bytes)
    payload = _parse_json(body)
    if not isinstance(payload, dict):
        raise ArtifactError("payload", "must be a JSON object")
    # Unverified: anyone can write these fields; never act on them.
    return {
        "header": dict(header),
        **{k: payload.get(k) for k in ("format", "model_name", "version", "family", "created_at_us", "metadata")},
    }


def _unwrap(data: bytes, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    """Size, gzip, magic, header, length and SHA-256 checks; returns (header, payload bytes)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ArtifactError("artifact", f"must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise ArtifactError("size", f"{len(data)} bytes is more than the limit of {max_bytes}")
    # Never gzip.decompress untrusted input: a few KB can inflate to gigabytes.
    # One bounded call reads at most max_bytes + 1 bytes of output.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(bytes(data), max_bytes + 1)
    except zlib.error as exc:
        raise ArtifactError("gzip", f"not a gzip stream ({exc})") from None
    if len(raw) > max_bytes:
        raise ArtifactError("size", f"inflates to more than the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise ArtifactError("gzip", "the gzip stream is truncated")
    if inflater.unused_data:
        raise ArtifactError("gzip", f"{len(inflater.unused_data)} unexpected bytes after the gzip stream")

    magic, sep, rest = raw.partition(b"\n")
    if magic != MAGIC or not sep:
        shown = magic[:32].decode("ascii", "replace")
        raise ArtifactError("magic", f"not a {MAGIC.decode()} artifact (first line {shown!r})")
    line, sep, body = rest.partition(b"\n")
    if not sep:
        raise ArtifactError("header", "missing the header line")
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ArtifactError("header", f"not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ArtifactError("header", "must be a JSON object")
    _exact_keys(header, "header", _HEADER_KEYS)
    for name in ("sha256", "hmac_sha256"):
        if not isinstance(header[name], str) or not _HEX64.fullmatch(header[name]):
            raise ArtifactError(f"header.{name}", "must be 64 lowercase hex digits")
    if not isinstance(header["key_id"], str) or not _KEY_ID.fullmatch(header["key_id"]):
        raise ArtifactError("header.key_id", f"must match {_KEY_ID.pattern}")
    size = header["payload_bytes"]
    if type(size) is not int or size < 0:
        raise ArtifactError("header.payload_bytes", "must be a non-negative integer")
    if size != len(body):
        raise ArtifactError("payload_bytes", f"the header announces {size} payload bytes but there are {len(body)}")
    if hashlib.sha256(body).hexdigest() != header["sha256"]:
        raise ArtifactError("sha256", "the payload's SHA-256 does not match the header: the artifact is corrupted")
    return header, body


def _parse_json(body: bytes) -> object:
    try:
        return orjson.loads(body)  # strict JSON: NaN, Infinity and 1e999 are refused here
    except orjson.JSONDecodeError as exc:
        raise ArtifactError("payload", f"not valid JSON: {exc}") from None


# --- validation ---------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    """A payload that passed every check, with its parts already decoded."""

    model_name: str
    version: int
    family: str
    created_at_us: int
    schema: Schema
    threshold: float
    calibrator: Calibrator
    metadata: dict[str, object]
    linear: tuple[LinearEncoder, list[float], float, list[float]] | None
    trees: tuple[TreeArrays, RawEncoder] | None

    def build(self) -> ScoringModel:
        linear = trees = None
        if self.linear is not None:
            encoder, weights, intercept, means = self.linear
            linear = LinearScorer(
                encoder,
                np.asarray(weights, dtype=np.float64),
                intercept,
                np.asarray(means, dtype=np.float64),
                RawEncoder.from_schema(self.schema),
            )
        if self.trees is not None:
            trees = TreeScorer(*self.trees)
        return ScoringModel(self.schema, self.family, self.threshold, self.calibrator, linear=linear, trees=trees)


def _fail(path: str, message: str) -> NoReturn:
    raise ArtifactError(path, message)


def _exact_keys(d: dict[str, object], path: str, keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in d]
    extra = sorted(k for k in d if k not in keys)
    if missing:
        _fail(f"{path}.{missing[0]}", f"missing {', '.join(missing)}")
    if extra:
        _fail(f"{path}.{extra[0]}", f"unexpected field(s) {', '.join(map(repr, extra))}")


def _obj(value: object, path: str, keys: Sequence[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        _fail(path, f"must be an object, got {_kind(value)}")
    _exact_keys(value, path, keys)
    return value


def _kind(value: object) -> str:
    return {
        type(None): "null",
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _num(value: object, path: str, lo: float = -MAX_MAGNITUDE, hi: float = MAX_MAGNITUDE) -> float:
    if type(value) is not float and type(value) is not int:  # bool is an int subclass: excluded by `type is`
        _fail(path, f"must be a number, got {_kind(value)}")
    f = float(value)
    if not math.isfinite(f):
        _fail(path, f"must be finite, got {f}")
    if not lo <= f <= hi:
        _fail(path, f"{f} is outside [{lo:g}, {hi:g}]")
    return f


def _int(value: object, path: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        _fail(path, f"must be an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        _fail(path, f"{value} is outside [{lo}, {hi}]")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, f"must be a string, got {_kind(value)}")
    return value


def _list(value: object, path: str, max_len: int, length: int | None = None) -> list[object]:
    if not isinstance(value, list):
        _fail(path, f"must be a list, got {_kind(value)}")
    if length is not None and len(value) != length:
        _fail(path, f"has {len(value)} entries, expected {length}")
    if len(value) > max_len:
        _fail(path, f"has {len(value)} entries, at most {max_len} allowed")
    return value


def _nums(value: object, path: str, max_len: int, length: int | None = None) -> list[float]:
    items = _list(value, path, max_len, length)
    return [_num(v, f"{path}[{i}]") for i, v in enumerate(items)]


def _check_payload(p: object) -> _Checked:
    """Every structural rule of the format; nothing is built until all of them hold."""
    if not isinstance(p, dict):
        _fail("payload", f"must be a JSON object, got {_kind(p)}")
    # The format first, so a newer artifact says so instead of listing unknown fields.
    if p.get("format") != FORMAT:
        _fail("payload.format", f"unsupported format {p.get('format')!r}; this server reads {FORMAT!r}")
    _exact_keys(p, "payload", _PAYLOAD_KEYS)
    name = _str(p["model_name"], "payload.model_name")
    if not MODEL_NAME_RE.fullmatch(name):
        _fail("payload.model_name", f"{name!r} must match {MODEL_NAME_RE.pattern}")
    version = _int(p["version"], "payload.version", 1, _MAX_INT64)
    created = _int(p["created_at_us"], "payload.created_at_us", 0, _MAX_INT64)
    family = _str(p["family"], "payload.family")
    if family not in FAMILIES:
        _fail("payload.family", f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    schema = _check_schema(p["schema"])
    threshold = _num(p["threshold"], "payload.threshold")
    if not 0.0 < threshold < 1.0:
        _fail("payload.threshold", f"{threshold} must be in (0, 1)")
    calibrator = _check_calibration(p["calibration"])
    # Exactly the family's own section: a stray section would be signed but never checked against use.
    wants = {
        "linear": family == "logistic_regression",
        "trees": family == "gradient_boosting",
        "raw_encoder": family == "gradient_boosting",
    }
    for section, wanted in wants.items():
        if wanted and p[section] is None:
            _fail(f"payload.{section}", f"a {family} model needs this section")
    for section, wanted in wants.items():
        if not wanted and p[section] is not None:
            _fail(f"payload.{section}", f"must be null for a {family} model")
    metadata = p["metadata"]
    if not isinstance(metadata, dict):
        _fail("payload.metadata", f"must be an object, got {_kind(metadata)}")
    linear = _check_linear(p["linear"], schema) if family == "logistic_regression" else None
    trees = _check_trees(p["trees"], p["raw_encoder"], schema) if family == "gradient_boosting" else None
    return _Checked(name, version, family, created, schema, threshold, calibrator, metadata, linear, trees)


def _check_schema(d: object) -> Schema:
    if not isinstance(d, dict):
        _fail("payload.schema", f"must be an object, got {_kind(d)}")
    try:
        schema = schema_from_dict(d)
    except SchemaError as exc:
        first = exc.errors[0]
        where = "" if first.field == "schema" else f".{first.field}"
        raise ArtifactError(f"payload.schema{where}", str(exc)) from None
    # schema_from_dict coerces (str(), bool()); demanding its exact output back refuses anything it bent.
    if schema_to_dict(schema) != d:
        _fail("payload.schema", "not in canonical form (a field has the wrong type, or one is missing or extra)")
    return schema


def _check_calibration(d: object) -> Calibrator:
    c = _obj(d, "payload.calibration", ("a", "b", "method", "x", "y"))
    method = _str(c["method"], "payload.calibration.method")
    if method not in CALIBRATION_METHODS:
        _fail(
            "payload.calibration.method", f"unknown method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    a = _num(c["a"], "payload.calibration.a")
    b = _num(c["b"], "payload.calibration.b")
    x = _nums(c["x"], "payload.calibration.x", MAX_CALIBRATION_POINTS)
    y = _nums(c["y"], "payload.calibration.y", MAX_CALIBRATION_POINTS)
    if method != "isotonic":
        if x or y:
            _fail("payload.calibration.x", f"must be empty for {method} calibration")
    else:
        if not x:
            _fail("payload.calibration.x", "isotonic calibration needs at least one point")
        if len(x) != len(y):
            _fail("payload.calibration.y", f"has {len(y)} points for {len(x)} x values")
        for i in range(1, len(x)):
            if x[i] < x[i - 1]:  # ties are fine (a vertical step); a decrease breaks interpolation
                _fail(f"payload.calibration.x[{i}]", f"{x[i]} is below the previous {x[i - 1]}: must be non-decreasing")
        for i, v in enumerate(y):
            if not 0.0 <= v <= 1.0:
                _fail(f"payload.calibration.y[{i}]", f"{v} is not a probability in [0, 1]")
    return Calibrator(method, a, b, tuple(x), tuple(y))


def _check_linear(d: object, schema: Schema) -> tuple[LinearEncoder, list[float], float, list[float]]:
    lin = _obj(d, "payload.linear", _LINEAR_KEYS)
    items = _list(lin["encoder"], "payload.linear.encoder", len(schema.features), len(schema.features))
    width = 0
    encodings: list[dict[str, Any]] = []  # the items, each checked
    for i, (item, spec) in enumerate(zip(items, schema.features, strict=True)):
        path = f"payload.linear.encoder[{i}]"
        kind = spec.type.name.lower()
        if not isinstance(item, dict):
            _fail(path, f"must be an object, got {_kind(item)}")
        if item.get("name") != spec.name or item.get("kind") != kind:
            _fail(
                path,
                f"encodes {item.get('name')!r} ({item.get('kind')!r}) where the schema has "
                f"{spec.name!r} ({kind}): the encoder must follow the schema's features in order",
            )
        _exact_keys(item, path, _ENCODING_KEYS[kind])
        encodings.append(item)
        if kind == "categorical":
            # The scorer looks these two levels up by name: they must be there, last, in this order.
            expected = [*spec.categories, UNKNOWN, MISSING]
            if item["levels"] != expected:
                _fail(f"{path}.levels", f"must be the schema's categories then {UNKNOWN!r}, {MISSING!r}")
            width += len(expected)
        else:
            _num(item["impute"], f"{path}.impute")
            if kind == "numeric":
                _num(item["mean"], f"{path}.mean")
                _num(item["std"], f"{path}.std", lo=MIN_STD)
            width += 2
        if width > MAX_DESIGN_COLUMNS:
            _fail("payload.linear.encoder", f"more than {MAX_DESIGN_COLUMNS} design columns")
    weights = _nums(lin["weights"], "payload.linear.weights", MAX_DESIGN_COLUMNS, width)
    means = _nums(lin["column_means"], "payload.linear.column_means", MAX_DESIGN_COLUMNS, width)
    intercept = _num(lin["intercept"], "payload.linear.intercept")
    return LinearEncoder.from_dict(encodings), weights, intercept, means


def _check_trees(d: object, raw_d: object, schema: Schema) -> tuple[TreeArrays, RawEncoder]:
    raw = RawEncoder.from_schema(schema)
    r = _obj(raw_d, "payload.raw_encoder", ("categories", "kinds", "names"))
    for part, expected in (
        ("names", list(raw.names)),
        ("kinds", list(raw.kinds)),
        ("categories", [list(c) for c in raw.categories]),
    ):
        got = _list(r[part], f"payload.raw_encoder.{part}", len(expected), len(expected))
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            if g != e:
                _fail(f"payload.raw_encoder.{part}[{i}]", f"{g!r} differs from the schema's {e!r}")

    t = _obj(d, "payload.trees", _TREE_KEYS)
    n = len(_list(t["feature"], "payload.trees.feature", MAX_TREE_NODES))
    for name in _NODE_ARRAYS:
        _list(t[name], f"payload.trees.{name}", MAX_TREE_NODES, n)
    baseline = _num(t["baseline"], "payload.trees.baseline")
    roots = [
        _int(v, f"payload.trees.roots[{i}]", 0, max(n - 1, 0))
        for i, v in enumerate(_list(t["roots"], "payload.trees.roots", n))
    ]
    # Trees are contiguous runs of nodes starting at their roots and covering every node.
    if (n == 0) != (not roots):
        _fail("payload.trees.roots", "nodes without trees" if n else "trees without nodes")
    if roots and roots[0] != 0:
        _fail("payload.trees.roots[0]", "the first tree must start at node 0")
    for i in range(1, len(roots)):
        if roots[i] <= roots[i - 1]:
            _fail(f"payload.trees.roots[{i}]", "roots must be strictly increasing")
    bitsets: list[int] = []
    for i, h in enumerate(_list(t["bitsets"], "payload.trees.bitsets", max(n, 1))):
        if not isinstance(h, str) or not _BITSET_HEX.fullmatch(h):
            _fail(
                f"payload.trees.bitsets[{i}]",
                f"must be lowercase hex (no prefix, no leading zeros) below 2**{MAX_BITSET_BITS}",
            )
        bitsets.append(int(h, 16))

    n_features = len(raw.names)
    # Categorical splits only on categorical features the scorer's 256-bit words can cover.
    splittable = [
        k == "categorical" and len(c) <= MAX_BITSET_BITS for k, c in zip(raw.kinds, raw.categories, strict=True)
    ]
    # Each checked above to be a list of n entries.
    feature, threshold, missing_left = (cast(list[Any], t[k]) for k in ("feature", "threshold", "missing_left"))
    left, right, value, bitset = (cast(list[Any], t[k]) for k in ("left", "right", "value", "bitset"))
    thresholds: list[float] = []
    values: list[float] = []
    for k, start in enumerate(roots):
        end = roots[k + 1] if k + 1 < len(roots) else n
        for i in range(start, end):
            f = _int(feature[i], f"payload.trees.feature[{i}]", -1, n_features - 1)
            if not isinstance(missing_left[i], bool):
                _fail(f"payload.trees.missing_left[{i}]", f"must be a boolean, got {_kind(missing_left[i])}")
            values.append(_num(value[i], f"payload.trees.value[{i}]"))
            if f == -1:  # a leaf
                for name, arr in (("left", left), ("right", right), ("bitset", bitset)):
                    if arr[i] != -1 or type(arr[i]) is not int:
                        _fail(f"payload.trees.{name}[{i}]", f"node {i} is a leaf (feature -1): must be -1")
                thresholds.append(_num(threshold[i], f"payload.trees.threshold[{i}]"))
                continue
            for name, arr in (("left", left), ("right", right)):
                # Children strictly after the parent and inside its tree: every walk ends.
                child = arr[i]
                if type(child) is not int or not i < child < end:
                    _fail(
                        f"payload.trees.{name}[{i}]",
                        f"node {i}'s {name} child {child!r} must be a node after it "
                        f"in its own tree ({i + 1}..{end - 1})",
                    )
            b = _int(bitset[i], f"payload.trees.bitset[{i}]", -1, len(bitsets) - 1)
            if b >= 0 and not splittable[f]:
                _fail(
                    f"payload.trees.bitset[{i}]",
                    f"node {i} splits {raw.names[f]!r} by category, but it is "
                    f"{raw.kinds[f]} (or has more than {MAX_BITSET_BITS} categories)",
                )
            thr = threshold[i]
            if isinstance(thr, str) and thr != INF:
                _fail(f"payload.trees.threshold[{i}]", f"must be a number or {INF!r} (+infinity), got {thr!r}")
            thresholds.append(math.inf if thr == INF else _num(thr, f"payload.trees.threshold[{i}]"))
    trees = TreeArrays(
        baseline=baseline,
        roots=tuple(roots),
        feature=tuple(feature),
        threshold=tuple(thresholds),
        missing_left=tuple(missing_left),
        left=tuple(left),
        right=tuple(right),
        value=tuple(values),
        bitset=tuple(bitset),
        bitsets=tuple(bitsets),
    )
    return trees, raw
