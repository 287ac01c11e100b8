"""The grpcurl request bodies in clients/grpcurl/ are valid against a live server."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from sahayak_rpc._proto.sahayak.v1 import inference_pb2, registry_pb2, training_pb2

from ..helpers import Running

RECIPES = Path(__file__).resolve().parents[2] / "clients" / "grpcurl"
CALLS = {
    "create_model.json": (registry_pb2.CreateModelRequest, lambda c: c.registry.CreateModel),
    "predict.json": (inference_pb2.PredictRequest, lambda c: c.inference.Predict),
    "recommend.json": (inference_pb2.RecommendRequest, lambda c: c.inference.Recommend),
    "record_outcome.json": (training_pb2.RecordOutcomeRequest, lambda c: c.training.RecordOutcome),
}


def test_every_recipe_is_covered() -> None:
    assert sorted(p.name for p in RECIPES.glob("*.json")) == sorted(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_recipe_is_accepted(trained: Running, name: str) -> None:
    message_type, method = CALLS[name]
    request = json_format.Parse((RECIPES / name).read_text(), message_type())
    response = method(trained.client)(request)
    assert response.ByteSize() > 0
