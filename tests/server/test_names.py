"""Feature and label names as real CSV headers and pandas columns have them, end to end through a server:
capitals, spaces inside, dots and dashes, in every place a name travels."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from sahayak_rpc import cli
from sahayak_rpc._proto.inference import open_inference_grpc_pb2 as oip
from sahayak_rpc._proto.inference import open_inference_grpc_pb2_grpc as oip_grpc
from sahayak_rpc._proto.sahayak.v1 import inference_pb2, monitor_pb2, registry_pb2
from sahayak_rpc.api.oip import LAYOUT_HEADER
from sahayak_rpc.client import SahayakError, fill_features
from sahayak_rpc.schema import FeatureSpec, FeatureType, LabelSpec

from ..helpers import Running

pytestmark = pytest.mark.backends("sqlite", "postgresql")
MODEL = "loans"
FEATURES = [
    FeatureSpec("Seniority", FeatureType.NUMERIC, required=True, min=0, max=50),
    FeatureSpec("Monthly Income", FeatureType.NUMERIC),
    FeatureSpec("loan.amount", FeatureType.NUMERIC),
    FeatureSpec("is-member", FeatureType.BOOLEAN),
    FeatureSpec("Home Region", FeatureType.CATEGORICAL, categories=("North East", "South")),
]
LABEL = LabelSpec("Approved", "yes", "no")


def make_rows(n: int, seed: int) -> list[tuple[dict[str, Any], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        row: dict[str, Any] = {
            "Seniority": float(rng.randint(0, 40)),
            "Monthly Income": round(rng.uniform(1, 9), 2),
            "loan.amount": round(rng.uniform(0, 5), 2),
            "is-member": rng.random() < 0.5,
            "Home Region": rng.choice(("North East", "South")),
        }
        z = 0.12 * row["Seniority"] + 0.6 * row["Monthly Income"] - 0.9 * row["loan.amount"] - 3.0
        z += 0.8 if row["is-member"] else 0.0
        out.append((row, rng.random() < 1 / (1 + math.exp(-z))))
    return out


def test_real_world_names_work_everywhere(running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = running.client
    c.create_model(MODEL, FEATURES, LABEL)
    rows = make_rows(1200, seed=3)
    # A CSV whose header is the names themselves, and the label's column named after the label.
    path = tmp_path / "loans.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(s.name for s in FEATURES), "Approved"])
        for row, label in rows:
            writer.writerow(
                [row[s.name] if s.type is not FeatureType.BOOLEAN else str(row[s.name]).lower() for s in FEATURES]
                + ["yes" if label else "no"]
            )
    assert cli.main(["import", str(path), "--model", MODEL, "--target", running.target]) == 0
    assert "1200 stored" in capsys.readouterr().out
    for family in ("logistic_regression", "gradient_boosting"):
        run = c.train(MODEL, families=[family])
        assert run.state == 3 and run.data.outcome_count == 1200, run.end_reason  # SUCCEEDED
        c.registry.SetAlias(
            registry_pb2.SetAliasRequest(model=MODEL, alias="champion", version=run.produced_version, force=True)
        )
        row = rows[0][0]
        # Predict as clients write it (read straight from its bytes) and with the model named last
        # (parsed by protobuf): the same answer, the names in the explanation as declared.
        plain = c.predict(MODEL, row, explain_top_k=5)
        request = inference_pb2.PredictRequest(explain_top_k=5)
        fill_features(request.features, row)
        request.model = MODEL
        other = c.inference.Predict(request)
        assert other.probability == plain.probability
        assert {p.feature for p in plain.contributions} == {s.name for s in FEATURES}
        # A batch as columns, a recommendation, the Open Inference Protocol's tensor, the local scorer.
        for columnar in (True, False):
            batch = c.predict_batch(MODEL, [r for r, _ in rows[:20]], columnar=columnar)
            assert batch.probabilities[0] == pytest.approx(plain.probability, abs=1e-12)
            subject = {"Seniority": 10.0, "Monthly Income": 4.0}
            offers = [(f"offer-{k}", {"loan.amount": 2.0 * k, "Home Region": "South"}, 1.0) for k in range(3)]
            ranked = c.recommend(MODEL, subject, offers, columnar=columnar)
            # Each candidate scored as subject + its own features, exactly as a single prediction of both.
            alone = {cid: c.predict(MODEL, {**subject, **features}).probability for cid, features, _ in offers}
            assert {r.candidate_id: r.probability for r in ranked.recommendations} == pytest.approx(alone, abs=1e-12)
            assert len(set(alone.values())) > 1  # the names reached the model: the loan amounts count
        codes = {"North East": 0.0, "South": 1.0}
        x = np.array(
            [
                [
                    row["Seniority"],
                    row["Monthly Income"],
                    row["loan.amount"],
                    float(row["is-member"]),
                    codes[row["Home Region"]],
                ]
            ],
            dtype=np.float32,
        )
        infer = oip.ModelInferRequest(model_name=MODEL, raw_input_contents=[x.tobytes()])
        infer.inputs.add(name="features", datatype="FP32", shape=[1, 5])
        stub = oip_grpc.GRPCInferenceServiceStub(c.channel)
        _, call = stub.ModelMetadata.with_call(oip.ModelMetadataRequest(name=MODEL))
        layout = json.loads(dict(call.initial_metadata())[LAYOUT_HEADER])
        assert [column["name"] for column in layout] == [s.name for s in FEATURES]  # the tensor's columns, named
        answer = stub.ModelInfer(infer)
        prob = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32)[0]
        assert prob == pytest.approx(plain.probability, abs=1e-5)
        with c.local_scorer(MODEL) as scorer:
            assert scorer.predict(row).probability == pytest.approx(plain.probability, abs=1e-12)
    # Monitoring reports the features by their names.
    running.server.predlog.flush()
    drift = c.monitor.DetectDrift(monitor_pb2.DetectDriftRequest(model=MODEL))
    assert {f.feature for f in drift.report.features} == {s.name for s in FEATURES}
    report = c.monitor.GetMonitoringReport(monitor_pb2.GetMonitoringReportRequest(model=MODEL))
    assert "Monthly Income" in report.markdown


def test_a_name_outside_the_rule_is_refused_with_its_field(running: Running) -> None:
    c = running.client
    with pytest.raises(SahayakError) as info:
        c.create_model(
            MODEL,
            [FeatureSpec("Age (years)", FeatureType.NUMERIC), FeatureSpec(" padded", FeatureType.NUMERIC)],
            LabelSpec("approved?"),
        )
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in info.value.violations} == {
        "model.features[0].name",
        "model.features[1].name",
        "model.label.name",
    }
    assert "letters, digits" in info.value.violations[0].description
    assert [m.name for m in c.list_models()] == []  # nothing was created
