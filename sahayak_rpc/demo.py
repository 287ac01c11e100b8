"""Loading and training the Scheme Sahayak demo on a running server, through the client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from . import split
from ._proto.sahayak.v1 import registry_pb2
from .client import Client, OutcomeInput, SahayakError
from .demo_data import (
    DEMO_MODEL_NAME,
    DEMO_SCHEMA,
    DemoExample,
    bayes_optimal_accuracy,
    expected_bayes_accuracy,
    generate_outcomes,
)


@dataclass
class DemoLoad:
    model: str
    created_model: bool
    outcomes: int
    accepted: int
    duplicates: int
    rejected: int
    expected_bayes_accuracy: float
    training: dict[str, Any] = field(default_factory=dict)
    # Why no run was started, when none was (see load_demo's only_if_new).
    training_skipped: str = ""


def ensure_demo_model(client: Client, name: str = DEMO_MODEL_NAME) -> bool:
    """Create the demo model unless it exists; True if it was created."""
    try:
        client.create_model(
            name,
            DEMO_SCHEMA.features,
            DEMO_SCHEMA.label,
            description="Scheme Sahayak: will this artisan's application to this scheme be approved?",
        )
        return True
    except SahayakError as err:
        if err.code is grpc.StatusCode.ALREADY_EXISTS:
            return False
        raise


def _train(client: Client, name: str, timeout: float) -> Any:
    """Start a full run (or follow the one already running) and wait for its end."""
    try:
        run_id = client.start_training(name, description="demo").run_id
    except SahayakError as err:
        if err.reason != "RUN_ACTIVE":
            raise
        [status] = [m for m in client.server_status().models if m.model == name]
        run_id = status.active_run_id
    return client.wait_run(run_id, timeout=timeout)


def compare_with_bayes(client: Client, name: str, examples: list[DemoExample], run: Any) -> dict[str, Any]:
    """The champion's validation metrics beside the Bayes-optimal accuracy of the same rows.

    The server's split is a documented function of the rows (sahayak_rpc.split),
    so the demo recomputes which of its rows validated.
    """
    model = client.get_model(name)
    t = model.settings.training
    ids = [e.outcome_id for e in examples]
    labels = np.array([int(e.label) for e in examples])
    mask = split.stratified(ids, labels, t.validation_fraction, t.random_seed)
    probs = np.array([e.probability for e in examples])
    # A run on exactly the champion's outcomes registers nothing: the champion it left serving is the one to compare.
    number = run.produced_version or int(run.parameters.get("unchanged_from_version", "0") or 0)
    version = client.get_version(name, version=number) if number else None
    metrics = json_format.MessageToDict(version.validation_metrics, preserving_proto_field_name=True) if version else {}
    bayes = bayes_optimal_accuracy(probs[mask], labels[mask])
    out: dict[str, Any] = {
        "run_id": run.run_id,
        "end_reason": run.end_reason,
        "promoted": run.promoted,
        "version": run.produced_version,
        "family": registry_pb2.ModelFamily.Name(version.family) if version else "",
        "validation_metrics": metrics,
        "validation_rows": int(mask.sum()),
        # True when the server validated on exactly the rows recomputed here.
        "same_rows": int(mask.sum()) == run.data.validation_count and len(examples) == run.data.outcome_count,
        "bayes_optimal_accuracy": bayes,
    }
    if version is not None:
        out["accuracy_gap_pp"] = round((bayes - version.validation_metrics.accuracy) * 100, 3)
    return out


def load_demo(
    client: Client,
    n: int = 20_000,
    seed: int = 0,
    name: str = DEMO_MODEL_NAME,
    train: bool = True,
    progress: Callable[[int], None] | None = None,
    timeout: float = 1800.0,
    only_if_new: bool = False,
) -> DemoLoad:
    """Create the demo model, import ``n`` generated outcomes (idempotent for a seed), and train.

    ``only_if_new`` (``serve --demo`` on every start): train only when the import added outcomes or
    no champion serves yet, rather than a new version of the same data at each restart."""
    created = ensure_demo_model(client, name)
    examples = generate_outcomes(n, seed=seed)
    inputs = (
        OutcomeInput(
            features=e.features, label=e.label, outcome_id=e.outcome_id, entities=e.entities, occurred_at=e.occurred_at
        )
        for e in examples
    )
    report = client.import_outcomes(name, inputs, progress=progress)
    result = DemoLoad(
        model=name,
        created_model=created,
        outcomes=n,
        accepted=report.accepted,
        duplicates=report.duplicates,
        rejected=report.rejected,
        expected_bayes_accuracy=expected_bayes_accuracy([e.probability for e in examples]),
    )
    champion = client.get_model(name).champion_version if only_if_new and train else 0
    if train and champion and not report.accepted:
        result.training_skipped = f"no new outcomes; champion version {champion} kept"
    elif train:
        run = _train(client, name, timeout)
        result.training = compare_with_bayes(client, name, examples, run)
    return result
