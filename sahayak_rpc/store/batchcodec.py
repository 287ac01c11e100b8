"""The stored form of a logged prediction batch: its feature columns and probabilities.

A served batch is logged whole, as one row of ``prediction_batches``. Its
columns are a binary layout (arrays copied as they are, no per-value work),
so logging keeps up with scoring. They are written to a log segment beside
the database, the row holding a reference to them (store/segments.py), unless
the database has a page cap; either way they read back the same::

    b"SBC1" | header length (uint32, little-endian) | header (JSON) | arrays

The header is ``{"n": rows, "columns": [...]}``; each column is
``{"name", "kind", "offset", "bytes"}`` (offset counted from the end of the
header) plus, by kind:

- ``f8`` / ``f4``: little-endian float64 / float32 numbers, NaN = missing;
- ``bool``: float32 0 / 1, NaN = missing;
- ``codes``: little-endian int32 codes into ``"dictionary"`` (a list of
  strings), -1 = missing;
- ``strings``: the values in the header's ``"values"`` (a list; "" = missing).

A batch that came as one [n, F] matrix (the Open Inference Protocol's
tensor) is stored split in two arrays, each row-major, with no per-value
work: ``{"n": rows, "split": {"dtype": "f4" | "f8", "codes": "i1" | "i2" |
"i4", "columns": [...]}}`` where each column is ``{"name", "kind": "number" |
"bool" | "category"}`` (a category column also has its ``"dictionary"``).
The body is the number columns as an [n, numbers] array of ``dtype`` (NaN =
missing), then the bool and category columns as an [n, codes] array of
``codes`` integers (0 / 1 for a boolean, an index into the dictionary for a
category, -1 = missing), each in the header's column order. A category or a
boolean takes one byte per row, not four or eight. Batches logged before
this form hold the whole matrix in one array, ``{"n": rows, "matrix":
{"dtype", "columns"}}``, a category as its index in floating point (NaN =
missing); they still decode. Decoding splits either into the columns above.

Probabilities are little-endian float64, n of them, with no header.

Rows logged by versions before this layout hold JSON text in the same
columns (a dict of column name to values, and a list of probabilities);
``decode_columns`` and ``decode_probabilities`` read both.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

MAGIC = b"SBC1"
_LEN = struct.Struct("<I")


def encode_columns(columns: Sequence[Any], n: int, booleans: frozenset[str] = frozenset()) -> bytes:
    """``columns``: schema.Column objects of ``n`` rows; ``booleans``: names of boolean features."""
    specs: list[dict[str, Any]] = []
    arrays: list[bytes] = []
    offset = 0
    for c in columns:
        spec: dict[str, Any] = {"name": c.name}
        data = b""
        if c.codes is not None:
            spec["kind"], spec["dictionary"] = "codes", list(c.dictionary or ())
            data = np.asarray(c.codes, dtype="<i4").tobytes()
        elif c.numbers is not None:
            arr = np.asarray(c.numbers)
            if c.name in booleans:
                spec["kind"], data = "bool", arr.astype("<f4").tobytes()
            elif arr.dtype == np.float32:
                spec["kind"], data = "f4", arr.astype("<f4", copy=False).tobytes()
            else:
                spec["kind"], data = "f8", arr.astype("<f8", copy=False).tobytes()
        else:
            spec["kind"], spec["values"] = "strings", list(c.strings or ())
        spec["offset"], spec["bytes"] = offset, len(data)
        offset += len(data)
        specs.append(spec)
        arrays.append(data)
    header = orjson.dumps({"n": n, "columns": specs})
    return b"".join([MAGIC, _LEN.pack(len(header)), header, *arrays])


class MatrixLayout:
    """How a model's [n, F] matrices are logged: worked out once per schema.

    ``columns``: (name, "number" | "bool" | "category", dictionary) in matrix order.
    """

    def __init__(self, columns: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        kinds = [kind for _, kind, _ in columns]
        if any(k not in ("number", "bool", "category") for k in kinds):
            raise ValueError(f"unknown column kind in {kinds}")
        self.numbers = np.array([j for j, k in enumerate(kinds) if k == "number"], dtype=np.intp)
        self.codes = np.array([j for j, k in enumerate(kinds) if k != "number"], dtype=np.intp)
        widest = max([len(d) for _, k, d in columns if k == "category"] + [2])
        self.codes_dtype = "i1" if widest <= 127 else "i2" if widest <= 32767 else "i4"
        specs = [
            {"name": name, "kind": kind, **({"dictionary": list(d)} if kind == "category" else {})}
            for name, kind, d in columns
        ]
        # The header but for n and the dtype, which vary per batch (encode_matrix puts them in front).
        self.header_tail = orjson.dumps({"codes": self.codes_dtype, "columns": specs})[1:]


def encode_matrix(x: np.ndarray, layout: MatrixLayout) -> bytes:
    """An [n, F] float32/float64 matrix whose bool and category columns hold whole numbers in range
    (or NaN), as checked before scoring."""
    dtype = "f4" if x.dtype == np.float32 else "f8"
    numbers = x.take(layout.numbers, axis=1).astype("<" + dtype, copy=False)
    codes = x.take(layout.codes, axis=1)  # a copy: ours to change
    codes[np.isnan(codes)] = -1.0  # (nan_to_num also scans for infinities, which checks ruled out)
    codes = codes.astype("<" + layout.codes_dtype)
    header = b'{"n":%d,"split":{"dtype":"%s",%s}' % (x.shape[0], dtype.encode(), layout.header_tail)
    return b"".join([MAGIC, _LEN.pack(len(header)), header, numbers.tobytes(), codes.tobytes()])


def encode_probabilities(probabilities: np.ndarray) -> bytes:
    """Probabilities as stored: little-endian float64, back to back."""
    return np.asarray(probabilities, dtype="<f8").tobytes()


class BatchFormatError(ValueError):
    """A stored batch that does not decode (corrupt row)."""


def decode_columns(data: bytes | str) -> dict[str, Any]:
    """Column name -> one of: a float64 (or float32, as sent) array (NaN = missing) for numbers; a list of
    True / False / None for booleans; ``{"dictionary": [...], "codes": int array}``
    (-1 = missing); a list of strings ("" = missing)."""
    if isinstance(data, str):  # the JSON text of older rows
        return dict(orjson.loads(data))
    if data[:4] != MAGIC or len(data) < 8:
        raise BatchFormatError("not a logged batch")
    (size,) = _LEN.unpack_from(data, 4)
    header = orjson.loads(data[8 : 8 + size])
    body = memoryview(data)[8 + size :]
    n = int(header["n"])
    out: dict[str, Any] = {}
    if "split" in header:
        return _decode_split(header["split"], body, n)
    if "matrix" in header:
        return _decode_matrix(header["matrix"], body, n)
    for spec in header["columns"]:
        kind, start, length = spec["kind"], int(spec["offset"]), int(spec["bytes"])
        raw = body[start : start + length]
        if kind == "strings":
            out[spec["name"]] = spec["values"]
        elif kind == "codes":
            out[spec["name"]] = {"dictionary": spec["dictionary"], "codes": np.frombuffer(raw, dtype="<i4", count=n)}
        elif kind == "bool":
            values = np.frombuffer(raw, dtype="<f4", count=n)
            out[spec["name"]] = [None if v != v else v == 1.0 for v in values.tolist()]
        elif kind in ("f8", "f4"):  # float32 stays float32: value_at gives its shortest decimal
            out[spec["name"]] = np.frombuffer(raw, dtype="<" + kind, count=n)
        else:
            raise BatchFormatError(f"unknown column kind {kind!r}")
    return out


def _decode_matrix(spec: dict[str, Any], body: memoryview, n: int) -> dict[str, Any]:
    columns = spec["columns"]
    if spec["dtype"] not in ("f4", "f8"):
        raise BatchFormatError(f"unknown matrix dtype {spec['dtype']!r}")
    x = np.frombuffer(body, dtype="<" + spec["dtype"], count=n * len(columns)).reshape(n, len(columns))
    out: dict[str, Any] = {}
    for j, col in enumerate(columns):
        values = x[:, j]
        if col["kind"] == "category":
            codes = np.where(np.isnan(values), -1, values).astype(np.int32)
            out[col["name"]] = {"dictionary": col["dictionary"], "codes": codes}
        elif col["kind"] == "bool":
            out[col["name"]] = [None if v != v else v == 1.0 for v in values.tolist()]
        elif col["kind"] == "number":
            out[col["name"]] = np.ascontiguousarray(values)
        else:
            raise BatchFormatError(f"unknown column kind {col['kind']!r}")
    return out


def _decode_split(spec: dict[str, Any], body: memoryview, n: int) -> dict[str, Any]:
    columns = spec["columns"]
    if spec["dtype"] not in ("f4", "f8") or spec["codes"] not in ("i1", "i2", "i4"):
        raise BatchFormatError(f"unknown split dtypes {spec['dtype']!r}, {spec['codes']!r}")
    number_cols = [c for c in columns if c["kind"] == "number"]
    code_cols = [c for c in columns if c["kind"] != "number"]
    number_type, code_type = np.dtype("<" + spec["dtype"]), np.dtype("<" + spec["codes"])
    split = n * len(number_cols) * number_type.itemsize
    if len(body) != split + n * len(code_cols) * code_type.itemsize:
        raise BatchFormatError(f"a split batch of {n} rows has {len(body)} bytes of data")
    numbers = np.frombuffer(body[:split], dtype=number_type).reshape(n, len(number_cols))
    codes = np.frombuffer(body[split:], dtype=code_type).reshape(n, len(code_cols))
    out: dict[str, Any] = {}
    for j, col in enumerate(number_cols):
        out[col["name"]] = np.ascontiguousarray(numbers[:, j])
    for j, col in enumerate(code_cols):
        if col["kind"] == "category":
            out[col["name"]] = {"dictionary": col["dictionary"], "codes": codes[:, j].astype(np.int32)}
        elif col["kind"] == "bool":
            out[col["name"]] = [None if v < 0 else v == 1 for v in codes[:, j].tolist()]
        else:
            raise BatchFormatError(f"unknown column kind {col['kind']!r}")
    return {c["name"]: out[c["name"]] for c in columns}  # in the header's order


def decode_probabilities(data: bytes | str) -> list[float]:
    """Stored probabilities (``encode_probabilities``'s bytes, or older rows' JSON text) as a list."""
    if isinstance(data, str):
        return list(orjson.loads(data))
    return np.frombuffer(data, dtype="<f8").tolist()


def value_at(values: Any, i: int) -> Any:
    """Row ``i`` of a decoded column, None when missing."""
    if isinstance(values, dict):  # dictionary-encoded
        code = int(values["codes"][i])
        return values["dictionary"][code] if code >= 0 else None
    value = values[i]
    if isinstance(value, np.float32):
        value = float(str(value))  # 0.1 as sent in FP32, not 0.10000000149011612
    elif isinstance(value, np.floating):
        value = float(value)
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return None
    return value
