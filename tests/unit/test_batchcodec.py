"""The stored form of logged prediction batches (store/batchcodec.py), and rows from before it."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from sahayak_rpc.schema import Column
from sahayak_rpc.store import PredictionRepository
from sahayak_rpc.store.sqlite import SqliteDatabase as Database
from sahayak_rpc.store.batchcodec import (
    BatchFormatError,
    decode_columns,
    decode_probabilities,
    encode_columns,
    encode_probabilities,
    value_at,
)
from sahayak_rpc.store.predictions import batch_row

NAN = math.nan


def sample() -> list[Column]:
    return [
        Column("age", numbers=np.array([30.0, NAN, 41.5])),
        Column("score", numbers=np.array([0.1, 0.2, NAN], dtype=np.float32)),
        Column("has_card", numbers=np.array([1.0, 0.0, NAN])),
        Column("craft", codes=np.array([1, -1, 0]), dictionary=["weaver", "potter"]),
        Column("region", strings=["north", "", "south"]),
    ]


def test_every_kind_round_trips_with_its_missing_values() -> None:
    data = encode_columns(sample(), 3, booleans=frozenset({"has_card"}))
    cols = decode_columns(data)
    assert cols["age"].dtype == np.float64 and np.isnan(cols["age"][1]) and cols["age"][2] == 41.5
    assert cols["score"].dtype == np.float32  # stored as it came
    assert cols["has_card"] == [True, False, None]
    assert cols["craft"]["dictionary"] == ["weaver", "potter"] and cols["craft"]["codes"].tolist() == [1, -1, 0]
    assert cols["region"] == ["north", "", "south"]
    assert [batch_row(cols, i) for i in range(3)] == [
        {"age": 30.0, "score": 0.1, "has_card": True, "craft": "potter", "region": "north"},
        {"score": 0.2, "has_card": False},
        {"age": 41.5, "craft": "weaver", "region": "south"},
    ]
    probs = np.array([0.25, 0.5, 0.75])
    assert decode_probabilities(encode_probabilities(probs)) == [0.25, 0.5, 0.75]


def test_the_binary_form_is_smaller_than_the_json_it_replaced() -> None:
    n = 1000
    rng = np.random.default_rng(0)
    cols = [Column(f"x{j}", numbers=rng.normal(size=n)) for j in range(20)]
    binary = encode_columns(cols, n)
    as_json = orjson.dumps({c.name: c.numbers for c in cols}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert len(binary) < len(as_json) * 0.6
    assert np.array_equal(decode_columns(binary)["x3"], cols[3].numbers)


def test_older_json_rows_still_decode() -> None:
    old = orjson.dumps({"age": [30.0, None], "craft": {"dictionary": ["weaver"], "codes": [0, -1]}}).decode()
    cols = decode_columns(old)
    assert [batch_row(cols, i) for i in range(2)] == [{"age": 30.0, "craft": "weaver"}, {}]
    assert decode_probabilities("[0.5, 0.25]") == [0.5, 0.25]
    assert value_at([None, 1.0], 0) is None


def test_a_corrupt_row_is_a_clear_error() -> None:
    with pytest.raises(BatchFormatError):
        decode_columns(b"JUNKJUNKJUNK")


def test_a_logged_batch_from_before_the_migration_is_found_by_prediction_id(tmp_path) -> None:
    db = Database(tmp_path / "old.db", synchronous="normal")
    with db.write() as conn:
        conn.execute(
            "INSERT INTO models (name, schema_json, settings_json, created_us, updated_us)"
            " VALUES ('m', '{}', '{}', 0, 0)"
        )
        conn.execute(
            "INSERT INTO prediction_batches (batch_id, model_id, version, row_count, columns_data,"
            " probabilities_data, threshold, created_us, source) VALUES ('b1', 1, 1, 2, ?, ?, 0.5, 7, 'served')",
            (orjson.dumps({"age": [30.0, 41.0]}).decode(), "[0.25, 0.75]"),
        )
    got = PredictionRepository(db).get("b1:1")
    assert (
        got is not None
        and orjson.loads(got.features_json) == {"age": 41.0}
        and got.probability == 0.75
        and got.label == 1
    )
    db.close()


LAYOUT = [
    ("age", "number", ()),
    ("has_card", "bool", ()),
    ("craft", "category", ("a", "b", "c")),
    ("score", "number", ()),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_matrix_batch_is_stored_as_numbers_and_one_byte_codes(dtype: type) -> None:
    from sahayak_rpc.store.batchcodec import MatrixLayout, encode_matrix

    x = np.array([[30.0, 1.0, 2.0, 0.1], [NAN, NAN, NAN, NAN], [41.5, 0.0, 0.0, 7.0]], dtype=dtype)
    data = encode_matrix(x, MatrixLayout(LAYOUT))
    (size,) = np.frombuffer(data[4:8], dtype="<u4")
    width = np.dtype(dtype).itemsize
    assert len(data) == 8 + size + 3 * 2 * width + 3 * 2  # two number columns, then two one-byte code columns
    cols = decode_columns(data)
    assert list(cols) == ["age", "has_card", "craft", "score"]
    rows = [batch_row(cols, i) for i in range(3)]
    assert rows == [
        {"age": 30.0, "has_card": True, "craft": "c", "score": 0.1},
        {},
        {"age": 41.5, "has_card": False, "craft": "a", "score": 7.0},
    ]
    assert cols["craft"]["codes"].tolist() == [2, -1, 0]
    assert cols["age"].dtype == dtype


def test_a_wide_dictionary_gets_wider_codes() -> None:
    from sahayak_rpc.store.batchcodec import MatrixLayout, encode_matrix

    many = tuple(f"c{i}" for i in range(300))
    x = np.array([[299.0], [NAN], [128.0]], dtype=np.float32)
    cols = decode_columns(encode_matrix(x, MatrixLayout([("kind", "category", many)])))
    assert cols["kind"]["codes"].tolist() == [299, -1, 128]


def test_a_matrix_batch_logged_before_the_split_form_still_decodes() -> None:
    """The earlier form: the whole float32 matrix, a category as its index (NaN = missing)."""
    import struct

    x = np.array([[30.0, 1.0, 2.0, 0.1], [NAN, NAN, NAN, NAN]], dtype=np.float32)
    header = orjson.dumps(
        {
            "n": 2,
            "matrix": {
                "dtype": "f4",
                "columns": [
                    {"name": n, "kind": k, **({"dictionary": list(d)} if k == "category" else {})} for n, k, d in LAYOUT
                ],
            },
        }
    )
    data = b"SBC1" + struct.pack("<I", len(header)) + header + x.tobytes()
    cols = decode_columns(data)
    assert [batch_row(cols, i) for i in range(2)] == [{"age": 30.0, "has_card": True, "craft": "c", "score": 0.1}, {}]


def test_a_truncated_split_batch_is_a_clear_error() -> None:
    from sahayak_rpc.store.batchcodec import MatrixLayout, encode_matrix

    data = encode_matrix(np.zeros((4, 4), dtype=np.float32), MatrixLayout(LAYOUT))
    with pytest.raises(BatchFormatError, match="bytes of data"):
        decode_columns(data[:-3])
