"""The stored form of a logged prediction batch: its feature columns and probabilities.

A served batch is logged whole, as one row of ``prediction_batches``. Its
columns are a binary layout (arrays copied as they are, no per-value work),
so logging keeps up with scoring::

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
tensor) is stored as that matrix, row-major, in one array:
``{"n": rows, "matrix": {"dtype": "f4" | "f8", "columns": [...]}}`` where
each column is ``{"name", "kind": "number" | "bool" | "category"}`` (a
category column holds indexes into its ``"dictionary"``, NaN = missing);
decoding splits it into the columns above.

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


def encode_matrix(x: np.ndarray, columns: Sequence[tuple[str, str, Sequence[str]]]) -> bytes:
    """An [n, F] float32/float64 matrix; ``columns``: (name, "number" | "bool" | "category", dictionary)."""
    dtype = "f4" if x.dtype == np.float32 else "f8"
    data = np.ascontiguousarray(x, dtype="<" + dtype).tobytes()
    specs = [{"name": name, "kind": kind, **({"dictionary": list(d)} if kind == "category" else {})}
             for name, kind, d in columns]
    header = orjson.dumps({"n": int(x.shape[0]), "matrix": {"dtype": dtype, "columns": specs}})
    return b"".join([MAGIC, _LEN.pack(len(header)), header, data])


def encode_probabilities(probabilities: np.ndarray) -> bytes:
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
    header = orjson.loads(data[8:8 + size])
    body = memoryview(data)[8 + size:]
    n = int(header["n"])
    out: dict[str, Any] = {}
    if "matrix" in header:
        return _decode_matrix(header["matrix"], body, n)
    for spec in header["columns"]:
        kind, start, length = spec["kind"], int(spec["offset"]), int(spec["bytes"])
        raw = body[start:start + length]
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


def decode_probabilities(data: bytes | str) -> list[float]:
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
