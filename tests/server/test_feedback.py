"""FeedbackService: recording reactions, feedback with an outcome becoming training data, summaries."""

from __future__ import annotations

import grpc
import orjson
import pytest

from sahayak_rpc.client import fill_features
from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc._proto.sahayak.v1 import feedback_pb2

from ..helpers import Running

pytestmark = pytest.mark.backends("sqlite", "postgresql")

MODEL = "scheme-sahayak"
FB = feedback_pb2


def feedback(**kw) -> FB.Feedback:
    features = kw.pop("features", None)
    f = FB.Feedback(model=MODEL, **kw)
    if features:
        fill_features(f.features, features)
    return f


def record(c, f: FB.Feedback) -> FB.RecordFeedbackResponse:
    return c.feedback.RecordFeedback(FB.RecordFeedbackRequest(feedback=f))


def outcomes(r: Running) -> int:
    return r.client.server_status().models[0].outcome_count


def test_feedback_with_an_outcome_becomes_training_data_once(trained: Running) -> None:
    c = trained.client
    row = generate_outcomes(1, seed=31)[0].features
    p = c.predict(MODEL, row)
    trained.server.predlog.flush()
    before = outcomes(trained)
    f = feedback(
        feedback_id="fb-1",
        prediction_id=p.prediction_id,
        artisan_id="A9",
        scheme_id="pmegp",
        interaction=FB.INTERACTION_APPLIED,
        outcome=FB.FEEDBACK_OUTCOME_APPROVED,
        rating=4,
    )
    first = record(c, f)
    again = record(c, f)
    assert (first.feedback_id, first.duplicate, first.outcome_id) == ("fb-1", False, "feedback:fb-1")
    assert again.duplicate and again.outcome_id == "feedback:fb-1"
    assert outcomes(trained) == before + 1
    model_id = trained.server.catalog.get(MODEL).id
    stored = trained.server.ctx.outcomes.get(model_id, "feedback:fb-1")
    # The features come from the logged prediction; the label from the outcome.
    assert stored.features == orjson.loads(orjson.dumps(row)) and stored.label is True
    assert stored.prediction_id == p.prediction_id and stored.entities == {"artisan_id": "A9", "scheme_id": "pmegp"}
    assert stored.source == "feedback"


def test_feedback_without_an_outcome_is_only_recorded(trained: Running) -> None:
    before = outcomes(trained)
    resp = record(trained.client, feedback(interaction=FB.INTERACTION_VIEWED, scheme_id="pmegp"))
    assert resp.feedback_id and not resp.outcome_id and outcomes(trained) == before


@pytest.mark.parametrize(
    ("f", "field"),
    [
        (feedback(interaction=0), "feedback.interaction"),
        (feedback(interaction=FB.INTERACTION_CLICKED, rating=9), "feedback.rating"),
        (feedback(interaction=FB.INTERACTION_APPLIED, outcome=FB.FEEDBACK_OUTCOME_REJECTED), "feedback.features"),
        (
            feedback(interaction=FB.INTERACTION_APPLIED, outcome=FB.FEEDBACK_OUTCOME_REJECTED, prediction_id="nope"),
            "feedback.features",
        ),
        (feedback(interaction=FB.INTERACTION_CLICKED, feedback_id="has space"), "feedback.feedback_id"),
        (feedback(interaction=FB.INTERACTION_CLICKED, features={"colour": "red"}), "feedback.features.colour"),
    ],
)
def test_bad_feedback_is_refused_with_the_field(trained: Running, f: FB.Feedback, field: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        record(trained.client, f)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details()


def test_unknown_model_and_reused_ids(trained: Running) -> None:
    c = trained.client
    with pytest.raises(grpc.RpcError) as info:
        c.feedback.RecordFeedback(FB.RecordFeedbackRequest(feedback=FB.Feedback(model="ghost", interaction=1)))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    record(c, feedback(feedback_id="fb-x", interaction=FB.INTERACTION_SHOWN))
    with pytest.raises(grpc.RpcError) as info:
        record(c, feedback(feedback_id="fb-x", interaction=FB.INTERACTION_CLICKED))
    assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS


def test_import_feedback_reports_per_row_and_creates_outcomes(trained: Running) -> None:
    row = generate_outcomes(1, seed=32)[0].features
    batch = FB.ImportFeedbackRequest(
        feedback=[
            feedback(feedback_id="i1", interaction=FB.INTERACTION_SHOWN, scheme_id="s1"),
            feedback(
                feedback_id="i2",
                interaction=FB.INTERACTION_APPLIED,
                scheme_id="s1",
                outcome=FB.FEEDBACK_OUTCOME_REJECTED,
                features=row,
            ),
            feedback(feedback_id="i3", interaction=0),
            FB.Feedback(model="ghost", feedback_id="i4", interaction=FB.INTERACTION_SHOWN),
        ]
    )
    resp = trained.client.feedback.ImportFeedback(iter([batch]))
    assert (resp.received, resp.accepted, resp.rejected, resp.outcomes_created) == (4, 2, 2, 1)
    assert sorted((e.index, e.field) for e in resp.errors) == [(2, "feedback.interaction"), (3, "feedback.model")]
    again = trained.client.feedback.ImportFeedback(iter([batch]))
    assert (again.accepted, again.duplicates, again.outcomes_created) == (0, 2, 0)


def test_summary_gives_rates_by_scheme(running: Running) -> None:
    from sahayak_rpc.demo import ensure_demo_model

    c = running.client
    ensure_demo_model(c)
    row = generate_outcomes(1, seed=33)[0].features
    events = (
        [("a", FB.INTERACTION_SHOWN, 0, 0)] * 4
        + [("a", FB.INTERACTION_VIEWED, 0, 5)] * 2
        + [
            ("a", FB.INTERACTION_CLICKED, 0, 0),
            ("a", FB.INTERACTION_APPLIED, FB.FEEDBACK_OUTCOME_APPROVED, 3),
            ("b", FB.INTERACTION_SHOWN, 0, 0),
            ("b", FB.INTERACTION_APPLIED, FB.FEEDBACK_OUTCOME_REJECTED, 0),
        ]
    )
    for scheme, interaction, outcome, rating in events:
        record(
            c,
            feedback(
                scheme_id=scheme,
                interaction=interaction,
                outcome=outcome,
                rating=rating,
                features=row if outcome else None,
            ),
        )
    resp = c.feedback.GetFeedbackSummary(FB.GetFeedbackSummaryRequest(model=MODEL))
    a, b = resp.schemes
    assert (a.scheme_id, a.shown, a.viewed, a.clicked, a.applied, a.approved) == ("a", 4, 2, 1, 1, 1)
    assert (a.view_rate, a.click_rate, a.application_rate, a.approval_rate) == (0.5, 0.25, 0.25, 1.0)
    assert a.mean_rating == pytest.approx((5 + 5 + 3) / 3)
    assert (b.approval_rate, resp.total.shown, resp.total.approval_rate) == (0.0, 5, 0.5)
    only_b = c.feedback.GetFeedbackSummary(FB.GetFeedbackSummaryRequest(model=MODEL, scheme_id="b"))
    assert [s.scheme_id for s in only_b.schemes] == ["b"]
