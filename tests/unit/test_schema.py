"""Schema declaration and row validation (pure logic)."""

from __future__ import annotations

import math

import pytest

from sahayak_rpc.schema import (
    Column,
    FeatureSpec,
    FeatureType,
    LabelSpec,
    Schema,
    SchemaError,
    check_label,
    rows_from_columns,
    schema_from_dict,
    schema_to_dict,
)

from ..helpers import SMALL_FEATURES, SMALL_LABEL

SCHEMA = Schema(tuple(SMALL_FEATURES), SMALL_LABEL)


def fields(errors: list) -> set[str]:
    return {e.field for e in errors}


def test_a_valid_row_has_no_errors() -> None:
    assert SCHEMA.validate_row({"age": 30.0, "craft": "potter"}) == []


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"age": 30.0, "craft": "potter", "colour": "red"}, "features.colour", "unknown feature"),
        ({"age": "thirty", "craft": "potter"}, "features.age", "needs number_value"),
        ({"age": 30.0, "craft": 3.0}, "features.craft", "needs string_value"),
        ({"age": 30.0, "craft": "potter", "has_card": 1.0}, "features.has_card", "needs bool_value"),
        ({"craft": "potter"}, "features.age", "required"),
        ({"age": math.nan, "craft": "potter"}, "features.age", "finite"),
        ({"age": math.inf, "craft": "potter"}, "features.age", "finite"),
        ({"age": 17.0, "craft": "potter"}, "features.age", "below the minimum"),
        ({"age": 101.0, "craft": "potter"}, "features.age", "above the maximum"),
        ({"age": 30.0, "craft": "sculptor"}, "features.craft", "unknown category"),
        ({"age": True, "craft": "potter"}, "features.age", "needs number_value"),
    ],
)
def test_each_kind_of_bad_value_names_its_field(row: dict, field: str, words: str) -> None:
    errors = SCHEMA.validate_row(row)
    assert field in fields(errors)
    assert any(words in e.reason for e in errors if e.field == field)


def test_unknown_categories_pass_where_the_schema_allows_them() -> None:
    assert SCHEMA.validate_row({"age": 30.0, "craft": "potter", "region": "south"}) == []


def test_every_problem_is_reported_not_just_the_first() -> None:
    errors = SCHEMA.validate_row({"age": 10.0, "colour": "red"})
    assert fields(errors) == {"features.age", "features.colour", "features.craft"}


@pytest.mark.parametrize(
    ("features", "field"),
    [
        ((), "features"),
        ((FeatureSpec("Age (years)", FeatureType.NUMERIC),), "features[0].name"),
        ((FeatureSpec(" age", FeatureType.NUMERIC),), "features[0].name"),
        ((FeatureSpec("a", FeatureType.NUMERIC), FeatureSpec("a", FeatureType.BOOLEAN)), "features[1].name"),
        ((FeatureSpec("a", FeatureType.CATEGORICAL),), "features[0].categories"),
        ((FeatureSpec("a", FeatureType.NUMERIC, min=5, max=1),), "features[0].max"),
        ((FeatureSpec("a", FeatureType.BOOLEAN, min=0),), "features[0].min"),
        ((FeatureSpec("a", FeatureType.NUMERIC, categories=("x",)),), "features[0].categories"),
        ((FeatureSpec("a", FeatureType.CATEGORICAL, categories=("x", "x")),), "features[0].categories"),
    ],
)
def test_bad_declarations_are_refused_with_the_field(features: tuple, field: str) -> None:
    with pytest.raises(SchemaError) as info:
        Schema(features)
    assert field in fields(info.value.errors)


def test_names_look_like_csv_headers_and_pandas_columns() -> None:
    names = ("Seniority", "Monthly Income", "loan.amount", "is-member", "x_2", "2019")
    schema = Schema(tuple(FeatureSpec(n, FeatureType.NUMERIC) for n in names), LabelSpec("Approved"))
    assert [f.name for f in schema.features] == list(names)
    for bad in ("Age (years)", "a,b", " padded", "padded ", "é", "a" * 65, ""):
        with pytest.raises(SchemaError) as info:
            Schema((FeatureSpec(bad, FeatureType.NUMERIC),))
        assert fields(info.value.errors) == {"features[0].name"} and "letters, digits" in info.value.errors[0].reason
    assert check_label(LabelSpec("Approved")) == []
    assert fields(check_label(LabelSpec("approved?"))) == {"label.name"}


def test_schema_survives_a_round_trip_through_its_stored_form() -> None:
    again = schema_from_dict(schema_to_dict(SCHEMA))
    assert again == SCHEMA
    assert again.label == LabelSpec("outcome", "approved", "rejected")


def test_columns_become_rows_and_bad_values_reject_only_their_rows() -> None:
    nan = math.nan
    rows, errors = rows_from_columns(
        SCHEMA,
        4,
        [
            Column("age", numbers=[30.0, nan, 17.0, 50.0]),
            Column("craft", strings=["potter", "weaver", "", "sculptor"]),
            Column("has_card", numbers=[1.0, 0.0, nan, 2.0]),
        ],
    )
    assert rows[0] == {"age": 30.0, "craft": "potter", "has_card": True}
    assert rows[1] == {"craft": "weaver", "has_card": False}
    assert sorted(errors) == [1, 2, 3]
    assert errors[1].field == "features.age" and "required" in errors[1].reason
    assert errors[2].field in {"features.age", "features.craft"}
    assert errors[3].field in {"features.craft", "features.has_card"}


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        ([Column("colour", strings=["red"])], "unknown feature"),
        ([Column("age", numbers=[1.0, 2.0])], "2 values for 1 rows"),
        ([Column("age", strings=["30"])], "takes numbers"),
        ([Column("craft", numbers=[1.0])], "takes strings"),
    ],
)
def test_a_column_that_fits_no_row_is_a_structural_error(columns: list, words: str) -> None:
    with pytest.raises(SchemaError) as info:
        rows_from_columns(SCHEMA, 1, columns)
    assert any(words in e.reason for e in info.value.errors)


def test_columns_and_rows_agree_on_what_is_valid() -> None:
    row_wise = [{"age": 30.0, "craft": "potter"}, {"age": 99.5, "craft": "carpenter", "income": 5.0}]
    rows, errors = rows_from_columns(
        SCHEMA,
        2,
        [
            Column("age", numbers=[30.0, 99.5]),
            Column("craft", strings=["potter", "carpenter"]),
            Column("income", numbers=[math.nan, 5.0]),
        ],
    )
    assert errors == {}
    assert rows == row_wise
    assert all(SCHEMA.validate_row(r) == [] for r in rows)


def test_dictionary_encoded_columns_check_and_decode_like_strings() -> None:
    import numpy as np

    codes = Column("craft", codes=np.array([0, -1, 1, 2]), dictionary=["potter", "sculptor", "weaver"])
    rows, errors = rows_from_columns(SCHEMA, 4, [Column("age", numbers=[30.0, 31.0, 32.0, 33.0]), codes])
    assert [r.get("craft") for r in rows] == ["potter", None, "sculptor", "weaver"]
    assert sorted(errors) == [1, 2]
    assert "required" in errors[1].reason and "unknown category 'sculptor'" in errors[2].reason
    as_strings = Column("craft", strings=["potter", "", "sculptor", "weaver"])
    rows2, errors2 = rows_from_columns(SCHEMA, 4, [Column("age", numbers=[30.0, 31.0, 32.0, 33.0]), as_strings])
    assert rows2 == rows and errors2 == errors


@pytest.mark.parametrize(
    ("column", "words"),
    [
        (Column("craft", codes=[0, 5], dictionary=["potter"]), "index the 1-entry dictionary"),
        (Column("craft", codes=[0], dictionary=["potter", "potter"]), "duplicate entry"),
        (Column("craft", codes=[0], dictionary=["potter"], strings=["potter"]), "both strings and codes"),
        (Column("craft", codes=[0, 0, 0], dictionary=["potter"]), "3 codes for 2 rows"),
    ],
)
def test_bad_dictionary_columns_are_structural_errors(column: Column, words: str) -> None:
    import numpy as np

    column = Column(column.name, strings=column.strings, codes=np.array(column.codes), dictionary=column.dictionary)
    with pytest.raises(SchemaError) as info:
        rows_from_columns(SCHEMA, 2, [Column("age", numbers=[30.0, 31.0]), column])
    assert any(words in e.reason for e in info.value.errors)


def test_columns_to_rows_can_take_only_some_rows_in_a_given_order() -> None:
    import numpy as np

    from sahayak_rpc.schema import columns_to_rows

    nan = math.nan
    columns = [
        Column("age", numbers=np.array([30.0, nan, 40.0, 50.0])),
        Column("craft", codes=np.array([0, 1, -1, 0]), dictionary=["potter", "weaver"]),
        Column("has_card", numbers=np.array([1.0, 0.0, nan, 1.0])),
    ]
    every = columns_to_rows(SCHEMA, 4, columns)
    assert every[1] == {"craft": "weaver", "has_card": False}
    assert columns_to_rows(SCHEMA, 4, columns, [3, 1]) == [every[3], every[1]]
    assert columns_to_rows(SCHEMA, 4, columns, []) == []
