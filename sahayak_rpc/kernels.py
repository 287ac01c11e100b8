"""Hot loops compiled to machine code (numba): the trees' walk, a raw-layout matrix checked and
scored by a linear model in one pass, and a single-row Predict read from its bytes and explained.

The trees' walk: every row through every tree.

A gradient-boosted model is a few hundred shallow trees. Walking them in
Python costs ~0.3 us a tree, so ~60 us a row; numpy cannot walk one row
through many trees without a call per tree level. This walks the trees of
``scoring.TreeArrays``, packed by ``TreeScorer`` into one record per inner
node, with the same rules as ``TreeScorer.leaves_reference`` (the plain-Python
walk, kept as the reference the tests hold this one to), tree by tree over a
block of rows, and sums each row's leaf values in tree order from the
baseline, as ``raw_one`` always has, so scores are the same to the bit. One
walk serves every path: a batch's scores, and the leaves an explanation needs.

Only our own code is compiled: an artifact supplies arrays of numbers, never
code. The compiled walk does not check bounds: ``artifact.load`` has already
checked that every feature index is a column, every bitset index is in range
and every child comes after its parent inside its own tree (packing keeps the
order), so each walk stays in bounds and ends (docs/artifact.md, rule 10).
The Predict reader checks every read against the end of the client's bytes
before it makes it. The
kernels are compiled before the server opens its port (``warm``: about four
seconds the first time; ``cache=True`` keeps the machine code in
``__pycache__``, or under ``$NUMBA_CACHE_DIR``, for the next start).
"""

from __future__ import annotations

from typing import Any

import math

import numba
import numpy as np


def _compiled(fn: Any, nogil: bool = True) -> Any:
    """``fn`` compiled, its machine code cached on disk where numba finds a writable place; where it
    finds none (a read-only install, no writable home, no $NUMBA_CACHE_DIR), compiled at each start.
    ``nogil``: it lets go of the GIL while it runs, so that other requests run meanwhile."""
    try:
        return numba.njit(cache=True, nogil=nogil)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=nogil)(fn)


def _holding_gil(fn: Any) -> Any:
    """``fn`` compiled to run holding the GIL: a one-row kernel of a microsecond or two, for which
    letting go of the GIL (so that another thread may take it meanwhile) buys nothing."""
    return _compiled(fn, nogil=False)


@_compiled
def walk(X: Any, roots: Any, nodes: Any, threshold: Any, words: Any, leaf_value: Any, baseline: float,
         block: int, leaves: Any, raw: Any) -> None:
    """For each row i of X (C-ordered float64, NaN = missing): ``raw[i]`` = baseline + the values of
    the leaves the trees route it to, summed in tree order; and, when ``leaves`` has rows, ``leaves[i,
    t]`` = the leaf index tree t routes it to (an explanation needs them; a plain score does not).

    The trees come packed (``scoring.TreeScorer``): inner nodes only, one int32 record each in
    ``nodes`` (feature, left, right, flags) beside its ``threshold``. A child (and a root) >= 0 is
    an inner node, < 0 is ``~leaf``. Flags: bit 0 set when a missing value goes left; bits 1 and up,
    0 for a numeric split, else 1 + the split's 256-bit set (``words[set]``: eight 32-bit words, low
    first). A numeric split sends v <= threshold left, v > threshold right, NaN by bit 0. A
    categorical split sends category c left when bit c of its set is set; NaN by bit 0; a code
    outside 0-255 right, as a bit that is not set.

    The loop runs tree by tree over a block of ``block`` rows (each tree's few nodes stay in the
    nearest cache while every row of the block walks it) with one accumulator per row, so each
    row's sum still takes its leaves in tree order: the same additions in the same order, the
    same score to the bit.
    """
    one = np.uint64(1)
    n = X.shape[0]
    keep = leaves.shape[0] > 0
    for start in range(0, n, block):
        end = min(n, start + block)
        for i in range(start, end):
            raw[i] = baseline
        for t in range(roots.shape[0]):
            root = roots[t]
            for i in range(start, end):
                node = root
                while node >= 0:
                    v = X[i, nodes[node, 0]]
                    flags = nodes[node, 3]
                    if flags < 2:
                        right = (v > threshold[node]) | ((v != v) & ((flags & 1) == 0))
                    elif v != v:
                        right = (flags & 1) == 0
                    else:
                        b = (flags >> 1) - 1
                        c = int(v) if -1.0 < v < 256.0 else 256  # int() truncates toward 0
                        right = not (c < 256 and (words[b, c >> 5] >> np.uint64(c & 31)) & one)
                    node = nodes[node, 1 + np.int64(right)]
                raw[i] += leaf_value[~node]
                if keep:
                    leaves[i, t] = ~node


@_compiled
def linear_checked(X: Any, lo: Any, hi: Any, whole: Any, optional: Any, slope: Any, missing_delta: Any,
                   lut_base: Any, lut_missing: Any, lut: Any, const: float, raw: Any) -> bool:
    """Check each value of the raw-layout matrix X (float32 or float64, NaN = missing) against its
    column's rules and score each row with a linear model, in one pass; False (``raw`` then
    unfinished) at the first value that breaks a rule, for the caller to name with MatrixCheck.

    The rules are MatrixCheck's: a present value within [lo, hi] (so never infinite) and, where
    ``whole``, a whole number; a missing one only where ``optional``. The score is
    LinearScorer.raw_matrix's: ``const`` plus, per column, ``slope * v`` (``missing_delta`` when
    missing), or for a categorical (``lut_base`` >= 0) its table entry ``lut[lut_base + v]``
    (``lut[lut_base + lut_missing]`` when missing).
    """
    for i in range(X.shape[0]):
        z = const
        for j in range(X.shape[1]):
            v = np.float64(X[i, j])
            base = lut_base[j]
            if v != v:
                if not optional[j]:
                    return False
                if base >= 0:
                    z += lut[base + lut_missing[j]]
                else:
                    z += missing_delta[j]
            elif not (lo[j] <= v <= hi[j]) or (whole[j] and v != np.floor(v)):
                return False
            elif base >= 0:
                z += lut[base + int(v)]
            else:
                z += slope[j] * v
        raw[i] = z
    return True


# --- The single-row Predict request, read from its wire bytes -------------------------------------
#
# A Predict of plain shape is read straight from the request's bytes (wire.PredictReader), instead of
# protobuf building a message, a map and a FeatureValue per feature for Python to walk. Only a plain
# shape is read; anything else (a field twice, an unknown name or field, a value of the wrong kind,
# a bad number or category, entities) answers False, and the caller parses the bytes with protobuf
# as always, so every error is still the long way's. Every read is checked against the end of its
# message before it is made: the bytes are a client's.

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@_holding_gil
def wire_hash(data: Any, start: int, size: int, space: int) -> Any:
    """FNV-1a of ``data[start:start + size]``, seeded by ``space`` (0: a feature name; j + 1: a
    category of feature j): the key of wire.PredictReader's look-up table."""
    h = _FNV_OFFSET ^ np.uint64(space)
    for i in range(start, start + size):
        h = (h ^ np.uint64(data[i])) * _FNV_PRIME
    return h


@_holding_gil
def _wire_find(data: Any, start: int, size: int, space: int, text: Any, slots: Any, entries: Any) -> int:
    """The value filed under the bytes ``data[start:start + size]`` in ``space``, or -1. ``slots``
    (a power of two long) hold entry numbers or -1 (open addressing, linear probing); an entry is
    (space, start in ``text``, size, value)."""
    mask = slots.shape[0] - 1
    i = np.int64(wire_hash(data, start, size, space) & np.uint64(mask))
    while True:
        e = slots[i]
        if e < 0:
            return -1
        if entries[e, 0] == space and entries[e, 2] == size:
            at = entries[e, 1]
            k = 0
            while k < size and text[at + k] == data[start + k]:
                k += 1
            if k == size:
                return entries[e, 3]
        i = (i + 1) & mask


@_holding_gil
def _wire_varint(data: Any, pos: int, end: int) -> tuple[Any, int]:
    """The varint at ``pos`` and the position after it; the position is -1 when the varint runs past
    ``end`` or is longer than ten bytes. Bits past the 64th are dropped, as protobuf drops them."""
    value = np.uint64(0)
    for k in range(10):
        if pos >= end:
            return value, -1
        b = data[pos]
        pos += 1
        value |= np.uint64(b & 0x7F) << np.uint64(7 * k)
        if b < 0x80:
            return value, pos
    return value, -1


@_holding_gil
def read_predict(data: Any, text: Any, slots: Any, entries: Any, kinds: Any, bounds: Any, buf: Any) -> bool:
    """Read a PredictRequest's bytes (sahayak.v1 inference.proto) into ``buf``: first the row in the
    raw layout (schema order; a number as itself, a boolean 0 / 1, a category its index; NaN:
    absent), one value per feature of ``kinds``; then model (start, size), alias (start, size; -1
    if absent), version, explain_top_k.

    True only for the plain shape, every value checked: each field at most once; each features
    entry a key then a value, the key a feature's name not seen before, the value one field of the
    feature's kind (``kinds[j]``: 1 number, 2 category, 3 boolean) whose value passes (a number
    within ``bounds[j]``, so finite; a declared category; a boolean 0 or 1); every required
    feature (``kinds[j] < 0``) present; no entities, no unknown field; a version within 2^53."""
    n = len(data)
    width = kinds.shape[0]
    x = buf[:width]
    out = buf[width:width + 6]
    for j in range(width):
        x[j] = np.nan
    out[0] = out[1] = out[2] = out[3] = -1
    out[4] = out[5] = 0
    seen_version = False
    seen_top_k = False
    pos = 0
    while pos < n:
        tag, pos = _wire_varint(data, pos, n)
        if pos < 0:
            return False
        if tag == 0x10 or tag == 0x28:  # version (int64), explain_top_k (int32): varints
            value, pos = _wire_varint(data, pos, n)
            if pos < 0:
                return False
            if tag == 0x10:
                if seen_version:
                    return False
                seen_version = True
                version = np.int64(value)
                if version > 2**53 or version < -2**53:  # kept exactly as a float64: the long way
                    return False
                out[4] = version
            else:
                if seen_top_k:
                    return False
                seen_top_k = True
                low = np.int64(value & np.uint64(0xFFFFFFFF))  # an int32 keeps the low 32 bits
                out[5] = low - 0x100000000 if low >= 0x80000000 else low
            continue
        if tag != 0x0A and tag != 0x1A and tag != 0x22:  # model, alias, a features entry
            return False
        size, pos = _wire_varint(data, pos, n)
        if pos < 0 or size > np.uint64(n - pos):
            return False
        end = pos + np.int64(size)
        if tag != 0x22:
            slot = 0 if tag == 0x0A else 2
            if out[slot] >= 0:
                return False
            out[slot] = pos
            out[slot + 1] = end - pos
            pos = end
            continue
        # A features entry: key (field 1, the name), then value (field 2, a FeatureValue) to its end.
        if pos >= end or data[pos] != 0x0A:
            return False
        size, p = _wire_varint(data, pos + 1, end)
        if p < 0 or size > np.uint64(end - p):
            return False
        j = _wire_find(data, p, np.int64(size), 0, text, slots, entries)
        if j < 0 or x[j] == x[j]:  # an unknown name, or one seen before
            return False
        p += np.int64(size)
        if p >= end or data[p] != 0x12:
            return False
        size, p = _wire_varint(data, p + 1, end)
        if p < 0 or size != np.uint64(end - p) or p >= end:
            return False
        kind = abs(kinds[j])
        if kind == 1:  # number_value: fixed64, little-endian
            if end - p != 9 or data[p] != 0x09:
                return False
            u = np.uint64(0)
            for k in range(8):
                u |= np.uint64(data[p + 1 + k]) << np.uint64(8 * k)
            e = np.int64((u >> np.uint64(52)) & np.uint64(0x7FF))
            m = u & np.uint64(0xFFFFFFFFFFFFF)
            if e == 0x7FF:
                return False
            if e == 0:
                v = math.ldexp(np.float64(m), -1074)
            else:
                v = math.ldexp(np.float64(m | np.uint64(0x10000000000000)), int(e - 1075))
            if u >> np.uint64(63):
                v = -v
            if not (bounds[j, 0] <= v <= bounds[j, 1]):
                return False
            x[j] = v
        elif kind == 2:  # string_value: one of the declared categories
            if data[p] != 0x12:
                return False
            size, q = _wire_varint(data, p + 1, end)
            if q < 0 or size != np.uint64(end - q):
                return False
            code = _wire_find(data, q, np.int64(size), j + 1, text, slots, entries)
            if code < 0:
                return False
            x[j] = code
        else:  # bool_value: 0 or 1
            if end - p != 2 or data[p] != 0x18 or data[p + 1] > 1:
                return False
            x[j] = data[p + 1]
        pos = end
    if out[0] < 0:
        return False
    for j in range(width):
        if kinds[j] < 0 and x[j] != x[j]:
            return False
    return True


@_holding_gil
def linear_explain(x: Any, ints: Any, floats: Any, lut: Any, bias: float, k: int, out: Any) -> None:
    """One checked raw-layout row scored as LinearScorer.explain_top scores it. Per feature i in the
    scorer's order: its column ``ints[0, i]`` of ``x``; ``floats[0, i] * v + floats[1, i]`` for a
    number, ``lut[ints[1, i] + v]`` for a category or boolean (``ints[1, i]`` >= 0), ``floats[2, i]``
    when absent; added from ``bias`` in that order, so the sum is the same to the bit.

    ``out`` gets the raw score, then the k largest contributions by magnitude, then their features'
    positions in the scorer's order; ties go to the one earlier in ``ints[2]`` (features by descending
    name), as LinearScorer.top ranks them."""
    width = ints.shape[1]
    parts = np.empty(width)
    z = bias
    for i in range(width):
        v = x[ints[0, i]]
        if v != v:
            c = floats[2, i]
        elif ints[1, i] >= 0:
            c = lut[ints[1, i] + np.int64(v)]
        else:
            c = floats[0, i] * v + floats[1, i]
        z += c
        parts[i] = c
    out[0] = z
    _top(parts, ints[2], k, out)


@_holding_gil
def _top(parts: Any, order: Any, k: int, out: Any) -> None:
    """The k largest of ``parts`` by magnitude into ``out[1:1 + k]``, their positions into
    ``out[1 + k:1 + 2k]``; ties go to the one earlier in ``order`` (positions by descending name)."""
    for t in range(k):
        best = -1
        size = 0.0
        for r in range(order.shape[0]):
            i = order[r]
            a = abs(parts[i])
            if best < 0 or a > size:
                taken = False
                for s in range(t):
                    if out[1 + k + s] == i:
                        taken = True
                if not taken:
                    best = i
                    size = a
        out[1 + t] = parts[best]
        out[1 + k + t] = best


@_holding_gil
def tree_explain(x: Any, roots: Any, nodes: Any, threshold: Any, words: Any, leaf_value: Any, baseline: float,
                 block: int, contrib: Any, order: Any, k: int, out: Any) -> None:
    """One raw-layout row (the first ``contrib.shape[1]`` values of ``x``) through the trees, as
    TreeScorer.explain_one scores it: ``out`` gets the raw score (walk's, to the bit), then the k
    largest path attributions (each feature's row of ``contrib`` summed over the leaves reached, in
    tree order) and their features' columns, ranked as top_contributions ranks them (ties to the
    larger name: earlier in ``order``)."""
    width = contrib.shape[1]
    X = np.empty((1, width))
    for j in range(width):
        X[0, j] = x[j]
    leaves = np.empty((1, roots.shape[0]), dtype=np.int64)
    raw = np.empty(1)
    walk(X, roots, nodes, threshold, words, leaf_value, baseline, block, leaves, raw)
    # Summed as numpy sums contrib[leaves].sum(axis=0): from the first tree's row, tree by tree.
    parts = contrib[leaves[0, 0]].copy() if roots.shape[0] else np.zeros(width)
    for t in range(1, roots.shape[0]):
        leaf = leaves[0, t]
        for j in range(width):
            parts[j] += contrib[leaf, j]
    out[0] = raw[0]
    _top(parts, order, k, out)


@_holding_gil
def read_explain(data: Any, text: Any, slots: Any, entries: Any, kinds: Any, bounds: Any, ints: Any, floats: Any,
                 lut: Any, bias: float, default_k: int, buf: Any) -> int:
    """read_predict, then, for a request that names no version or alias (0 and "" count as none), the
    row explained by the linear model whose tables are given (linear_explain's; none: ``ints`` has no
    columns). -1 when the request is not of the plain shape; else how many values follow the row in
    ``buf``:
    read_predict's six fields; k, the number of contributions (``explain_top_k``, or ``default_k``
    for 0; none below 0; at most one per feature); whether the row was explained (1 / 0); and when
    it was, the raw score, k contributions, their features' positions in the scorer's order and the
    row's values of those features."""
    if not read_predict(data, text, slots, entries, kinds, bounds, buf):
        return -1
    width = kinds.shape[0]
    buf[width + 6] = buf[width + 7] = 0.0
    # A version of 0 and an empty alias, written out (as protobufjs writes them), name the champion too.
    if ints.shape[1] == 0 or buf[width + 4] != 0 or buf[width + 3] > 0:
        return 8
    k = int(buf[width + 5])
    if k == 0:
        k = default_k
    k = min(max(k, 0), ints.shape[1])
    buf[width + 6] = k
    buf[width + 7] = 1.0
    out = buf[width + 8:]
    linear_explain(buf[:width], ints, floats, lut, bias, k, out)
    for t in range(k):
        out[1 + 2 * k + t] = buf[ints[0, np.int64(out[1 + k + t])]]
    return 9 + 3 * k


def warm() -> None:
    """Compile the kernels (or load them from numba's cache) for the array types requests bring, so
    that no request waits for the compiler: float32 and float64 matrices, writable or read-only (an
    OIP tensor is a read-only view of the request's bytes)."""
    for dtype in (np.float32, np.float64):
        x = np.zeros((1, 1), dtype=dtype)
        for matrix in (x, np.frombuffer(x.tobytes(), dtype=dtype).reshape(1, 1)):
            linear_checked(matrix, np.zeros(1), np.ones(1), np.zeros(1, dtype=np.bool_), np.ones(1, dtype=np.bool_),
                           np.zeros(1), np.zeros(1), np.full(1, -1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                           np.zeros(1), 0.0, np.empty(1))
            if dtype is np.float64:  # the trees' walk takes float64 only; leaves kept or not
                for kept in (np.empty((1, 1), dtype=np.int64), np.empty((0, 0), dtype=np.int64)):
                    walk(matrix, np.full(1, -1, dtype=np.int64), np.zeros((1, 4), dtype=np.int32), np.zeros(1),
                         np.zeros((1, 8), dtype=np.uint64), np.zeros(1), 0.0, 1, kept, np.empty(1))
    # A Predict request's bytes (read-only: a view of the bytes grpc hands over), and its row.
    one, none = np.zeros(1, dtype=np.int64), np.full(1, -1, dtype=np.int64)
    row = np.zeros(1)
    text = np.frombuffer(b"\0", dtype=np.uint8)  # wire.PredictReader's names: read-only bytes
    for ints, floats in ((np.zeros((3, 1), dtype=np.int64), np.zeros((3, 1))),
                         (np.zeros((3, 0), dtype=np.int64), np.zeros((3, 0)))):
        read_explain(b"\0", text, none, np.zeros((1, 4), dtype=np.int64), one, np.zeros((1, 2)), ints, floats, row,
                     0.0, 3, np.empty(12))
    wire_hash(text, 0, 1, 0)
    linear_explain(row, np.zeros((3, 1), dtype=np.int64), np.zeros((3, 1)), row, 0.0, 1, np.empty(3))
    root = np.zeros(1, dtype=np.int64)
    tree_explain(row, none, np.zeros((1, 4), dtype=np.int32), row, np.zeros((1, 8), dtype=np.uint64), row, 0.0, 1,
                 np.zeros((1, 1)), root, 1, np.empty(3))
