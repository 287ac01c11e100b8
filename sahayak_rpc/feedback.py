"""User feedback on recommendations, and the rates it adds up to."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson

from .schema import Row

INTERACTIONS = ("shown", "viewed", "clicked", "saved", "applied", "dismissed")
OUTCOMES = ("approved", "rejected")


@dataclass(slots=True)
class FeedbackRecord:
    feedback_id: str
    interaction: str
    occurred_at_us: int
    recommendation_id: str = ""
    prediction_id: str = ""
    artisan_id: str = ""
    scheme_id: str = ""
    outcome: str = ""  # "", approved or rejected
    rating: int = 0  # 0: none, else 1-5
    comment: str = ""
    features: Row = field(default_factory=dict)
    occurred_at_given: bool = True

    def content_hash(self) -> bytes:
        """Identity of the content: a retry with the same id must match it."""
        payload = orjson.dumps(
            [
                self.interaction,
                self.occurred_at_us if self.occurred_at_given else None,
                self.recommendation_id,
                self.prediction_id,
                self.artisan_id,
                self.scheme_id,
                self.outcome,
                self.rating,
                self.comment,
                self.features,
            ],
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.blake2b(payload, digest_size=16).digest()

    @property
    def training_outcome_id(self) -> str:
        """The id of the training outcome this feedback becomes (stable, so it happens once)."""
        return f"feedback:{self.feedback_id}"


@dataclass(frozen=True, slots=True)
class Reaction:
    """What one stored feedback counts towards: its scheme, interaction, outcome ("" if none) and rating (0: none)."""

    scheme_id: str
    interaction: str
    outcome: str
    rating: int


@dataclass
class SchemeSummary:
    scheme_id: str
    counts: dict[str, int] = field(default_factory=dict)
    ratings: list[int] = field(default_factory=list)

    def rate(self, part: str, whole: str) -> float:
        """``part`` per ``whole`` (0 when there is no ``whole``)."""
        denominator = self.counts.get(whole, 0)
        return self.counts.get(part, 0) / denominator if denominator else 0.0

    @property
    def approval_rate(self) -> float:
        decided = self.counts.get("approved", 0) + self.counts.get("rejected", 0)
        return self.counts.get("approved", 0) / decided if decided else 0.0

    @property
    def mean_rating(self) -> float:
        return sum(self.ratings) / len(self.ratings) if self.ratings else 0.0


def summarise(rows: list[Reaction]) -> tuple[list[SchemeSummary], SchemeSummary]:
    """Per-scheme and total counts."""
    by_scheme: dict[str, SchemeSummary] = {}
    total = SchemeSummary("")
    for r in rows:
        summary = by_scheme.setdefault(r.scheme_id, SchemeSummary(r.scheme_id))
        for target in (summary, total):
            target.counts[r.interaction] = target.counts.get(r.interaction, 0) + 1
            if r.outcome:
                target.counts[r.outcome] = target.counts.get(r.outcome, 0) + 1
            if r.rating:
                target.ratings.append(r.rating)
    return [by_scheme[k] for k in sorted(by_scheme)], total
