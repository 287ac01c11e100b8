"""InferenceService, the prediction log, WatchChampion and the client-side scorer."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from sahayak_rpc.client import SahayakError
from sahayak_rpc.demo_data import SCHEMES, generate_outcomes
from sahayak_rpc._proto.sahayak.v1 import common_pb2, inference_pb2, monitor_pb2

from ..helpers import Running, eventually, load_demo_rows, start_server, stop_server

pytestmark = pytest.mark.backends("sqlite", "postgresql")

MODEL = "scheme-sahayak"


def served_model(r: Running, version: int = 0):
    return r.server.registry.served(r.server.catalog.get(MODEL), version).model


def test_predict_answers_with_probability_label_version_id_and_reasons(trained: Running) -> None:
    c = trained.client
    e = generate_outcomes(1, seed=42)[0]
    p = c.predict(MODEL, e.features, explain_top_k=4)
    model = served_model(trained)
    assert p.probability == model.predict_one(e.features)
    assert p.label == (common_pb2.LABEL_POSITIVE if p.probability >= 0.5 else common_pb2.LABEL_NEGATIVE)
    assert p.version == 1 and p.prediction_id
    assert len(p.contributions) == 4
    sizes = [abs(x.contribution) for x in p.contributions]
    assert sizes == sorted(sizes, reverse=True)
    first = p.contributions[0]
    assert first.value.WhichOneof("kind") is not None or first.feature not in e.features
    assert len(c.predict(MODEL, e.features).contributions) == 3  # the default
    assert len(c.predict(MODEL, e.features, explain_top_k=-1).contributions) == 0
    assert c.predict(MODEL, e.features).prediction_id != p.prediction_id


@pytest.mark.parametrize(
    ("model", "features", "code"),
    [
        ("ghost", {}, grpc.StatusCode.NOT_FOUND),
        (MODEL, {"age": "old"}, grpc.StatusCode.INVALID_ARGUMENT),
        (MODEL, {"colour": "red"}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_bad_predictions_are_refused(trained: Running, model: str, features: dict, code) -> None:
    row = {**generate_outcomes(1, seed=1)[0].features, **features}
    with pytest.raises(SahayakError) as info:
        trained.client.predict(model, row)
    assert info.value.code is code


def test_a_model_without_a_champion_is_failed_precondition(running: Running) -> None:
    load_demo_rows(running.client, 10)
    with pytest.raises(SahayakError) as info:
        running.client.predict(MODEL, generate_outcomes(1)[0].features)
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION and info.value.reason == "NO_CHAMPION"


def test_batches_row_wise_and_columnar_agree_with_predict(trained: Running) -> None:
    c = trained.client
    rows = [e.features for e in generate_outcomes(50, seed=7)]
    columnar = c.predict_batch(MODEL, rows)
    rowwise = c.predict_batch(MODEL, rows, columnar=False)
    single = [c.predict(MODEL, r).probability for r in rows]
    assert np.allclose(columnar.probabilities, single, atol=1e-12)
    assert np.allclose(rowwise.probabilities, single, atol=1e-12)
    assert list(columnar.labels) == [
        common_pb2.LABEL_POSITIVE if p >= 0.5 else common_pb2.LABEL_NEGATIVE for p in columnar.probabilities
    ]
    assert columnar.version == 1 and columnar.batch_id != rowwise.batch_id


def test_a_batch_can_carry_explanations(trained: Running) -> None:
    from sahayak_rpc.client import fill_features

    request = inference_pb2.PredictBatchRequest(model=MODEL, explain_top_k=2)
    for e in generate_outcomes(3, seed=8):
        fill_features(request.rows.add().features, e.features)
    resp = trained.client.inference.PredictBatch(request)
    assert [len(x.contributions) for x in resp.explanations] == [2, 2, 2]


def test_bad_batches_are_refused(trained: Running) -> None:
    c = trained.client
    with pytest.raises(grpc.RpcError) as info:
        c.inference.PredictBatch(inference_pb2.PredictBatchRequest(model=MODEL))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    request = inference_pb2.PredictBatchRequest(model=MODEL)
    request.columns.row_count = 2
    request.columns.columns.add(name="age", numbers=[30.0])
    with pytest.raises(grpc.RpcError) as info:
        c.inference.PredictBatch(request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "age" in info.value.details()


def _artisan_and_schemes(seed: int = 3):
    artisan = {k: v for k, v in generate_outcomes(1, seed=seed)[0].features.items() if not k.startswith("scheme_")}
    return artisan, [(s.scheme_id, s.features, s.benefit_inr) for s in SCHEMES]


def test_recommend_ranks_schemes_by_probability_with_explanations(trained: Running) -> None:
    artisan, schemes = _artisan_and_schemes()
    resp = trained.client.recommend(MODEL, artisan, schemes, top_k=5, explain_top_k=2)
    probs = [r.probability for r in resp.recommendations]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    assert [r.rank for r in resp.recommendations] == [1, 2, 3, 4, 5]
    everything = trained.client.recommend(MODEL, artisan, schemes)
    assert len(everything.recommendations) == len(SCHEMES)
    assert max(r.probability for r in everything.recommendations) == probs[0]
    top = resp.recommendations[0]
    scheme = dict((s[0], s[1]) for s in schemes)[top.candidate_id]
    assert top.probability == pytest.approx(served_model(trained).predict_one({**artisan, **scheme}), abs=1e-12)
    assert len(top.contributions) == 2 and top.prediction_id.endswith(top.candidate_id)


def test_recommend_can_weight_by_benefit(trained: Running) -> None:
    artisan, schemes = _artisan_and_schemes()
    resp = trained.client.recommend(MODEL, artisan, schemes, weight_by_benefit=True)
    scores = [r.score for r in resp.recommendations]
    assert scores == sorted(scores, reverse=True)
    benefit = {s[0]: s[2] for s in schemes}
    assert all(r.score == pytest.approx(r.probability * benefit[r.candidate_id]) for r in resp.recommendations)


def test_recommend_refuses_bad_candidates(trained: Running) -> None:
    artisan, schemes = _artisan_and_schemes()
    for cands, field in [
        ([], "candidates"),
        ([schemes[0], schemes[0]], "candidates[1].candidate_id"),
        ([(schemes[0][0], schemes[0][1], -1.0)], "candidates[0].benefit"),
        ([("x", {**schemes[0][1], "scheme_type": "lottery"}, 1.0)], "candidates[0].features.scheme_type"),
    ]:
        with pytest.raises(SahayakError) as info:
            trained.client.recommend(MODEL, artisan, cands)
        assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert field in {v.field for v in info.value.violations}


def test_served_predictions_reach_the_prediction_log(trained: Running) -> None:
    c = trained.client
    model_id = trained.server.catalog.get(MODEL).id
    trained.server.predlog.flush()
    before = trained.server.ctx.predictions.count(model_id)
    p = c.predict(MODEL, generate_outcomes(1, seed=2)[0].features, entities={"artisan_id": "A1"})
    batch = c.predict_batch(MODEL, [e.features for e in generate_outcomes(10, seed=3)])
    trained.server.predlog.flush()
    assert trained.server.ctx.predictions.count(model_id) == before + 11
    stored = trained.server.ctx.predictions.get(p.prediction_id)
    assert stored is not None and stored.version == 1 and stored.probability == p.probability
    assert trained.server.ctx.predictions.get(f"{batch.batch_id}:9") is not None


def test_log_predictions_takes_predictions_made_elsewhere(trained: Running) -> None:
    from sahayak_rpc.client import fill_features

    request = monitor_pb2.LogPredictionsRequest(model=MODEL)
    good = request.predictions.add(prediction_id="ext-1", version=1, probability=0.7, label=common_pb2.LABEL_POSITIVE)
    fill_features(good.features, generate_outcomes(1)[0].features)
    request.predictions.add(prediction_id="ext-2", version=1, probability=1.5, label=common_pb2.LABEL_POSITIVE)
    now = trained.clock.now()
    for pid, when in (("ext-3", now - 8 * 86400), ("ext-4", now + 2 * 86400)):  # past retention; from the future
        stale = request.predictions.add(prediction_id=pid, version=1, probability=0.2, label=common_pb2.LABEL_NEGATIVE)
        fill_features(stale.features, generate_outcomes(1)[0].features)
        stale.time.FromMicroseconds(int(when * 1_000_000))
    resp = trained.client.monitor.LogPredictions(iter([request]))
    assert (resp.accepted, resp.rejected) == (1, 3)
    assert [e.field for e in resp.errors] == ["prediction.probability", "prediction.time", "prediction.time"]
    assert trained.server.ctx.predictions.get("ext-1").source == "logged"
    assert trained.server.ctx.predictions.get("ext-3") is None


def test_promotion_and_rollback_under_load_never_fail_a_request(running: Running) -> None:
    c = running.client
    load_demo_rows(c, 1500)
    assert c.train(MODEL, families=["logistic_regression"]).promoted
    rows = [e.features for e in generate_outcomes(30, seed=9)]
    errors: list[Exception] = []
    versions: set[int] = set()
    stop = threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():
            try:
                versions.add(c.predict(MODEL, rows[i % len(rows)]).version)
            except Exception as exc:  # any failure is the bug this test looks for
                errors.append(exc)
            i += 1

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        assert c.train(MODEL, families=["gradient_boosting"]).promoted
        for _ in range(5):
            c.rollback(MODEL)
            c.set_alias(MODEL, "champion", 2)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert errors == []
    assert versions == {1, 2}


def test_the_local_scorer_follows_the_champion_and_reports_back(running: Running) -> None:
    import time

    running.clock.set(time.time())  # the scorer stamps its predictions with this machine's clock
    c = running.client
    load_demo_rows(c, 1500)
    assert c.train(MODEL, families=["logistic_regression"]).promoted
    rows = [e.features for e in generate_outcomes(5, seed=12)]
    with c.local_scorer(MODEL, flush_interval_s=60) as scorer:
        local = scorer.predict(rows[0])
        assert local.version == 1
        assert local.probability == c.predict(MODEL, rows[0]).probability
        assert c.train(MODEL, families=["gradient_boosting"]).promoted
        eventually(lambda: scorer.version == 2, timeout=10)
        assert scorer.predict(rows[1]).probability == c.predict(MODEL, rows[1]).probability
        assert scorer.flush() == 2
    stored = running.server.ctx.predictions.get(local.prediction_id)
    assert stored is not None and stored.source == "logged" and stored.version == 1


def test_a_local_scorer_follows_the_champion_across_a_server_restart(tmp_path) -> None:
    """The champion's stream breaks when the server stops; the scorer keeps the last champion, opens the
    stream again once the server is back, and follows the next promotion."""
    from sahayak_rpc.client import Client, SahayakError

    from ..processes import free_port

    port, db = free_port(), tmp_path / "r.db"
    r = start_server(db, port=port)
    load_demo_rows(r.client, 1500)
    assert r.client.train(MODEL, families=["logistic_regression"]).promoted
    row = generate_outcomes(1, seed=14)[0].features
    with Client(f"127.0.0.1:{port}", timeout=5) as own:
        scorer = own.local_scorer(MODEL, report=False)
        try:
            stop_server(r)
            assert scorer.predict(row).version == 1  # the last champion serves while the server is away
            r = start_server(db, port=port)

            def answers() -> bool:
                try:
                    return bool(r.client.server_status())
                except SahayakError:  # the old server's socket may linger a moment on the port
                    return False

            eventually(answers, timeout=30)
            assert r.client.train(MODEL, families=["gradient_boosting"]).promoted
            eventually(lambda: scorer.version == 2, timeout=30)
            assert scorer.watch_breaks >= 1 and scorer.predict(row).version == 2
        finally:
            scorer.close()
            stop_server(r)


def test_a_local_scorer_keeps_what_it_could_not_report(tmp_path) -> None:
    """A failed LogPredictions puts the batch back for the next try: nothing is lost or counted dropped."""
    import grpc

    from sahayak_rpc.client import Client

    r = start_server(tmp_path / "l.db")
    c = r.client
    load_demo_rows(c, 1500)
    assert c.train(MODEL, families=["logistic_regression"]).promoted
    rows = [e.features for e in generate_outcomes(3, seed=13)]
    with Client(f"127.0.0.1:{r.server.port}", timeout=5) as own:
        scorer = own.local_scorer(MODEL, flush_interval_s=3600)
        for row in rows:
            scorer.predict(row)
        stop_server(r)  # the server goes away with three predictions buffered
        for _ in range(2):  # the second try still has them to send: the first failure lost nothing
            with pytest.raises(grpc.RpcError):
                scorer.flush()
        assert scorer.dropped == 0 and scorer.reported == 0


def test_watch_champion_streams_the_artifact_now_and_on_change(running: Running) -> None:
    from sahayak_rpc import artifact
    from sahayak_rpc._proto.sahayak.v1 import registry_pb2

    c = running.client
    load_demo_rows(c, 800)
    assert c.train(MODEL, families=["logistic_regression"]).promoted
    call = c.registry.WatchChampion(registry_pb2.WatchChampionRequest(model=MODEL), timeout=60)
    first = next(call)
    assert first.version.version == 1
    model, info = artifact.load(first.artifact, keys=None)
    assert info.version == 1 and model.family == "logistic_regression"
    assert c.train(MODEL, families=["gradient_boosting"]).promoted
    second = next(call)
    assert second.version.version == 2
    c.rollback(MODEL)
    assert next(call).version.version == 1
    call.cancel()


def test_columnar_batches_and_recommendations_are_logged_row_for_row(trained: Running) -> None:
    """Every row of a columnar PredictBatch and of a columnar Recommend reads back from the log as the
    features sent (optional ones left out stay out), with the probability answered."""
    import orjson

    c = trained.client
    rows = [dict(e.features) for e in generate_outcomes(30, seed=21)]
    for i in range(0, 30, 3):
        rows[i].pop("education", None)
        rows[i].pop("annual_income_inr", None)
    batch = c.predict_batch(MODEL, rows)
    artisan, schemes = _artisan_and_schemes(seed=5)
    rec = c.recommend(MODEL, artisan, schemes, columnar=True)
    trained.server.predlog.flush()
    got = trained.server.ctx.predictions.get
    for i, row in enumerate(rows):
        stored = got(f"{batch.batch_id}:{i}")
        assert stored is not None and orjson.loads(stored.features_json) == row, i
        assert stored.probability == batch.probabilities[i]
    by_id = {r.candidate_id: r for r in rec.recommendations}
    for i, (scheme_id, features, _) in enumerate(schemes):
        stored = got(f"{rec.recommendation_id}:{i}")
        assert stored is not None and orjson.loads(stored.features_json) == {**artisan, **features}, scheme_id
        assert abs(stored.probability - by_id[scheme_id].probability) <= 1e-12


def test_batch_columns_as_strings_or_as_codes_score_the_same(trained: Running) -> None:
    from sahayak_rpc.client import feature_columns

    rows = [e.features for e in generate_outcomes(40, seed=13)]
    coded = inference_pb2.PredictBatchRequest(model=MODEL)
    feature_columns(rows, coded.columns)
    assert any(len(c.codes) for c in coded.columns.columns)
    plain = inference_pb2.PredictBatchRequest(model=MODEL)
    plain.columns.row_count = len(rows)
    for c in coded.columns.columns:
        if len(c.codes):
            words = [*c.dictionary, ""]
            plain.columns.columns.add(name=c.name, strings=[words[k] for k in c.codes])
        else:
            plain.columns.columns.add(name=c.name, numbers=c.numbers)
    a = trained.client.inference.PredictBatch(coded).probabilities
    b = trained.client.inference.PredictBatch(plain).probabilities
    assert list(a) == list(b)
    trained.server.predlog.flush()
    batch = trained.client.inference.PredictBatch(coded)
    trained.server.predlog.flush()
    stored = trained.server.ctx.predictions.get(f"{batch.batch_id}:3")
    import orjson

    assert orjson.loads(stored.features_json)["craft"] == rows[3]["craft"]


@pytest.mark.parametrize("champion", ["trees", "linear"])
def test_columnar_candidates_rank_like_row_wise_ones(running: Running, champion: str) -> None:
    c = running.client
    load_demo_rows(c, 1200)
    family = "gradient_boosting" if champion == "trees" else "logistic_regression"
    assert c.train(MODEL, families=[family]).promoted
    artisan, schemes = _artisan_and_schemes()
    for weighted in (False, True):
        rows = c.recommend(MODEL, artisan, schemes, top_k=7, explain_top_k=2, weight_by_benefit=weighted)
        cols = c.recommend(MODEL, artisan, schemes, top_k=7, explain_top_k=2, weight_by_benefit=weighted, columnar=True)
        assert [r.candidate_id for r in cols.recommendations] == [r.candidate_id for r in rows.recommendations]
        assert np.allclose(
            [r.probability for r in cols.recommendations], [r.probability for r in rows.recommendations], atol=1e-12
        )
        assert [[x.feature for x in r.contributions] for r in cols.recommendations] == [
            [x.feature for x in r.contributions] for r in rows.recommendations
        ]
        # The explanations' values too: each candidate's row reads back the same whichever form it came in.
        assert [list(r.contributions) for r in cols.recommendations] == [
            list(r.contributions) for r in rows.recommendations
        ]
    assert cols.recommendations[0].prediction_id.startswith(cols.recommendation_id + ":")


def test_bad_columnar_candidates_are_refused(trained: Running) -> None:
    from sahayak_rpc.client import feature_columns, fill_features

    artisan, schemes = _artisan_and_schemes()

    def request(ids, benefits, features):
        r = inference_pb2.RecommendRequest(model=MODEL)
        fill_features(r.subject_features, artisan)
        r.candidate_columns.candidate_ids.extend(ids)
        r.candidate_columns.benefits.extend(benefits)
        feature_columns(features, r.candidate_columns.features)
        return r

    feats = [s[1] for s in schemes[:2]]
    cases = [
        (request(["a", "a"], [], feats), "candidate_ids"),
        (request(["a", "b"], [1.0], feats), "benefits"),
        (request(["a", "b"], [], [{**f, "age": 30.0} for f in feats]), "given by the subject"),
        (request(["a", "b"], [], [{**f, "scheme_type": "lottery"} for f in feats]), "unknown category"),
    ]
    for req, words in cases:
        with pytest.raises(grpc.RpcError) as info:
            trained.client.inference.Recommend(req)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert words in info.value.details()


@pytest.mark.parametrize("n", [0, 1, 15, 16, 2_047, 2_048, 100_000])
def test_packed_fields_read_back_as_the_arrays(n: int) -> None:
    """convert_inference.packed_doubles / packed_labels, merged into a response, give the same message as filling
    the fields from lists (lengths chosen at the varint's byte boundaries: 128 and 16,384 bytes)."""
    from sahayak_rpc._proto.sahayak.v1 import inference_pb2
    from sahayak_rpc.api import convert_inference

    probs = np.random.default_rng(n).random(n)
    fields = inference_pb2.PredictBatchResponse.DESCRIPTOR.fields_by_name
    packed = inference_pb2.PredictBatchResponse(version=3)
    packed.MergeFromString(
        convert_inference.packed_doubles(fields["probabilities"].number, probs)
        + convert_inference.packed_labels(fields["labels"].number, probs >= 0.5)
    )
    listed = inference_pb2.PredictBatchResponse(
        version=3,
        probabilities=probs.tolist(),
        labels=[common_pb2.LABEL_POSITIVE if p >= 0.5 else common_pb2.LABEL_NEGATIVE for p in probs],
    )
    assert packed == listed
    assert list(packed.probabilities) == probs.tolist()
