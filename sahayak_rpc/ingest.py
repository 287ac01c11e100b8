"""Labelled outcomes as the server keeps them, and their identity rules."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

import orjson

from .schema import Row

MAX_ID_LEN = 200
MAX_MAP_ENTRIES = 64
MAX_TEXT_LEN = 4096


# Not frozen: a frozen dataclass pays object.__setattr__ per field, and bulk
# imports build a hundred thousand of these.
@dataclass(slots=True)
class OutcomeRecord:
    outcome_id: str
    features: Row
    label: bool
    occurred_at_us: int
    entities: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    prediction_id: str = ""
    source: str = "api"
    # False when the server filled in occurred_at with the receive time; a
    # retry then arrives later, so that time is left out of the identity.
    occurred_at_given: bool = True
    # encoded()'s answer, once asked (an import encodes a batch while the previous one is being stored).
    encoding: tuple[bytes, bytes] | None = None

    def encoded(self) -> tuple[bytes, bytes]:
        """(features as JSON, content hash): a retry with the same id must match the hash. Worked out
        once: the record is not changed after it is stored."""
        if self.encoding is None:
            features = orjson.dumps(self.features, option=orjson.OPT_SORT_KEYS)
            rest = orjson.dumps(
                [
                    self.label,
                    self.occurred_at_us if self.occurred_at_given else None,
                    self.entities,
                    self.metadata,
                    self.prediction_id,
                ],
                option=orjson.OPT_SORT_KEYS,
            )
            self.encoding = features, hashlib.blake2b(features + rest, digest_size=16).digest()
        return self.encoding


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class IngestReport:
    """What happened to a batch: counts plus per-row errors (index, id, field, reason)."""

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[tuple[int, str, str, str]] = field(default_factory=list)
    errors_truncated: bool = False
    max_errors: int = 1000

    def merge(self, other: IngestReport) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        for error in other.errors:
            self.reject(*error)
        self.rejected += other.rejected - len(other.errors)
        self.errors_truncated |= other.errors_truncated

    def reject(self, index: int, ident: str, field_path: str, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < self.max_errors:
            self.errors.append((index, ident, field_path, reason))
        else:
            self.errors_truncated = True
