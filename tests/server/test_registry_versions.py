"""ModelRegistryService versions: aliases, history, rollback, archive, export/import, evaluate."""

from __future__ import annotations

import gzip

import grpc
import pytest

from sahayak_rpc import artifact
from sahayak_rpc.client import SahayakError
from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc._proto.sahayak.v1 import common_pb2, registry_pb2

from ..helpers import Running, load_demo_rows

pytestmark = pytest.mark.backends("sqlite", "postgresql")

MODEL = "scheme-sahayak"


@pytest.fixture
def two_versions(running: Running) -> Running:
    load_demo_rows(running.client, 1200)
    assert running.client.train(MODEL, families=["logistic_regression"]).promoted
    running.client.record_outcome(MODEL, generate_outcomes(1, seed=5)[0].features, True)
    second = running.client.train(MODEL, families=["gradient_boosting"])
    assert second.promoted, second.end_reason
    return running


def test_versions_list_newest_first_with_aliases(two_versions: Running) -> None:
    c = two_versions.client
    versions = list(c.list_versions(MODEL))
    assert [v.version for v in versions] == [2, 1]
    assert list(versions[0].aliases) == ["champion"] and list(versions[1].aliases) == []
    assert versions[1].family == registry_pb2.MODEL_FAMILY_LOGISTIC_REGRESSION
    page = c.registry.ListModelVersions(registry_pb2.ListModelVersionsRequest(model=MODEL, page_size=1))
    assert [v.version for v in page.versions] == [2] and page.next_page_token


def test_set_alias_and_the_append_only_history(two_versions: Running) -> None:
    c = two_versions.client
    c.set_alias(MODEL, "canary", 1, reason="try the old one")
    c.set_alias(MODEL, "canary", 2)
    c.registry.DeleteAlias(registry_pb2.DeleteAliasRequest(model=MODEL, alias="canary"))
    history = c.registry.ListAliasHistory(registry_pb2.ListAliasHistoryRequest(model=MODEL)).events
    assert [(e.alias, e.version, e.previous_version) for e in history] == [
        ("canary", 0, 2),
        ("canary", 2, 1),
        ("canary", 1, 0),
        ("champion", 2, 1),
        ("champion", 1, 0),
    ]
    assert history[2].reason == "try the old one"
    only = c.registry.ListAliasHistory(registry_pb2.ListAliasHistoryRequest(model=MODEL, alias="champion")).events
    assert len(only) == 2
    assert c.get_model(MODEL).aliases == {"champion": 2}


def test_rollback_returns_the_champion_to_its_predecessor_in_one_call(two_versions: Running) -> None:
    c = two_versions.client
    row = generate_outcomes(1, seed=11)[0].features
    before = c.predict(MODEL, row)
    event = c.rollback(MODEL, reason="v2 misbehaves")
    assert (event.alias, event.version, event.previous_version) == ("champion", 1, 2)
    after = c.predict(MODEL, row)
    assert (before.version, after.version) == (2, 1)
    assert after.probability == pytest.approx(c.predict(MODEL, row, version=1).probability, abs=0)


@pytest.mark.parametrize(
    ("call", "code", "reason"),
    [
        (lambda c: c.set_alias(MODEL, "Bad Alias", 1), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (lambda c: c.set_alias(MODEL, "canary", 99), grpc.StatusCode.NOT_FOUND, "VERSION_NOT_FOUND"),
        (
            lambda c: c.registry.DeleteAlias(registry_pb2.DeleteAliasRequest(model=MODEL, alias="champion")),
            grpc.StatusCode.FAILED_PRECONDITION,
            None,
        ),
        (
            lambda c: c.registry.DeleteAlias(registry_pb2.DeleteAliasRequest(model=MODEL, alias="nope")),
            grpc.StatusCode.NOT_FOUND,
            None,
        ),
        (
            lambda c: c.registry.ArchiveModelVersion(registry_pb2.ArchiveModelVersionRequest(model=MODEL, version=2)),
            grpc.StatusCode.FAILED_PRECONDITION,
            None,
        ),
        (lambda c: c.get_version(MODEL, alias="ghost"), grpc.StatusCode.NOT_FOUND, "ALIAS_NOT_FOUND"),
        (lambda c: c.predict(MODEL, {}, version=1, alias="champion"), grpc.StatusCode.INVALID_ARGUMENT, None),
    ],
)
def test_registry_mistakes_get_clear_errors_and_change_nothing(two_versions: Running, call, code, reason) -> None:
    c = two_versions.client
    before = (c.get_model(MODEL).aliases, [v.status for v in c.list_versions(MODEL, include_archived=True)])
    with pytest.raises((SahayakError, grpc.RpcError)) as info:
        call(c)
    err = info.value
    got = err.code if isinstance(err, SahayakError) else err.code()
    assert got is code
    if reason and isinstance(err, SahayakError):
        assert err.reason == reason
    assert (c.get_model(MODEL).aliases, [v.status for v in c.list_versions(MODEL, include_archived=True)]) == before


def test_archive_retires_a_version_that_no_alias_holds(two_versions: Running) -> None:
    c = two_versions.client
    archived = c.registry.ArchiveModelVersion(registry_pb2.ArchiveModelVersionRequest(model=MODEL, version=1)).version
    assert archived.status == registry_pb2.MODEL_VERSION_STATUS_ARCHIVED
    assert [v.version for v in c.list_versions(MODEL)] == [2]
    assert [v.version for v in c.list_versions(MODEL, include_archived=True)] == [2, 1]
    with pytest.raises(SahayakError) as info:
        c.predict(MODEL, generate_outcomes(1)[0].features, version=1)
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(SahayakError):
        c.rollback(MODEL)  # the predecessor is archived


def test_a_rejected_version_needs_force_to_become_champion(running: Running) -> None:
    load_demo_rows(running.client, 800)
    assert running.client.train(MODEL).promoted
    patch = registry_pb2.Model(name=MODEL)
    patch.settings.gate.min_f1 = 0.999
    running.client.update_model(patch, ["settings.gate.min_f1"])
    # One more outcome: a run on exactly the champion's rows would register nothing (test_quality_gate.py).
    running.client.record_outcome(MODEL, generate_outcomes(1, seed=5)[0].features, True)
    rejected = running.client.train(MODEL).produced_version
    with pytest.raises(SahayakError) as info:
        running.client.set_alias(MODEL, "champion", rejected)
    assert info.value.reason == "VERSION_REJECTED"
    running.client.set_alias(MODEL, "champion", rejected, force=True, reason="operator override")
    assert running.client.predict(MODEL, generate_outcomes(1)[0].features).version == rejected


def test_export_then_import_gives_the_same_predictions(two_versions: Running) -> None:
    c = two_versions.client
    data = c.export_version(MODEL, alias="champion")
    exported = c.registry.ExportModelVersion(registry_pb2.ExportModelVersionRequest(model=MODEL, version=2))
    assert exported.format == artifact.FORMAT and len(exported.sha256) == 64
    imported = c.import_version(MODEL, data, description="round trip")
    assert imported.version == 3 and imported.status == registry_pb2.MODEL_VERSION_STATUS_READY
    assert imported.lineage.source == registry_pb2.VERSION_SOURCE_IMPORT
    assert imported.lineage.parameters["imported_from"] == f"{MODEL}@2"
    for e in generate_outcomes(20, seed=4):
        assert (
            c.predict(MODEL, e.features, version=3).probability == c.predict(MODEL, e.features, version=2).probability
        )


def _tampered(data: bytes) -> list[bytes]:
    raw = gzip.decompress(data)
    magic, header, payload = raw.split(b"\n", 2)
    flipped = payload.replace(b'"threshold":0.5', b'"threshold":0.4', 1)
    return [
        data[: len(data) // 2],  # truncated
        b"not an artifact at all",
        gzip.compress(magic + b"\n" + header + b"\n" + flipped),  # content changed, checksum stale
        gzip.compress(b"SAHAYAK-MODEL/9\n" + header + b"\n" + payload),
        # oversized: 70 KB on the wire that would inflate past the 64 MiB limit
        gzip.compress(magic + b"\n" + header + b"\n" + b" " * (70 << 20), compresslevel=1),
    ]


def test_a_tampered_artifact_is_invalid_argument_and_changes_nothing(two_versions: Running) -> None:
    c = two_versions.client
    data = c.export_version(MODEL, version=2)
    before = [v.version for v in c.list_versions(MODEL, include_archived=True)]
    for bad in _tampered(data):
        with pytest.raises(SahayakError) as info:
            c.import_version(MODEL, bad)
        assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.reason == "BAD_ARTIFACT"
        assert info.value.violations[0].field.startswith("artifact.")
    assert [v.version for v in c.list_versions(MODEL, include_archived=True)] == before


def test_an_artifact_signed_with_another_key_is_refused(two_versions: Running) -> None:
    c = two_versions.client
    model = two_versions.server.registry.served(two_versions.server.catalog.get(MODEL), 2).model
    forged = artifact.dump(
        model,
        model_name=MODEL,
        version=2,
        created_at_us=1,
        metadata={},
        key=b"k" * 32,
        key_id=two_versions.server.registry.key_id,
    )
    with pytest.raises(SahayakError) as info:
        c.import_version(MODEL, forged)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT and "signature" in info.value.violations[0].field


def test_an_artifact_for_another_schema_is_refused(two_versions: Running) -> None:
    from ..helpers import SMALL_FEATURES

    c = two_versions.client
    c.create_model("other", SMALL_FEATURES)
    with pytest.raises(SahayakError) as info:
        c.import_version("other", c.export_version(MODEL, version=2))
    assert info.value.reason == "SCHEMA_MISMATCH"


def test_evaluate_on_supplied_rows_and_on_stored_outcomes(two_versions: Running) -> None:
    c = two_versions.client
    request = registry_pb2.EvaluateModelVersionRequest(model=MODEL, version=1)
    for e in generate_outcomes(300, seed=21):
        o = request.data.rows.rows.add(label=common_pb2.LABEL_POSITIVE if e.label else common_pb2.LABEL_NEGATIVE)
        from sahayak_rpc.client import fill_features

        fill_features(o.features, e.features)
    resp = c.registry.EvaluateModelVersion(request)
    assert resp.version == 1 and resp.metrics.count == 300 and 0.6 < resp.metrics.accuracy <= 1
    stored = c.registry.EvaluateModelVersion(
        registry_pb2.EvaluateModelVersionRequest(
            model=MODEL, data=registry_pb2.EvaluationData(outcomes=registry_pb2.OutcomeWindow(last_n=500))
        )
    )
    assert stored.version == 2 and stored.metrics.count == 500
    bad = registry_pb2.EvaluateModelVersionRequest(model=MODEL)
    bad.data.rows.rows.add(label=common_pb2.LABEL_POSITIVE).features["age"].string_value = "old"
    with pytest.raises(grpc.RpcError) as info:
        c.registry.EvaluateModelVersion(bad)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "data.rows.rows[0]" in info.value.details()


def test_compare_scores_both_versions_on_the_same_rows(two_versions: Running) -> None:
    c = two_versions.client
    resp = c.registry.CompareModelVersions(
        registry_pb2.CompareModelVersionsRequest(model=MODEL, version_a=1, version_b=2)
    )
    assert resp.row_count == resp.metrics_a.count == resp.metrics_b.count > 0
    assert resp.difference["accuracy"] == pytest.approx(resp.metrics_b.accuracy - resp.metrics_a.accuracy)


def test_racing_promotions_serve_the_version_the_database_says_won(two_versions: Running) -> None:
    """Each promotion swaps the serving model under the write lock, after its commit:
    whatever order concurrent SetAlias calls commit in, the server serves the last one."""
    import threading

    c, server = two_versions.client, two_versions.server
    model = server.catalog.get(MODEL)
    for _ in range(30):
        threads = [threading.Thread(target=c.set_alias, args=(MODEL, "champion", v)) for v in (1, 2, 1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert server.registry.served(model, 0, "").version == c.get_version(MODEL, alias="champion").version
