"""Loading the Scheme Sahayak demo into a running server, through the client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from .client import Client, OutcomeInput, SahayakError
from .demo_data import DEMO_MODEL_NAME, DEMO_SCHEMA, expected_bayes_accuracy, generate_outcomes


@dataclass(frozen=True)
class DemoLoad:
    model: str
    created_model: bool
    outcomes: int
    accepted: int
    duplicates: int
    rejected: int
    expected_bayes_accuracy: float


def ensure_demo_model(client: Client, name: str = DEMO_MODEL_NAME) -> bool:
    """Create the demo model unless it exists; True if it was created."""
    try:
        client.create_model(
            name, DEMO_SCHEMA.features, DEMO_SCHEMA.label,
            description="Scheme Sahayak: will this artisan's application to this scheme be approved?",
        )
        return True
    except SahayakError as err:
        if err.code is grpc.StatusCode.ALREADY_EXISTS:
            return False
        raise


def load_demo(
    client: Client, n: int = 20_000, seed: int = 0, name: str = DEMO_MODEL_NAME,
    progress: Callable[[int], None] | None = None,
) -> DemoLoad:
    """Create the demo model and import ``n`` generated outcomes (idempotent for a seed)."""
    created = ensure_demo_model(client, name)
    examples = generate_outcomes(n, seed=seed)
    inputs = (
        OutcomeInput(features=e.features, label=e.label, outcome_id=e.outcome_id,
                     entities=e.entities, occurred_at=e.occurred_at)
        for e in examples
    )
    report = client.import_outcomes(name, inputs, progress=progress)
    return DemoLoad(
        model=name, created_model=created, outcomes=n, accepted=report.accepted,
        duplicates=report.duplicates, rejected=report.rejected,
        expected_bayes_accuracy=expected_bayes_accuracy([e.probability for e in examples]),
    )
