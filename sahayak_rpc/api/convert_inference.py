"""Converters of InferenceService: contributions, and the packed arrays of a batch's answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._proto.sahayak.v1 import common_pb2


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
