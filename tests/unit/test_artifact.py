"""Model artifacts: exact round trips, and every way a bad artifact is refused."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import pickle
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from threadpoolctl import threadpool_limits

from sahayak_rpc import artifact as art
from sahayak_rpc import demo_data, settings, training
from sahayak_rpc.encoding import RawEncoder
from sahayak_rpc.schema import FeatureSpec, FeatureType, Schema
from sahayak_rpc.scoring import Calibrator, LinearScorer, ScoringModel, TreeArrays, TreeScorer

KEY = b"own-server-hmac-key-0123456789ab"
KEY_ID = "own"
OTHER_KEY = b"other-server-hmac-key-9876543210"
OTHER_ID = "other"
TRUSTED = {KEY_ID: KEY}
NAME = demo_data.DEMO_MODEL_NAME
META = {"metrics": {"accuracy": 0.8, "count": 300}, "lineage": {"parent": 2, "tags": ["a", "b"]}}

Payload = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Trained:
    logistic: ScoringModel
    trees: ScoringModel
    held_out: list[dict[str, Any]]


@pytest.fixture(scope="module")
def trained() -> Trained:
    examples = demo_data.generate_outcomes(1800, seed=7)
    fit = examples[:1500]
    data = training.TrainingData(
        [e.features for e in fit],
        np.array([int(e.label) for e in fit]),
        [e.outcome_id for e in fit],
        np.array([int(e.occurred_at.timestamp() * 1e6) for e in fit], dtype=np.int64),
    )
    # One OpenMP thread: on a busy machine the trees' thread pool can spin for a minute.
    with threadpool_limits(limits=1):
        result = training.Trainer(demo_data.DEMO_SCHEMA, settings.ModelSettings()).run(
            data, ["logistic_regression", "gradient_boosting"], "stratified"
        )
    by_family = {c.family: c.model for c in result.candidates}
    held = [dict(e.features) for e in examples[1500:]]
    # Also an unknown category and a row with every optional feature missing.
    held.append({**held[0], "craft": "glassblower"})
    held.append({k: v for k, v in held[1].items() if demo_data.DEMO_SCHEMA.feature(k).required})  # type: ignore[union-attr]
    return Trained(by_family["logistic_regression"], by_family["gradient_boosting"], held)


def dump(model: ScoringModel, key: bytes = KEY, key_id: str = KEY_ID, **kw: Any) -> bytes:
    args: dict[str, Any] = {"model_name": NAME, "version": 3, "created_at_us": 1_700_000_000_000_000, "metadata": META}
    args.update(kw)
    return art.dump(model, key=key, key_id=key_id, **args)


# --- test-side decoding and re-signing (trusted input, so plain gzip is fine) ---


def unpack(data: bytes) -> tuple[bytes, dict[str, Any], bytes]:
    magic, header, payload = gzip.decompress(data).split(b"\n", 2)
    return magic, orjson.loads(header), payload


def pack(
    body: bytes, key: bytes = KEY, key_id: str = KEY_ID, header: dict[str, Any] | None = None, magic: bytes = art.MAGIC
) -> bytes:
    import hashlib
    import hmac

    h = {
        "sha256": hashlib.sha256(body).hexdigest(),
        "hmac_sha256": hmac.new(key, body, hashlib.sha256).hexdigest(),
        "key_id": key_id,
        "payload_bytes": len(body),
    }
    h.update(header or {})
    return gzip.compress(magic + b"\n" + orjson.dumps(h) + b"\n" + body)


def resign(data: bytes, edit: Callable[[Payload], object], key: bytes = KEY, key_id: str = KEY_ID) -> bytes:
    """Decode, edit the payload dict, re-encode and sign it again: a valid signature over bad content."""
    _, _, body = unpack(data)
    payload = orjson.loads(body)
    edit(payload)
    return pack(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), key, key_id)


def refused(data: bytes, field: str, keys: dict[str, bytes] | None = TRUSTED, **kw: Any) -> art.ArtifactError:
    with pytest.raises(art.ArtifactError) as info:
        art.load(data, keys=keys, **kw)
    assert info.value.field == field, (info.value.field, str(info.value))
    return info.value


# --- round trips ---------------------------------------------------------------


def assert_same_scores(a: ScoringModel, b: ScoringModel, rows: list[dict[str, Any]]) -> None:
    pa, pb = a.predict_rows(rows), b.predict_rows(rows)
    assert pa.tobytes() == pb.tobytes()  # bit-for-bit, not approximately
    for row in rows:
        assert a.explain_one(row, 1000) == b.explain_one(row, 1000)
        assert a.predict_one(row) == b.predict_one(row)


@pytest.mark.parametrize("family", ["logistic", "trees"])
def test_round_trip_is_exact(trained: Trained, family: str) -> None:
    model: ScoringModel = getattr(trained, family)
    data = dump(model)
    loaded, info = art.load(data, keys=TRUSTED)
    assert_same_scores(model, loaded, trained.held_out)
    assert loaded.schema == model.schema and loaded.family == model.family
    assert loaded.threshold == model.threshold and loaded.calibrator == model.calibrator
    assert info == art.ArtifactInfo(
        NAME, 3, model.family, 1_700_000_000_000_000, unpack(data)[1]["sha256"], KEY_ID, META
    )
    if family == "trees":
        assert loaded.trees is not None and model.trees is not None
        assert loaded.trees.trees == model.trees.trees and loaded.trees.raw == model.trees.raw
        # This model exercises both special encodings: category bitsets and +inf thresholds.
        assert model.trees.trees.bitsets and math.inf in model.trees.trees.threshold
    else:
        assert loaded.linear is not None and model.linear is not None
        assert loaded.linear.encoder == model.linear.encoder
        assert loaded.linear.weights.tobytes() == model.linear.weights.tobytes()
        assert loaded.linear.column_means.tobytes() == model.linear.column_means.tobytes()


def test_layout_is_the_documented_one(trained: Trained) -> None:
    data = dump(trained.trees)
    assert data == dump(trained.trees)  # deterministic (gzip mtime 0)
    magic, header, body = unpack(data)
    assert magic == b"SAHAYAK-MODEL/1"
    assert sorted(header) == ["hmac_sha256", "key_id", "payload_bytes", "sha256"]
    assert header["payload_bytes"] == len(body) and header["key_id"] == KEY_ID
    payload = orjson.loads(body)
    assert body == orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)  # canonical
    assert payload["format"] == art.FORMAT == "sahayak-model/1"
    assert payload["linear"] is None and payload["raw_encoder"]["names"] == demo_data.DEMO_SCHEMA.names
    assert all(isinstance(b, str) and b == b.lower() for b in payload["trees"]["bitsets"])
    assert "inf" in payload["trees"]["threshold"]


def test_hand_built_trees_with_inf_threshold_and_categories_round_trip() -> None:
    schema = Schema(
        (FeatureSpec("x", FeatureType.NUMERIC), FeatureSpec("c", FeatureType.CATEGORICAL, categories=("a", "b", "c")))
    )
    trees = TreeArrays(
        baseline=-0.25,
        roots=(0, 5),
        feature=(0, 1, -1, -1, -1, -1),
        threshold=(math.inf, 0.0, 0.0, 0.0, 0.0, 0.0),
        missing_left=(False, True, False, False, False, False),
        left=(1, 3, -1, -1, -1, -1),
        right=(2, 4, -1, -1, -1, -1),
        value=(0.1, 0.2, -0.7, 1.5, -2.0, 0.125),
        bitset=(-1, 0, -1, -1, -1, -1),
        bitsets=(0b101,),
    )
    model = ScoringModel(
        schema,
        "gradient_boosting",
        0.4,
        Calibrator("isotonic", x=(-1.0, 0.0, 0.0, 2.0), y=(0.1, 0.3, 0.4, 0.9)),
        trees=TreeScorer(trees, RawEncoder.from_schema(schema)),
    )
    loaded, _ = art.load(dump(model, model_name="tiny", metadata={}), keys=TRUSTED)
    assert loaded.trees is not None and loaded.trees.trees == trees
    rows: list[dict[str, Any]] = [
        {"x": 1.0, "c": "a"},
        {"x": 2.0, "c": "b"},
        {"c": "c"},
        {"x": -3.0},
        {},
        {"x": 0.5, "c": "zz"},
    ]
    assert_same_scores(model, loaded, rows)


def test_other_servers_key_is_accepted_only_when_trusted(trained: Trained) -> None:
    data = dump(trained.logistic, key=OTHER_KEY, key_id=OTHER_ID)
    refused(data, "key_id")
    loaded, info = art.load(data, keys={KEY_ID: KEY, OTHER_ID: OTHER_KEY})
    assert info.key_id == OTHER_ID
    assert_same_scores(trained.logistic, loaded, trained.held_out[:20])


def test_keys_none_skips_only_the_signature(trained: Trained) -> None:
    # For a client that trusts its channel: any signer, but still hashed and validated.
    data = dump(trained.trees, key=OTHER_KEY, key_id="unknown-server")
    loaded, info = art.load(data, keys=None)
    assert info.key_id == "unknown-server"
    assert_same_scores(trained.trees, loaded, trained.held_out[:20])
    magic, header, body = unpack(data)
    refused(gzip.compress(magic + b"\n" + orjson.dumps(header) + b"\n" + body[:-1] + b" "), "sha256", keys=None)
    bad = resign(data, _set("trees.feature.0", 99), key=b"anyone-at-all-can-sign-this-0000")
    refused(bad, "payload.trees.feature[0]", keys=None)


def test_peek_reads_without_keys_but_checks_integrity(trained: Trained) -> None:
    data = dump(trained.trees, key=OTHER_KEY, key_id=OTHER_ID)
    seen = art.peek(data)
    assert seen["header"]["key_id"] == OTHER_ID  # type: ignore[index]
    assert (seen["model_name"], seen["version"], seen["family"], seen["metadata"]) == (
        NAME,
        3,
        "gradient_boosting",
        META,
    )
    magic, header, body = unpack(data)
    with pytest.raises(art.ArtifactError) as info:
        art.peek(gzip.compress(magic + b"\n" + orjson.dumps(header) + b"\n" + body.replace(b"3", b"4", 1)))
    assert info.value.field == "sha256"


def test_error_carries_field_and_message() -> None:
    err = art.ArtifactError("signature", "tampered")
    assert isinstance(err, ValueError) and err.field == "signature" and str(err) == "tampered"


# --- framing: size, gzip, magic, header, hash, signature -------------------------


def test_input_over_the_limit(trained: Trained) -> None:
    data = dump(trained.logistic)
    refused(data, "size", max_bytes=len(data) - 1)


def test_truncated_and_random_bytes(trained: Trained) -> None:
    data = dump(trained.logistic)
    refused(data[: len(data) // 2], "gzip")
    refused(data[:-1], "gzip")  # just the trailer's last byte
    refused(b"", "gzip")
    refused(random.Random(0).randbytes(4000), "gzip")
    refused(data + b"\x00", "gzip")  # bytes after the stream


def test_gzip_bomb_is_stopped_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (16 << 20))
    assert len(bomb) < 40_000
    err = refused(bomb, "size", max_bytes=1 << 20)
    assert "inflates" in str(err)


def test_wrong_magic_even_for_a_pickle() -> None:
    refused(gzip.compress(pickle.dumps({"model": [1.0, 2.0]})), "magic")
    refused(pack(b"{}", magic=b"SAHAYAK-MODEL/2"), "magic")


def test_bad_header(trained: Trained) -> None:
    _, header, body = unpack(dump(trained.logistic))
    refused(gzip.compress(art.MAGIC + b"\n{not json\n" + body), "header")
    refused(gzip.compress(art.MAGIC + b"\n[1, 2]\n" + body), "header")
    refused(gzip.compress(art.MAGIC + b"\n" + orjson.dumps(header)), "header")  # no payload line
    refused(pack(body, header={"sha256": "ABC"}), "header.sha256")
    refused(pack(body, header={"payload_bytes": "12"}), "header.payload_bytes")
    refused(pack(body, header={"extra": 1}), "header.extra")
    refused(pack(body, header={"payload_bytes": len(body) + 1}), "payload_bytes")


def test_flipped_payload_byte_is_corruption(trained: Trained) -> None:
    magic, header, body = unpack(dump(trained.logistic))
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x01
    err = refused(gzip.compress(magic + b"\n" + orjson.dumps(header) + b"\n" + bytes(flipped)), "sha256")
    assert "corrupted" in str(err)


def test_edited_payload_resigned_with_another_key(trained: Trained) -> None:
    # Re-hashed (so the SHA-256 matches) and signed under our key id, but with a key we do not hold.
    data = resign(dump(trained.logistic), lambda p: p.update(threshold=0.01), key=OTHER_KEY, key_id=KEY_ID)
    err = refused(data, "signature")
    assert "tampered" in str(err)
    # The same edit without re-signing at all: header HMAC kept, hash updated.
    _, header, body = unpack(dump(trained.logistic))
    edited = body.replace(b'"threshold":0.5', b'"threshold":0.1')
    assert edited != body
    refused(pack(edited, header={"hmac_sha256": header["hmac_sha256"]}), "signature")


def test_unknown_key_id(trained: Trained) -> None:
    err = refused(dump(trained.logistic, key_id="someone-else"), "key_id")
    assert "does not trust" in str(err)


# --- validation behind a valid signature ---------------------------------------


def test_nan_smuggled_into_weights(trained: Trained) -> None:
    data = dump(trained.logistic)

    def as_python_json(p: Payload) -> bytes:  # the stdlib writes the non-standard NaN literal
        return json.dumps(p, sort_keys=True, separators=(",", ":")).encode()

    payload = orjson.loads(unpack(data)[2])
    for bad in (math.nan, math.inf):
        payload["linear"]["weights"][3] = bad
        refused(pack(as_python_json(payload)), "payload")  # properly signed; refused by the strict parser
    payload["linear"]["weights"][3] = None  # what orjson itself writes for NaN
    refused(pack(as_python_json(payload)), "payload.linear.weights[3]")
    # And dump refuses to write one in the first place.
    lin = trained.logistic.linear
    assert lin is not None
    weights = lin.weights.copy()
    weights[3] = math.nan
    broken = dataclasses.replace(
        trained.logistic, linear=LinearScorer(lin.encoder, weights, lin.intercept, lin.column_means, lin.raw)
    )
    with pytest.raises(art.ArtifactError) as info:
        dump(broken)
    assert info.value.field == "payload.linear.weights[3]"


def _first(p: Payload, pred: Callable[[int], bool]) -> int:
    return next(i for i in range(len(p["trees"]["feature"])) if pred(i))


def _inner(p: Payload, i: int) -> bool:
    return bool(p["trees"]["feature"][i] >= 0)


def _set(path: str, value: Any) -> Callable[[Payload], None]:
    def edit(p: Payload) -> None:
        *parents, last = path.split(".")
        target: Any = p
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return edit


def _backward_child(p: Payload) -> None:
    t = p["trees"]
    i = _first(p, lambda i: _inner(p, i) and i not in t["roots"])
    t["left"][i] = t["roots"][0]  # points back at its tree's root: a cycle
    p["_expect"] = f"payload.trees.left[{i}]"


def _child_in_next_tree(p: Payload) -> None:
    p["trees"]["right"][0] = p["trees"]["roots"][1]
    p["_expect"] = "payload.trees.right[0]"


def _feature_out_of_range(p: Payload) -> None:
    i = _first(p, lambda i: _inner(p, i))
    p["trees"]["feature"][i] = len(p["raw_encoder"]["names"])
    p["_expect"] = f"payload.trees.feature[{i}]"


def _leaf_with_child(p: Payload) -> None:
    i = _first(p, lambda i: not _inner(p, i))
    p["trees"]["left"][i] = i + 1
    p["_expect"] = f"payload.trees.left[{i}]"


def _bitset_on_numeric(p: Payload) -> None:
    kinds = p["raw_encoder"]["kinds"]
    i = _first(p, lambda i: _inner(p, i) and kinds[p["trees"]["feature"][i]] == "numeric")
    p["trees"]["bitset"][i] = 0
    p["_expect"] = f"payload.trees.bitset[{i}]"


def _bitset_index_out_of_range(p: Payload) -> None:
    i = _first(p, lambda i: p["trees"]["bitset"][i] >= 0)
    p["trees"]["bitset"][i] = len(p["trees"]["bitsets"])
    p["_expect"] = f"payload.trees.bitset[{i}]"


def _bad_threshold(value: Any) -> Callable[[Payload], None]:
    def edit(p: Payload) -> None:
        i = _first(p, lambda i: _inner(p, i))
        p["trees"]["threshold"][i] = value
        p["_expect"] = f"payload.trees.threshold[{i}]"

    return edit


def _root_out_of_range(p: Payload) -> None:
    roots = p["trees"]["roots"]
    roots.append(len(p["trees"]["feature"]))
    p["_expect"] = f"payload.trees.roots[{len(roots) - 1}]"


def _swap_encoder(p: Payload) -> None:
    enc = p["linear"]["encoder"]
    enc[0], enc[1] = enc[1], enc[0]


def _drop_unknown_level(p: Payload) -> None:
    i = next(i for i, e in enumerate(p["linear"]["encoder"]) if e["kind"] == "categorical")
    p["linear"]["encoder"][i]["levels"].remove("<unknown>")
    p["_expect"] = f"payload.linear.encoder[{i}].levels"


def _rename_schema_feature(p: Payload) -> None:
    p["schema"]["features"][0]["name"] = "age_years"


def _duplicate_schema_feature(p: Payload) -> None:
    p["schema"]["features"][1]["name"] = p["schema"]["features"][0]["name"]


def _isotonic(x: list[float], y: list[float]) -> Callable[[Payload], None]:
    return _set("calibration", {"method": "isotonic", "a": 1.0, "b": 0.0, "x": x, "y": y})


LOGISTIC_CASES: list[tuple[str, Callable[[Payload], object], str]] = [
    ("weights length", lambda p: p["linear"]["weights"].pop(), "payload.linear.weights"),
    ("column means length", lambda p: p["linear"]["column_means"].append(0.0), "payload.linear.column_means"),
    ("weight as string", _set("linear.weights.5", "0.5"), "payload.linear.weights[5]"),
    ("weight as bool", _set("linear.weights.5", True), "payload.linear.weights[5]"),
    ("huge weight", _set("linear.weights.0", 1e300), "payload.linear.weights[0]"),
    ("intercept null", _set("linear.intercept", None), "payload.linear.intercept"),
    ("zero std", _set("linear.encoder.0.std", 0.0), "payload.linear.encoder[0].std"),
    ("extra encoder field", _set("linear.encoder.0.code", "os.system"), "payload.linear.encoder[0].code"),
    ("encoder order", _swap_encoder, "payload.linear.encoder[0]"),
    ("levels without <unknown>", _drop_unknown_level, ""),
    ("schema differs from encoder", _rename_schema_feature, "payload.linear.encoder[0]"),
    ("schema invalid", _duplicate_schema_feature, "payload.schema.features[1].name"),
    ("schema not canonical", _set("schema.features.0.required", "yes"), "payload.schema"),
    ("schema not an object", _set("schema", []), "payload.schema"),
    ("isotonic x decreasing", _isotonic([0.0, 1.0, 0.5], [0.1, 0.5, 0.9]), "payload.calibration.x[2]"),
    ("isotonic y above 1", _isotonic([0.0, 1.0], [0.1, 1.5]), "payload.calibration.y[1]"),
    ("isotonic lengths", _isotonic([0.0, 1.0], [0.1]), "payload.calibration.y"),
    ("isotonic empty", _isotonic([], []), "payload.calibration.x"),
    (
        "sigmoid with points",
        _set("calibration", {"method": "sigmoid", "a": 1.0, "b": 0.0, "x": [0.0], "y": [0.5]}),
        "payload.calibration.x",
    ),
    ("calibration method", _set("calibration.method", "platt"), "payload.calibration.method"),
    ("threshold 1", _set("threshold", 1.0), "payload.threshold"),
    ("threshold 0", _set("threshold", 0), "payload.threshold"),
    ("family without its section", _set("family", "gradient_boosting"), "payload.trees"),
    ("unknown family", _set("family", "neural_net"), "payload.family"),
    ("stray section", _set("raw_encoder", {"names": [], "kinds": [], "categories": []}), "payload.raw_encoder"),
    ("format", _set("format", "sahayak-model/2"), "payload.format"),
    ("unknown field", _set("code", "__import__('os')"), "payload.code"),
    ("missing field", lambda p: p.pop("metadata"), "payload.metadata"),
    ("metadata not an object", _set("metadata", [1, 2]), "payload.metadata"),
    ("version as string", _set("version", "3"), "payload.version"),
    ("version zero", _set("version", 0), "payload.version"),
    ("model name", _set("model_name", "../etc/passwd"), "payload.model_name"),
    ("model name with newline", _set("model_name", "scheme\n"), "payload.model_name"),
    ("empty payload", lambda p: p.clear(), "payload.format"),
]

TREE_CASES: list[tuple[str, Callable[[Payload], object], str]] = [
    ("child points backwards (cycle)", _backward_child, ""),
    ("child in the next tree", _child_in_next_tree, ""),
    ("feature out of range", _feature_out_of_range, ""),
    ("feature below -1", _set("trees.feature.0", -2), "payload.trees.feature[0]"),
    ("leaf with a child", _leaf_with_child, ""),
    ("bitset on a numeric feature", _bitset_on_numeric, ""),
    ("bitset index out of range", _bitset_index_out_of_range, ""),
    ("bitset of 257 bits", _set("trees.bitsets.0", "1" + "0" * 64), "payload.trees.bitsets[0]"),
    ("bitset with prefix", _set("trees.bitsets.0", "0x5"), "payload.trees.bitsets[0]"),
    ("bitset as integer", _set("trees.bitsets.0", 5), "payload.trees.bitsets[0]"),
    ("bitset with newline", _set("trees.bitsets.0", "5\n"), "payload.trees.bitsets[0]"),
    ("threshold -inf", _bad_threshold("-inf"), ""),
    ("threshold null (NaN)", _bad_threshold(None), ""),
    ("missing_left as 1", _set("trees.missing_left.0", 1), "payload.trees.missing_left[0]"),
    ("node arrays differ in length", lambda p: p["trees"]["value"].pop(), "payload.trees.value"),
    ("root out of range", _root_out_of_range, ""),
    ("roots not increasing", lambda p: p["trees"]["roots"].reverse(), "payload.trees.roots[0]"),
    ("first root not node 0", lambda p: p["trees"]["roots"].pop(0), "payload.trees.roots[0]"),
    ("raw encoder kinds", _set("raw_encoder.kinds.0", "categorical"), "payload.raw_encoder.kinds[0]"),
    (
        "raw encoder categories",
        lambda p: p["raw_encoder"]["categories"][3].reverse(),
        "payload.raw_encoder.categories[3]",
    ),
    ("raw encoder names short", lambda p: p["raw_encoder"]["names"].pop(), "payload.raw_encoder.names"),
    ("stray linear section", _set("linear", {}), "payload.linear"),
]


@pytest.mark.parametrize(("name", "edit", "field"), LOGISTIC_CASES, ids=[c[0] for c in LOGISTIC_CASES])
def test_validation_behind_a_valid_signature_logistic(
    trained: Trained, name: str, edit: Callable[[Payload], object], field: str
) -> None:
    check_refused(dump(trained.logistic), edit, field)


@pytest.mark.parametrize(("name", "edit", "field"), TREE_CASES, ids=[c[0] for c in TREE_CASES])
def test_validation_behind_a_valid_signature_trees(
    trained: Trained, name: str, edit: Callable[[Payload], object], field: str
) -> None:
    check_refused(dump(trained.trees), edit, field)


def check_refused(data: bytes, edit: Callable[[Payload], object], field: str) -> None:
    seen: dict[str, str] = {}

    def edit_and_note(p: Payload) -> None:
        edit(p)
        if "_expect" in p:
            seen["field"] = p.pop("_expect")

    refused(resign(data, edit_and_note), field or seen["field"])


# --- dump refuses what load would refuse ----------------------------------------


def test_dump_refuses_non_json_metadata_and_bad_arguments(trained: Trained) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"metadata": {"metrics": {"roc_auc": math.nan}}}, "payload.metadata.metrics.roc_auc"),
        ({"metadata": {"when": object()}}, "payload.metadata.when"),
        ({"metadata": {1: "x"}}, "payload.metadata"),
        ({"metadata": ["not", "a", "dict"]}, "payload.metadata"),
        ({"model_name": "Bad Name"}, "payload.model_name"),
        ({"version": 0}, "payload.version"),
        ({"key": b"short"}, "key"),
        ({"key_id": "has space"}, "key_id"),
    ]
    for kwargs, field in cases:
        with pytest.raises(art.ArtifactError) as info:
            dump(trained.logistic, **kwargs)
        assert info.value.field == field, kwargs
    # Tuples are JSON lists: written, and read back as lists.
    _, info_ = art.load(dump(trained.logistic, metadata={"pair": (1, 2.5)}), keys=TRUSTED)
    assert info_.metadata == {"pair": [1, 2.5]}


# --- whatever the content, load either refuses with ArtifactError or yields a working model ---

_ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    2**62,
    0.5,
    -0.0,
    1e308,
    1e-320,
    "",
    "inf",
    "x",
    [],
    {},
    [1],
    {"a": 1},
    "<unknown>",
]


def _mutate(node: Any, rng: random.Random) -> None:
    """Replace, drop, duplicate or nudge one randomly chosen value somewhere in the payload."""
    while True:
        keys: list[Any] = sorted(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        k = rng.choice(keys)
        if isinstance(node[k], dict | list) and node[k] and rng.random() < 0.6:
            node = node[k]
            continue
        r = rng.random()
        if r < 0.1:
            del node[k]
        elif r < 0.2 and isinstance(node, list):
            node.append(node[k])
        elif r < 0.4 and type(node[k]) is int:
            node[k] += rng.choice([-2, -1, 1, 2])
        else:
            node[k] = rng.choice(_ODD_VALUES)
        return


def test_random_edits_are_refused_cleanly_or_load_a_working_model(trained: Trained) -> None:
    rng = random.Random(1)
    outcomes = {"refused": 0, "loaded": 0}
    for model in (trained.logistic, trained.trees):
        body = unpack(dump(model))[2]
        for _ in range(100):
            payload = orjson.loads(body)  # a fresh copy
            for _ in range(rng.randint(1, 3)):
                _mutate(payload, rng)
            try:
                loaded, _ = art.load(pack(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)), keys=TRUSTED)
            except art.ArtifactError:
                outcomes["refused"] += 1
                continue
            outcomes["loaded"] += 1
            with np.errstate(all="raise"):
                probs = loaded.predict_rows(trained.held_out[:20])
            assert np.all((probs >= 0) & (probs <= 1))
            loaded.explain_one(trained.held_out[0], 5)
    assert outcomes["refused"] > 120
