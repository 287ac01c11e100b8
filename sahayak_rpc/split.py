"""The train/validation split: stratified, deterministic, reproducible by anyone.

Within each label, rows are ranked by a keyed hash of their outcome id and
the lowest ``fraction`` of each label validate. A split therefore depends
only on the rows, their labels and the seed, and anyone holding the rows can
recompute it (the demo does, to score the Bayes-optimal rule on the same
validation rows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def _rank_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    salt = seed.to_bytes(8, "little", signed=True)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=salt).digest(), "little") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def stratified(ids: Sequence[str], labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A boolean mask: True for the validation rows (``fraction`` of each label, rounded)."""
    keys = _rank_keys(ids, seed)
    mask = np.zeros(len(ids), dtype=bool)
    labels = np.asarray(labels)
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        take = int(round(len(members) * fraction))
        if take:
            order = members[np.argsort(keys[members], kind="stable")]
            mask[order[:take]] = True
    return mask


def time_ordered(times: np.ndarray, ids: Sequence[str], fraction: float) -> np.ndarray:
    """A boolean mask: True for the newest ``fraction`` of rows (ties broken by id)."""
    n = len(ids)
    take = int(round(n * fraction))
    order = sorted(range(n), key=lambda i: (int(times[i]), ids[i]))
    mask = np.zeros(n, dtype=bool)
    mask[order[n - take :]] = True
    return mask
