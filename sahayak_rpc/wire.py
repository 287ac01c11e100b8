"""A single-row Predict read straight from its wire bytes, and answered in bytes.

protobuf's parse of a PredictRequest builds a message, a map and one
FeatureValue wrapper per feature, which Python then walks name by name: for
a twenty-feature row that was most of what Predict cost us. ``PredictReader``
instead reads the request's bytes in one compiled pass (kernels.read_explain)
into the row's raw layout (as MatrixCheck and ScoringModel.predict_matrix
take it), checking every value against the model's schema as it goes; when
the request names no version or alias and the champion is linear, the same
pass explains the row. ``PredictWriter`` writes the PredictResponse's bytes.

It reads only the plain shape (the model's name first, each field once, each
entry a known feature name with one value of its kind that passes the
schema's rules, no entities, no unknown field, a version a float64 holds)
and says None to anything else; the caller then parses the bytes with
protobuf and takes the long way, which names any error. So a request is
answered the same either way, and the tests hold the two to that
(tests/test_wire.py). Bytes are read as little-endian, as the wire stores
them: the reader is off on a big-endian machine.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .schema import FeatureType, Schema

ENABLED = sys.byteorder == "little"
_NO_TABLES = (np.zeros((3, 0), dtype=np.int64), np.zeros((3, 0)), np.zeros(1), 0.0)
_DOUBLE = struct.Struct("<d").pack
_KIND = {FeatureType.NUMERIC: 1, FeatureType.CATEGORICAL: 2, FeatureType.BOOLEAN: 3}


class WireRow(NamedTuple):
    """What ``PredictReader.read`` took from a PredictRequest: its fields, and its row in the raw
    layout, explained when the request named no version or alias and tables were given."""
    model: Any  # what ``read`` was given as the request's model
    version: int
    alias: str
    explain_top_k: int
    x: np.ndarray  # the row (its first values, one per feature), then the kernel's working space
    explained: Any  # ``read``'s ``owner`` when the row was explained with its tables, else None
    explanation: list[float]  # when explained: the raw score, k contributions, k positions, k values

def model_name(data: bytes) -> str | None:
    """The model a PredictRequest's bytes name, when they name it first (field 1, as every protobuf
    library writes fields in order) in fewer than 128 bytes of UTF-8: the name says which schema
    PredictReader reads the rest with (and read_predict refuses a second model field). None otherwise."""
    if not ENABLED or len(data) < 3 or data[0] != 0x0A or data[1] >= 0x80:
        return None
    try:
        return data[2:2 + data[1]].decode()
    except UnicodeDecodeError:
        return None


class PredictReader:
    """A model's schema as the tables kernels.read_predict looks feature names and categories up in."""

    def __init__(self, schema: Schema) -> None:
        from . import kernels  # numba loads with the first reader, not with every import of the writers

        self._read = kernels.read_explain
        keys: list[tuple[int, bytes, int]] = []  # (space, bytes, value): space 0 names, j + 1 feature j's categories
        kinds, bounds = [], []
        for j, f in enumerate(schema.features):
            keys.append((0, f.name.encode(), j))
            if f.type is FeatureType.CATEGORICAL:
                keys += [(j + 1, c.encode(), i) for i, c in enumerate(f.categories)]
            kinds.append(-_KIND[f.type] if f.required else _KIND[f.type])
            lo, hi = schema.bounds(f.name)
            bounds.append((lo, hi) if f.type is FeatureType.NUMERIC else (0.0, 0.0))
        self.width = len(schema.features)
        self._text = np.frombuffer(b"".join(k[1] for k in keys) or b"\0", dtype=np.uint8)
        size = 1 << max(3, (2 * len(keys)).bit_length())  # at most half full
        self._slots = np.full(size, -1, dtype=np.int64)
        self._entries = np.zeros((len(keys), 4), dtype=np.int64)
        at = 0
        for e, (space, word, value) in enumerate(keys):
            self._entries[e] = (space, at, len(word), value)
            i = int(kernels.wire_hash(self._text, at, len(word), space)) & (size - 1)
            while self._slots[i] >= 0:
                i = (i + 1) & (size - 1)
            self._slots[i] = e
            at += len(word)
        self._kinds = np.array(kinds, dtype=np.int64)
        self._bounds = np.array(bounds, dtype=np.float64).reshape(-1, 2)

    def read(self, data: bytes, model: Any, tables: tuple[np.ndarray, ...] | None = None, owner: Any = None,
             default_k: int = 3) -> WireRow | None:
        """The request in ``data`` if it is of the plain shape, every value checked; None otherwise.
        ``model`` stands for the model the request names (the caller looked its name up; the request
        names it once). With ``tables`` (a linear model's, ScoringModel.explain_tables), a request
        that names no version or alias is explained as it is read, with ``default_k`` contributions
        when it asks for none, and the row says so by carrying ``owner``."""
        width = self.width
        buf = np.empty(4 * width + 9)
        size = self._read(data, self._text, self._slots, self._entries, self._kinds, self._bounds,
                     *(tables or _NO_TABLES)[:4], default_k, buf)
        if size < 0:
            return None
        # Only the fields and the explanation become Python numbers here; the row stays in buf.
        _, _, a_start, a_size, version, top_k, _, explained, *explanation = buf[width:width + size].tolist()
        alias = ""
        if a_size > 0:
            try:
                alias = data[int(a_start):int(a_start + a_size)].decode()
            except UnicodeDecodeError:  # protobuf refuses it: its error, the long way
                return None
        return WireRow(model, int(version), alias, int(top_k), buf, owner if explained else None, explanation)


def varint(value: int) -> bytes:
    """An int as a protobuf varint (a negative one as its 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_TAGS = [bytes((n << 3 | 2,)) for n in range(16)]  # length-delimited fields 0-15: one-byte tags
_SMALL = [b"\x20" + bytes((v,)) for v in range(128)]  # PredictResponse.version, when below 128
_LABEL = {v: b"\x18" + bytes((v,)) for v in (1, 2)}  # PredictResponse.label


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field in protobuf's wire format: tag, length, payload."""
    size = len(payload)
    tag = _TAGS[number] if number < 16 else varint(number << 3 | 2)
    return tag + (bytes((size,)) if size < 128 else varint(size)) + payload


class PredictWriter:
    """A PredictResponse written as bytes, for a row read by PredictReader: the same message protobuf
    would build from the same values (tests/test_wire.py parses one and compares), without building
    it. Per feature, its name's field and its values' fields are made once."""

    def __init__(self, schema: Schema) -> None:
        self._name = [field(1, f.name.encode()) for f in schema.features]  # FeatureContribution.feature
        self._kind = [_KIND[f.type] for f in schema.features]
        # FeatureContribution.value (field 3), a FeatureValue: a category's string_value, a boolean's bool_value.
        self._words = [[field(3, field(2, c.encode())) for c in f.categories] for f in schema.features]
        self._bools = (field(3, b"\x18\x00"), field(3, b"\x18\x01"))

    def write(self, prediction_id: str, probability: float, label: int, version: int,
              contributions: Sequence[tuple[float, int, float]]) -> bytes:
        """PredictResponse{prediction_id, probability, label, version, contributions} as bytes; a
        contribution is (contribution, the feature's column in the raw layout, its value there; NaN:
        none)."""
        parts = [field(1, prediction_id.encode()), b"\x11", _DOUBLE(probability), _LABEL[label],
                 _SMALL[version] if version < 128 else b"\x20" + varint(version)]
        kinds, words, names = self._kind, self._words, self._name
        for c, j, v in contributions:
            kind = kinds[j]
            if v != v:
                value = b""
            elif kind == 1:
                value = b"\x1a\x09\x09" + _DOUBLE(v)
            elif kind == 2:
                value = words[j][int(v)]
            else:
                value = self._bools[v == 1.0]
            parts.append(field(5, names[j] + b"\x11" + _DOUBLE(c) + value))
        return b"".join(parts)
