"""ModelRegistryService: declaring, reading, listing and updating models over gRPC."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

from sahayak_rpc.client import SahayakError
from sahayak_rpc.schema import FeatureSpec, FeatureType
from sahayak_rpc._proto.sahayak.v1 import registry_pb2

from ..helpers import SMALL_FEATURES, Running

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def test_a_declared_model_reads_back_with_the_seed_defaults(running: Running, small_model: str) -> None:
    m = running.client.get_model(small_model)
    assert [f.name for f in m.features] == [f.name for f in SMALL_FEATURES]
    assert m.features[0].type == registry_pb2.FEATURE_TYPE_NUMERIC and m.features[0].required
    assert m.features[0].HasField("min") and m.features[0].min == 18
    assert not m.features[1].HasField("min")
    assert list(m.features[2].categories) == ["weaver", "potter", "carpenter"]
    assert m.label.positive_class == "approved"
    s = m.settings
    assert s.decision_threshold == 0.5
    assert s.training.retrain_interval.seconds == 7 * 86400
    assert s.training.incremental_every == 100
    assert s.training.validation_fraction == pytest.approx(0.2)
    assert s.training.min_samples == 100
    assert list(s.training.families) == [
        registry_pb2.MODEL_FAMILY_LOGISTIC_REGRESSION,
        registry_pb2.MODEL_FAMILY_GRADIENT_BOOSTING,
    ]
    assert (s.gate.min_accuracy, s.gate.min_f1, s.gate.max_calibration_error) == pytest.approx((0.75, 0.70, 0.20))
    assert s.monitoring.alert_cooldown.seconds == 3600


def test_settings_given_at_creation_override_only_what_they_set(running: Running) -> None:
    settings = registry_pb2.ModelSettings(gate=registry_pb2.QualityGate(min_accuracy=0.0))
    settings.training.retrain_interval.CopyFrom(duration_pb2.Duration(seconds=3600))
    m = running.client.create_model("custom", SMALL_FEATURES, settings=settings)
    assert m.settings.gate.min_accuracy == 0.0  # an explicit zero is kept, not defaulted
    assert m.settings.gate.min_f1 == pytest.approx(0.70)
    assert m.settings.training.retrain_interval.seconds == 3600


def test_creating_the_same_name_twice_is_already_exists(running: Running, small_model: str) -> None:
    with pytest.raises(SahayakError) as info:
        running.client.create_model(small_model, SMALL_FEATURES)
    assert info.value.code is grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("name", "features", "field"),
    [
        ("Bad Name", SMALL_FEATURES, "model.name"),
        ("ok", [], "model.features"),
        ("ok", [FeatureSpec("x", FeatureType.CATEGORICAL)], "model.features[0].categories"),
        (
            "ok",
            [FeatureSpec("x", FeatureType.NUMERIC), FeatureSpec("x", FeatureType.NUMERIC)],
            "model.features[1].name",
        ),
    ],
)
def test_bad_declarations_are_invalid_argument_and_create_nothing(
    running: Running, name: str, features: list, field: str
) -> None:
    with pytest.raises(SahayakError) as info:
        running.client.create_model(name, features)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert field in {v.field for v in info.value.violations}
    assert list(running.client.list_models()) == []


def test_an_unspecified_feature_type_is_refused(running: Running) -> None:
    model = registry_pb2.Model(name="x", features=[registry_pb2.FeatureSpec(name="a")])
    with pytest.raises(grpc.RpcError) as info:
        running.client.registry.CreateModel(registry_pb2.CreateModelRequest(model=model))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "features[0].type" in info.value.details()


def test_bad_settings_name_the_setting(running: Running) -> None:
    settings = registry_pb2.ModelSettings(gate=registry_pb2.QualityGate(min_accuracy=1.5), decision_threshold=0)
    with pytest.raises(SahayakError) as info:
        running.client.create_model("x", SMALL_FEATURES, settings=settings)
    assert {"model.settings.gate.min_accuracy", "model.settings.decision_threshold"} <= {
        v.field for v in info.value.violations
    }


def test_get_of_an_unknown_model_is_not_found(running: Running) -> None:
    with pytest.raises(SahayakError) as info:
        running.client.get_model("nobody")
    assert info.value.code is grpc.StatusCode.NOT_FOUND
    assert info.value.reason == "MODEL_NOT_FOUND"


def test_list_models_pages_through_every_model_once(running: Running) -> None:
    names = [f"m{i:02d}" for i in range(7)]
    for name in reversed(names):
        running.client.create_model(name, SMALL_FEATURES)
    first = running.client.registry.ListModels(registry_pb2.ListModelsRequest(page_size=3))
    assert [m.name for m in first.models] == names[:3] and first.next_page_token
    assert [m.name for m in running.client.list_models(page_size=3)] == names
    with pytest.raises(grpc.RpcError) as info:
        running.client.registry.ListModels(registry_pb2.ListModelsRequest(page_token="%%%"))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_update_changes_exactly_the_masked_fields(running: Running, small_model: str) -> None:
    patch = registry_pb2.Model(name=small_model, description="new words")
    patch.settings.gate.min_accuracy = 0.9
    patch.settings.gate.min_f1 = 0.1  # not in the mask: ignored
    m = running.client.update_model(patch, ["description", "settings.gate.min_accuracy"])
    assert m.description == "new words"
    assert m.settings.gate.min_accuracy == pytest.approx(0.9)
    assert m.settings.gate.min_f1 == pytest.approx(0.70)
    assert running.client.get_model(small_model).settings.gate.min_accuracy == pytest.approx(0.9)


def test_a_masked_field_left_unset_goes_back_to_the_default(running: Running, small_model: str) -> None:
    patch = registry_pb2.Model(name=small_model)
    patch.settings.training.incremental_every = 10
    running.client.update_model(patch, ["settings.training.incremental_every"])
    m = running.client.update_model(registry_pb2.Model(name=small_model), ["settings.training.incremental_every"])
    assert m.settings.training.incremental_every == 100


def test_a_whole_sub_message_can_be_replaced(running: Running, small_model: str) -> None:
    patch = registry_pb2.Model(name=small_model)
    patch.settings.training.retrain_interval.seconds = 86400
    m = running.client.update_model(patch, ["settings.training"])
    assert m.settings.training.retrain_interval.seconds == 86400
    assert m.settings.training.min_samples == 100


@pytest.mark.parametrize(
    ("paths", "words"),
    [
        ([], "update_mask"),
        (["features"], "cannot be changed"),
        (["settings.gate.nonsense"], "unknown field"),
        (["colour"], "unknown field"),
    ],
)
def test_bad_update_masks_are_refused_and_change_nothing(
    running: Running, small_model: str, paths: list, words: str
) -> None:
    before = running.client.get_model(small_model)
    with pytest.raises(SahayakError) as info:
        running.client.update_model(registry_pb2.Model(name=small_model, description="x"), paths)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert words in str(info.value) + " ".join(v.description + v.field for v in info.value.violations)
    assert running.client.get_model(small_model) == before


def test_update_of_an_unknown_model_is_not_found(running: Running) -> None:
    with pytest.raises(SahayakError) as info:
        running.client.update_model(registry_pb2.Model(name="ghost"), ["description"])
    assert info.value.code is grpc.StatusCode.NOT_FOUND


def test_models_survive_a_restart(running: Running, small_model: str, tmp_path) -> None:
    from sahayak_rpc import config
    from sahayak_rpc.server import Server

    before = running.client.get_model(small_model)
    running.server.stop(grace=1)
    again = Server(config.load(env={}, port=0, db=running.db, synchronous="normal"))
    again.start()
    try:
        from sahayak_rpc.client import Client

        with Client(f"127.0.0.1:{again.port}") as c:
            assert c.get_model(small_model) == before
    finally:
        again.stop(grace=1)
