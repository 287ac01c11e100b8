"""TrainingService ingest: RecordOutcome and ImportOutcomes over gRPC."""

from __future__ import annotations

import datetime as dt
import math

import grpc
import pytest

from sahayak_rpc.client import OutcomeInput, SahayakError
from sahayak_rpc._proto.sahayak.v1 import common_pb2, training_pb2

from ..helpers import Running, good_row

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def stored(running: Running, model: str) -> int:
    [status] = [m for m in running.client.server_status().models if m.model == model]
    return status.outcome_count


def test_a_recorded_outcome_is_stored_with_everything_it_carried(running: Running, small_model: str) -> None:
    when = dt.datetime(2025, 12, 1, 12, 0, tzinfo=dt.UTC)
    resp = running.client.record_outcome(
        small_model,
        good_row(),
        True,
        outcome_id="o-1",
        entities={"artisan_id": "A7", "scheme_id": "PMEGP"},
        metadata={"source": "district office"},
        occurred_at=when,
        prediction_id="p-9",
    )
    assert resp.outcome_id == "o-1" and not resp.duplicate and resp.labels_since_training == 1
    model = running.server.catalog.get(small_model)
    rec = running.server.ctx.outcomes.get(model.id, "o-1")
    assert rec is not None
    assert rec.features == good_row() and rec.label is True
    assert rec.entities == {"artisan_id": "A7", "scheme_id": "PMEGP"}
    assert rec.metadata == {"source": "district office"}
    assert rec.occurred_at_us == int(when.timestamp() * 1e6)
    assert rec.prediction_id == "p-9"


def test_without_an_id_the_server_assigns_one_and_the_receive_time(running: Running, small_model: str) -> None:
    resp = running.client.record_outcome(small_model, good_row(), False)
    assert len(resp.outcome_id) == 32
    model = running.server.catalog.get(small_model)
    rec = running.server.ctx.outcomes.get(model.id, resp.outcome_id)
    assert rec is not None and rec.occurred_at_us == running.server.ctx.now_us()


def test_the_same_outcome_twice_is_a_harmless_duplicate(running: Running, small_model: str) -> None:
    first = running.client.record_outcome(small_model, good_row(), True, outcome_id="same")
    again = running.client.record_outcome(small_model, good_row(), True, outcome_id="same")
    assert not first.duplicate and again.duplicate
    assert again.labels_since_training == 1
    assert stored(running, small_model) == 1


@pytest.mark.parametrize(
    ("model", "row", "label", "code", "field"),
    [
        ("ghost", good_row(), True, grpc.StatusCode.NOT_FOUND, None),
        ("", good_row(), True, grpc.StatusCode.INVALID_ARGUMENT, "model"),
        ("small", good_row(colour="red"), True, grpc.StatusCode.INVALID_ARGUMENT, "outcome.features.colour"),
        ("small", good_row(age="forty"), True, grpc.StatusCode.INVALID_ARGUMENT, "outcome.features.age"),
        ("small", good_row(age=None), True, grpc.StatusCode.INVALID_ARGUMENT, "outcome.features.age"),
        ("small", good_row(income=math.nan), True, grpc.StatusCode.INVALID_ARGUMENT, "outcome.features.income"),
        ("small", good_row(income=math.inf), True, grpc.StatusCode.INVALID_ARGUMENT, "outcome.features.income"),
        ("small", good_row(income=-math.inf), True, grpc.StatusCode.INVALID_ARGUMENT, "outcome.features.income"),
        ("small", good_row(age=150.0), True, grpc.StatusCode.INVALID_ARGUMENT, "outcome.features.age"),
        ("small", good_row(craft="sculptor"), True, grpc.StatusCode.INVALID_ARGUMENT, "outcome.features.craft"),
        ("small", good_row(has_card="yes"), True, grpc.StatusCode.INVALID_ARGUMENT, "outcome.features.has_card"),
    ],
)
def test_bad_outcomes_are_refused_with_the_field_and_change_nothing(
    running: Running, small_model: str, model: str, row: dict, label: bool, code: grpc.StatusCode, field: str | None
) -> None:
    running.client.record_outcome(small_model, good_row(), True, outcome_id="keep")
    with pytest.raises(SahayakError) as info:
        running.client.record_outcome(model, row, label, outcome_id="bad")
    assert info.value.code is code
    if field:
        assert field in {v.field for v in info.value.violations}
        assert field in info.value.message
    assert stored(running, small_model) == 1
    assert running.server.ctx.outcomes.get(running.server.catalog.get(small_model).id, "bad") is None


def test_a_reused_id_with_different_content_is_already_exists(running: Running, small_model: str) -> None:
    running.client.record_outcome(small_model, good_row(), True, outcome_id="o-1")
    with pytest.raises(SahayakError) as info:
        running.client.record_outcome(small_model, good_row(), False, outcome_id="o-1")
    assert info.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert info.value.reason == "OUTCOME_ID_CONFLICT"
    rec = running.server.ctx.outcomes.get(running.server.catalog.get(small_model).id, "o-1")
    assert rec is not None and rec.label is True


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: setattr(o, "label", common_pb2.LABEL_UNSPECIFIED), "outcome.label"),
        (lambda o: setattr(o, "label", 7), "outcome.label"),
        (lambda o: setattr(o, "outcome_id", "has space"), "outcome.outcome_id"),
        (lambda o: setattr(o, "outcome_id", "x" * 201), "outcome.outcome_id"),
        (lambda o: setattr(o, "outcome_id", "tab\there"), "outcome.outcome_id"),
        (lambda o: o.occurred_at.FromSeconds(-5), "outcome.occurred_at"),
        (lambda o: o.occurred_at.FromSeconds(4_000_000_000), "outcome.occurred_at"),
        (lambda o: o.entities.update({"": "x"}), "outcome.entities."),
        (lambda o: o.metadata.update({"k": "v" * 5000}), "outcome.metadata.k"),
    ],
)
def test_bad_envelopes_are_refused_with_the_field(running: Running, small_model: str, mutate, field: str) -> None:
    from sahayak_rpc.client import fill_features

    request = training_pb2.RecordOutcomeRequest(model=small_model)
    request.outcome.label = common_pb2.LABEL_POSITIVE
    fill_features(request.outcome.features, good_row())
    mutate(request.outcome)
    with pytest.raises(grpc.RpcError) as info:
        running.client.training.RecordOutcome(request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()
    assert stored(running, small_model) == 0


def test_a_missing_outcome_message_is_invalid(running: Running, small_model: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        running.client.training.RecordOutcome(training_pb2.RecordOutcomeRequest(model=small_model))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def _mixed_batch() -> list[OutcomeInput]:
    return [
        OutcomeInput(good_row(), True, outcome_id="a"),
        OutcomeInput(good_row(age=5.0), True, outcome_id="b"),  # out of range
        OutcomeInput(good_row(craft="mason"), False, outcome_id="c"),  # unknown category
        OutcomeInput(good_row(income=None, region="south"), False, outcome_id="d"),
        OutcomeInput(good_row(age=None), True, outcome_id="e"),  # missing required
        OutcomeInput(good_row(), False, outcome_id="f"),
    ]


@pytest.mark.parametrize("columnar", [True, False])
def test_an_import_keeps_the_good_rows_and_reports_each_bad_one(
    running: Running, small_model: str, columnar: bool
) -> None:
    report = running.client.import_outcomes(small_model, _mixed_batch(), batch_size=4, columnar=columnar)
    assert (report.received, report.accepted, report.duplicates, report.rejected) == (6, 3, 0, 3)
    assert [(e.index, e.id, e.field) for e in report.errors] == [
        (1, "b", "outcome.features.age"),
        (2, "c", "outcome.features.craft"),
        (4, "e", "outcome.features.age"),
    ]
    assert stored(running, small_model) == 3
    model = running.server.catalog.get(small_model)
    assert running.server.ctx.outcomes.get(model.id, "d").features == {
        "age": 40.0,
        "craft": "weaver",
        "region": "south",
        "has_card": True,
    }


@pytest.mark.parametrize("columnar", [True, False])
def test_reimporting_is_idempotent_and_conflicts_are_per_row(
    running: Running, small_model: str, columnar: bool
) -> None:
    running.client.import_outcomes(small_model, _mixed_batch(), columnar=columnar)
    again = _mixed_batch()
    again[5] = OutcomeInput(good_row(), True, outcome_id="f")  # label flipped: a conflict
    report = running.client.import_outcomes(small_model, again, columnar=columnar)
    assert (report.accepted, report.duplicates, report.rejected) == (0, 2, 4)
    assert (5, "f", "outcome_id") in [(e.index, e.id, e.field) for e in report.errors]
    assert stored(running, small_model) == 3


def test_columnar_and_row_wise_imports_store_the_same_thing(running: Running, small_model: str) -> None:
    when = dt.datetime(2025, 2, 3, 4, 5, 6, 789000, tzinfo=dt.UTC)
    rows = [
        OutcomeInput(
            good_row(),
            True,
            outcome_id="x",
            entities={"artisan_id": "A1"},
            metadata={"m": "1"},
            occurred_at=when,
            prediction_id="p1",
        )
    ]
    running.client.import_outcomes(small_model, rows, columnar=True)
    model = running.server.catalog.get(small_model)
    via_columns = running.server.ctx.outcomes.get(model.id, "x")
    rows[0].outcome_id = "y"
    running.client.import_outcomes(small_model, rows, columnar=False)
    via_rows = running.server.ctx.outcomes.get(model.id, "y")
    assert via_columns is not None and via_rows is not None
    assert via_columns.features == via_rows.features
    assert (via_columns.occurred_at_us, via_columns.entities, via_columns.metadata, via_columns.prediction_id) == (
        via_rows.occurred_at_us,
        via_rows.entities,
        via_rows.metadata,
        via_rows.prediction_id,
    )
    assert via_columns.source == "import"


def test_the_same_id_twice_in_one_batch_stores_it_once(running: Running, small_model: str) -> None:
    rows = [OutcomeInput(good_row(), True, outcome_id="twin"), OutcomeInput(good_row(), True, outcome_id="twin")]
    report = running.client.import_outcomes(small_model, rows)
    assert (report.accepted, report.duplicates) == (1, 1)


def test_an_import_must_name_its_model_first(running: Running, small_model: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        running.client.training.ImportOutcomes(iter([training_pb2.ImportOutcomesRequest()]))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        running.client.training.ImportOutcomes(iter([training_pb2.ImportOutcomesRequest(model="ghost")]))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_an_import_cannot_switch_models_midstream(running: Running, small_model: str) -> None:
    first = training_pb2.ImportOutcomesRequest(model=small_model)
    with pytest.raises(grpc.RpcError) as info:
        running.client.training.ImportOutcomes(iter([first, training_pb2.ImportOutcomesRequest(model="other")]))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_an_oversized_message_is_resource_exhausted(running: Running, small_model: str) -> None:
    request = training_pb2.ImportOutcomesRequest(model=small_model)
    request.columns.features.row_count = 10_001
    with pytest.raises(grpc.RpcError) as info:
        running.client.training.ImportOutcomes(iter([request]))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda c: c.features.columns.add(name="colour", strings=["red"]), "columns.features.columns[0].name"),
        (lambda c: c.features.columns.add(name="age", numbers=[1.0, 2.0]), "columns.features.columns[0]"),
        (lambda c: c.labels.append(common_pb2.LABEL_POSITIVE), "columns.labels"),
        (lambda c: c.outcome_ids.extend(["a", "b", "c"]), "columns.outcome_ids"),
        (lambda c: c.entities.add(name="artisan_id", values=[]), "columns.entities[0]"),
    ],
)
def test_a_malformed_columnar_message_is_invalid_and_stores_nothing(
    running: Running, small_model: str, build, field: str
) -> None:
    request = training_pb2.ImportOutcomesRequest(model=small_model)
    cols = request.columns
    cols.features.row_count = 1
    cols.labels.append(common_pb2.LABEL_POSITIVE)
    build(cols)
    with pytest.raises(grpc.RpcError) as info:
        running.client.training.ImportOutcomes(iter([request]))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()
    assert stored(running, small_model) == 0


def test_an_empty_import_is_fine(running: Running, small_model: str) -> None:
    report = running.client.import_outcomes(small_model, [])
    assert (report.received, report.accepted) == (0, 0)


def test_labels_since_training_counts_new_labels_across_ingest_paths(running: Running, small_model: str) -> None:
    running.client.import_outcomes(small_model, [OutcomeInput(good_row(), True, outcome_id=f"i{i}") for i in range(5)])
    resp = running.client.record_outcome(small_model, good_row(), True, outcome_id="r")
    assert resp.labels_since_training == 6
    [status] = running.client.server_status().models
    assert (status.labels_since_training, status.labels_until_incremental) == (6, 94)


@pytest.mark.parametrize("columnar", [True, False])
def test_a_retry_without_a_time_is_a_duplicate_even_later(running: Running, small_model: str, columnar: bool) -> None:
    rows = [OutcomeInput(good_row(), True, outcome_id="late")]
    running.client.import_outcomes(small_model, rows, columnar=columnar)
    running.clock.advance(3600)
    report = running.client.import_outcomes(small_model, rows, columnar=columnar)
    assert (report.accepted, report.duplicates) == (0, 1)
    assert running.client.record_outcome(small_model, good_row(), True, outcome_id="late").duplicate
