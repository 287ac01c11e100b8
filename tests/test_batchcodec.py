"""The stored form of logged prediction batches (store/batchcodec.py), and rows from before it."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from sahayak_rpc.schema import Column
from sahayak_rpc.store import Database, PredictionRepository
from sahayak_rpc.store.batchcodec import (BatchFormatError, decode_columns, decode_probabilities, encode_columns,
                                          encode_probabilities, value_at)
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
        conn.execute("INSERT INTO models (name, schema_json, settings_json, created_us, updated_us)"
                     " VALUES ('m', '{}', '{}', 0, 0)")
        conn.execute("INSERT INTO prediction_batches (batch_id, model_id, version, row_count, columns_data,"
                     " probabilities_data, threshold, created_us, source) VALUES ('b1', 1, 1, 2, ?, ?, 0.5, 7, 'served')",
                     (orjson.dumps({"age": [30.0, 41.0]}).decode(), "[0.25, 0.75]"))
    got = PredictionRepository(db).get("b1:1")
    assert got is not None and orjson.loads(got[3]) == {"age": 41.0} and got[4] == 0.75 and got[5] == 1
    db.close()


def test_a_matrix_batch_is_stored_whole_and_read_back_as_columns() -> None:
    from sahayak_rpc.store.batchcodec import encode_matrix

    x = np.array([[30.0, 1.0, 2.0], [NAN, NAN, NAN], [41.5, 0.0, 0.0]], dtype=np.float32)
    data = encode_matrix(x, [("age", "number", ()), ("has_card", "bool", ()), ("craft", "category", ("a", "b", "c"))])
    assert len(data) == 8 + len(data[8:].split(b"}]}}", 1)[0]) + 4 + 9 * 4  # header, then 9 float32 values
    cols = decode_columns(data)
    assert [batch_row(cols, i) for i in range(3)] == [
        {"age": 30.0, "has_card": True, "craft": "c"}, {}, {"age": 41.5, "has_card": False, "craft": "a"}]
    assert cols["craft"]["codes"].tolist() == [2, -1, 0]
