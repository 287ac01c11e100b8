"""Hot loops compiled to machine code (numba): the checks of a raw-layout matrix, a logistic
model's scores and contributions, the trees' walk, and the calibration of scores.

The trees' walk: every row through every tree.

A gradient-boosted model is a few hundred shallow trees. Walking them in
Python costs ~0.3 us a tree, so ~60 us a row; numpy cannot walk one row
through many trees without a call per tree level. This walks the trees of
``scoring.TreeArrays``, packed by ``TreeScorer`` into one record per inner
node, with the same rules as ``TreeScorer.leaves_reference`` (the plain-Python
walk, kept as the reference the tests hold this one to), tree by tree over a
block of rows, and sums each row's leaf values in tree order from the
baseline, so scores are the same to the bit. One
walk serves every path: a batch's scores, and the leaves an explanation needs.

Only our own code is compiled: an artifact supplies arrays of numbers, never
code. The compiled walk does not check bounds: ``artifact.load`` has already
checked that every feature index is a column, every bitset index is in range
and every child comes after its parent inside its own tree (packing keeps the
order), so each walk stays in bounds and ends (docs/artifact.md, rule 10).
The kernels are compiled before the server opens its port (``warm``: about four
seconds the first time; ``cache=True`` keeps the machine code in
``__pycache__``, or under ``$NUMBA_CACHE_DIR``, for the next start).
"""

from __future__ import annotations

from typing import Any


import numba
import numpy as np


def _compiled(fn: Any, nogil: bool) -> Any:
    """``fn`` compiled, its machine code cached on disk where numba finds a writable place; where it
    finds none (a read-only install, no writable home, no $NUMBA_CACHE_DIR), compiled at each start."""
    try:
        return numba.njit(cache=True, nogil=nogil)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=nogil)(fn)


def _body(fn: Any) -> Any:
    """A loop's one body, compiled; it is called from its two entry points (below)."""
    return _compiled(fn, nogil=False)


# Up to this many rows a call holds the GIL: its work is a microsecond or a few, and letting the GIL go
# and taking it back (another thread may hold it meanwhile) cost more than that, on every single-row
# request. A bigger batch lets it go, so that other requests run while it is scored.
FEW_ROWS = 16


def _held(fn: Any) -> Any:
    """An entry point that holds the GIL (a few rows)."""
    return _compiled(fn, nogil=False)


def _free(fn: Any) -> Any:
    """An entry point that lets the GIL go while it runs (a batch)."""
    return _compiled(fn, nogil=True)


@_body
def _walk(
    X: Any,
    roots: Any,
    nodes: Any,
    threshold: Any,
    words: Any,
    leaf_value: Any,
    baseline: float,
    block: int,
    leaves: Any,
    raw: Any,
) -> None:
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


@_body
def _within_rules(X: Any, lo: Any, hi: Any, whole: Any, optional: Any, bad: Any) -> bool:
    """Whether every value of the raw-layout matrix X (float32 or float64, NaN = missing) keeps its
    column's rules (schema.raw_bounds as vectors: MatrixCheck's): a present value within [lo, hi] (so
    never infinite) and, where ``whole``, a whole number; a missing one only where ``optional``.
    With ``bad`` of X's shape, every cell's verdict goes there (True: it breaks a rule) for the
    caller to name; with an empty ``bad`` it stops at the first broken rule."""
    record = bad.shape[0] > 0
    ok = True
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            v = np.float64(X[i, j])
            if v != v:
                broken = not optional[j]
            else:
                broken = not (lo[j] <= v <= hi[j]) or (whole[j] and v != np.floor(v))
            if broken:
                ok = False
                if not record:
                    return False
            if record:
                bad[i, j] = broken
    return ok


@_body
def _linear(X: Any, plan: Any, lut: Any, bias: float, raw: Any, parts: Any) -> None:
    """A logistic model's log-odds of each row of the raw-layout matrix X (float32 or float64, NaN =
    missing; its values checked by within_rules): ``raw[i]`` = ``bias`` plus, column by column, the
    feature's contribution: ``plan[2, j]`` when missing; for a categorical or a boolean (``plan[3,
    j]`` >= 0) its table entry ``lut[plan[3, j] + v]``, the code checked against the table's size
    ``plan[4, j]`` (NaN outside: never read out of bounds); else ``plan[0, j] * v + plan[1, j]``.
    With ``parts`` of X's shape, each contribution goes there too (the explanation)."""
    keep = parts.shape[0] > 0
    for i in range(X.shape[0]):
        z = bias
        for j in range(X.shape[1]):
            v = np.float64(X[i, j])
            base = plan[3, j]
            if v != v:
                c = plan[2, j]
            elif base >= 0:
                c = lut[np.int64(base) + np.int64(v)] if 0 <= v < plan[4, j] else np.nan
            else:
                c = plan[0, j] * v + plan[1, j]
            z += c
            if keep:
                parts[i, j] = c
        raw[i] = z


@_held
def calibrate(raw: Any, method: int, a: float, b: float, xs: Any, ys: Any, out: Any) -> None:
    """Each raw log-odds score as a probability (scoring.Calibrator's three methods): ``method`` 0 the
    logistic function of ``raw[i]``; 1 (sigmoid, Platt) of ``a * raw[i] + b``; 2 (isotonic) the piecewise
    linear map through the points (``xs``, ``ys``), ``xs`` ascending, held flat beyond its ends (as
    ``np.interp``). The logistic function is evaluated so that it never overflows. It holds the GIL
    however many scores: a few nanoseconds each (half a millisecond for the largest batch) cost less than
    letting the GIL go and waiting to take it back behind another thread."""
    n = xs.shape[0]
    for i in range(raw.shape[0]):
        r = np.float64(raw[i])
        if method == 2:
            if r <= xs[0]:
                out[i] = ys[0]
            elif r >= xs[n - 1]:
                out[i] = ys[n - 1]
            else:  # xs[lo] <= r < xs[hi], hi = lo + 1: so xs[hi] > xs[lo]
                lo, hi = 0, n - 1
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if xs[mid] <= r:
                        lo = mid
                    else:
                        hi = mid
                out[i] = ys[lo] + (ys[hi] - ys[lo]) * (r - xs[lo]) / (xs[hi] - xs[lo])
            continue
        z = a * r + b if method == 1 else r
        if z >= 0:
            out[i] = 1.0 / (1.0 + np.exp(-z))
        else:
            e = np.exp(z)
            out[i] = e / (1.0 + e)


# Each loop's two entry points, the same body: held for FEW_ROWS rows or fewer, free above.
@_held
def _walk_held(X, roots, nodes, threshold, words, leaf_value, baseline, block, leaves, raw):
    _walk(X, roots, nodes, threshold, words, leaf_value, baseline, block, leaves, raw)


@_free
def _walk_free(X, roots, nodes, threshold, words, leaf_value, baseline, block, leaves, raw):
    _walk(X, roots, nodes, threshold, words, leaf_value, baseline, block, leaves, raw)


@_held
def _within_rules_held(X, lo, hi, whole, optional, bad):
    return _within_rules(X, lo, hi, whole, optional, bad)


@_free
def _within_rules_free(X, lo, hi, whole, optional, bad):
    return _within_rules(X, lo, hi, whole, optional, bad)


@_held
def _linear_held(X, plan, lut, bias, raw, parts):
    _linear(X, plan, lut, bias, raw, parts)


@_free
def _linear_free(X, plan, lut, bias, raw, parts):
    _linear(X, plan, lut, bias, raw, parts)


def walk(X: Any, *args: Any) -> None:
    """_walk: every row through every tree (see there), holding the GIL for a few rows."""
    (_walk_held if X.shape[0] <= FEW_ROWS else _walk_free)(X, *args)


def within_rules(X: Any, lo: Any, hi: Any, whole: Any, optional: Any, bad: Any) -> bool:
    """_within_rules: the check of a raw-layout matrix (see there), holding the GIL for a few rows."""
    entry = _within_rules_held if X.shape[0] <= FEW_ROWS else _within_rules_free
    return bool(entry(X, lo, hi, whole, optional, bad))


def linear(X: Any, plan: Any, lut: Any, bias: float, raw: Any, parts: Any) -> None:
    """_linear: a logistic model's scores and contributions (see there), holding the GIL for a few rows.
    (Arguments spelled out, not ``*args``: a one-row score pays for every step of the call.)"""
    if X.shape[0] <= FEW_ROWS:
        _linear_held(X, plan, lut, bias, raw, parts)
    else:
        _linear_free(X, plan, lut, bias, raw, parts)


def warm() -> None:
    """Compile the kernels (or load them from numba's cache) for the array types requests bring, so
    that no request waits for the compiler: float32 and float64 matrices, writable or read-only (an
    OIP tensor is a read-only view of the request's bytes), through both entry points (a few rows, more)."""
    for n in (1, FEW_ROWS + 1):
        calibrate(np.zeros(n), 0, 1.0, 0.0, np.zeros(1), np.zeros(1), np.empty(n))
        for dtype in (np.float32, np.float64):
            x = np.zeros((n, 1), dtype=dtype)
            for matrix in (x, np.frombuffer(x.tobytes(), dtype=dtype).reshape(n, 1)):
                for bad in (np.empty((n, 1), dtype=np.bool_), np.empty((0, 0), dtype=np.bool_)):
                    within_rules(
                        matrix, np.zeros(1), np.ones(1), np.zeros(1, dtype=np.bool_), np.ones(1, dtype=np.bool_), bad
                    )
                for parts in (np.empty((n, 1)), np.empty((0, 0))):
                    linear(matrix, np.full((5, 1), -1.0), np.zeros(1), 0.0, np.empty(n), parts)
                if dtype is np.float64:  # the trees' walk takes float64 only; leaves kept or not
                    for kept in (np.empty((n, 1), dtype=np.int64), np.empty((0, 0), dtype=np.int64)):
                        walk(
                            matrix,
                            np.full(1, -1, dtype=np.int64),
                            np.zeros((1, 4), dtype=np.int32),
                            np.zeros(1),
                            np.zeros((1, 8), dtype=np.uint64),
                            np.zeros(1),
                            0.0,
                            1,
                            kept,
                            np.empty(n),
                        )
