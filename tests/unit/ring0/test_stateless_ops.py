"""Filter, Project and UserFunction: output rows, output_schema, errors, stateless snapshots."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.errors import ConfigError, ExpressionError, SchemaMismatchError
from ring0.operators.base import Operator
from ring0.operators.filter import Filter
from ring0.operators.project import Project
from ring0.operators.udf import UserFunction

SCHEMA = pa.schema(
    [
        pa.field("auction", pa.int64(), nullable=False, metadata={"unit": "id"}),
        ("bidder", pa.int64()),
        ("price", pa.float64()),
        ("channel", pa.string()),
    ]
)
BATCH = pa.record_batch(
    [
        pa.array([1, 2, 3, 4, 5]),
        pa.array([10, None, 30, 40, 50]),
        pa.array([50.0, 150.0, None, 250.0, 99.0]),
        pa.array(["web", "app", "web", None, "app"]),
    ],
    schema=SCHEMA,
)


def rows(batches: list[pa.RecordBatch]) -> list[dict[str, object]]:
    return pa.Table.from_batches(batches).to_pylist() if batches else []


# -- Filter ----------------------------------------------------------------------------------
def test_filter_keeps_true_rows_drops_false_and_null() -> None:
    op = Filter("price > 100", SCHEMA)
    out = op.process(BATCH)
    assert [r["auction"] for r in rows(out)] == [2, 4]  # row 3 (null price) dropped
    assert all(b.schema == SCHEMA for b in out)
    assert op.output_schema == SCHEMA


def test_filter_kleene_condition_drops_unknown_rows() -> None:
    op = Filter("channel = 'web' or price > 100", SCHEMA)
    assert [r["auction"] for r in rows(op.process(BATCH))] == [1, 2, 3, 4]
    op = Filter("not (channel = 'web')", SCHEMA)
    assert [r["auction"] for r in rows(op.process(BATCH))] == [2, 5]


def test_filter_no_rows_left_emits_nothing() -> None:
    assert Filter("price > 1000", SCHEMA).process(BATCH) == []
    assert Filter("price > 0", SCHEMA).process(BATCH.slice(0, 0)) == []


def test_filter_all_rows_pass_returns_batch_unchanged() -> None:
    out = Filter("auction > 0", SCHEMA).process(BATCH)
    assert len(out) == 1 and out[0] is BATCH


def test_filter_constant_condition_needs_no_evaluation() -> None:
    assert Filter("true", SCHEMA).process(BATCH) == [BATCH]
    assert Filter("1 = 2", SCHEMA).process(BATCH) == []
    assert Filter("null", SCHEMA).process(BATCH) == []


def test_filter_non_bool_condition_is_expression_error() -> None:
    with pytest.raises(
        ExpressionError,
        match=r"expression 'price \* 2' at 0: a filter "
        r"condition must be bool, got double",
    ):
        Filter("price * 2", SCHEMA)
    with pytest.raises(ExpressionError, match="unknown column 'prize'"):
        Filter("prize > 1", SCHEMA)


def test_filter_is_stateless_operator() -> None:
    op = Filter("price > 100", SCHEMA)
    assert isinstance(op, Operator) and op.inputs == 1
    assert op.snapshot() == {}
    op.restore({})
    with pytest.raises(ValueError, match="stateless"):
        op.restore({"x": pa.table({"a": [1]})})
    assert op.on_watermark(10) == [] and op.finish() == []


def test_filter_64k_rows_matches_pyarrow_mask() -> None:
    n = 65_536
    batch = pa.record_batch(
        [
            pa.array(range(n)),
            pa.array([None] * n, pa.int64()),
            pa.array([float(i % 300) for i in range(n)]),
            pa.array(["x"] * n),
        ],
        schema=SCHEMA,
    )
    out = Filter("price > 100 and auction % 123 = 0", SCHEMA).process(batch)
    expected = [i for i in range(n) if i % 300 > 100 and i % 123 == 0]
    assert pa.Table.from_batches(out).column("auction").to_pylist() == expected


# -- Project ---------------------------------------------------------------------------------
def test_project_computes_columns_in_dict_order() -> None:
    op = Project({"id": "auction", "net": "price * 0.9", "web": "channel = 'web'"}, SCHEMA)
    assert op.output_schema.names == ["id", "net", "web"]
    assert op.output_schema.field("net").type == pa.float64()
    assert op.output_schema.field("web").type == pa.bool_()
    (out,) = op.process(BATCH)
    assert out.schema == op.output_schema
    net = out.column("net").to_pylist()
    assert [None if v is None else round(v, 9) for v in net] == [45.0, 135.0, None, 225.0, 89.1]
    assert out.column("web").to_pylist() == [True, False, True, None, False]


def test_project_bare_column_keeps_input_field_under_new_name() -> None:
    op = Project({"id": "auction", "a2": "auction + 0"}, SCHEMA)
    field = op.output_schema.field("id")
    assert field.nullable is False and field.metadata == {b"unit": b"id"}
    assert op.output_schema.field("a2").nullable is True
    (out,) = op.process(BATCH)
    assert out.column("id").to_pylist() == [1, 2, 3, 4, 5]


def test_project_constant_is_broadcast() -> None:
    (out,) = Project({"one": "1", "tag": "'x' || 'y'"}, SCHEMA).process(BATCH)
    assert out.column("one").to_pylist() == [1] * 5
    assert out.column("tag").to_pylist() == ["xy"] * 5


def test_project_from_list_names_items_like_sql() -> None:
    op = Project.from_list(["auction", "price * 2 as doubled", "upper(channel)"], SCHEMA)
    assert op.output_schema.names == ["auction", "doubled", "upper(channel)"]
    (out,) = op.process(BATCH)
    assert out.column("doubled").to_pylist() == [100.0, 300.0, None, 500.0, 198.0]
    assert out.column("upper(channel)").to_pylist() == ["WEB", "APP", "WEB", None, "APP"]


def test_project_from_list_repeated_name_is_config_error() -> None:
    with pytest.raises(ConfigError, match="output name 'auction' is used twice"):
        Project.from_list(["auction", "bidder as auction"], SCHEMA)


def test_project_bad_config_is_error() -> None:
    with pytest.raises(ConfigError, match="needs a mapping"):
        Project({}, SCHEMA)
    with pytest.raises(ConfigError, match="needs a list of select items"):
        Project.from_list("auction", SCHEMA)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError, match="expression 'price \\+ ' at 8: expected"):
        Project({"p": "price + "}, SCHEMA)


def test_project_empty_batch_emits_nothing_and_is_stateless() -> None:
    op = Project({"id": "auction"}, SCHEMA)
    assert op.process(BATCH.slice(0, 0)) == []
    assert op.snapshot() == {} and isinstance(op, Operator)


# -- UserFunction ----------------------------------------------------------------------------
OUT = pa.schema([("auction", pa.int64()), ("price_x2", pa.float64())])


def double_price(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.record_batch(
        [batch.column("auction"), pc.multiply(batch.column("price"), 2.0)], schema=OUT
    )


def split_in_two(batch: pa.RecordBatch) -> pa.Table:
    t = pa.Table.from_batches([batch])
    return pa.concat_tables([t.slice(0, 2), t.slice(2)])


def drop_everything(batch: pa.RecordBatch) -> None:
    return None


def wrong_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    if batch.num_rows == 0:
        return double_price(batch)
    return pa.record_batch([batch.column("auction")], names=["auction"])


def fails_on_empty(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.slice(0, 1).filter(pa.array([batch.column(0)[0].as_py() > 0]))


NOT_CALLABLE = 42


class Holder:
    @staticmethod
    def same(batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch


def test_udf_imported_by_string_runs_and_infers_schema() -> None:
    op = UserFunction("tests.unit.ring0.test_stateless_ops:double_price", SCHEMA)
    assert op.output_schema == OUT
    (out,) = op.process(BATCH)
    assert out.schema == OUT
    assert out.column("price_x2").to_pylist() == [100.0, 300.0, None, 500.0, 198.0]
    assert op.snapshot() == {} and isinstance(op, Operator)


def test_udf_callable_with_declared_schema() -> None:
    op = UserFunction(double_price, SCHEMA, OUT)
    assert op.output_schema == OUT and "double_price" in op.name
    assert rows(op.process(BATCH))[0] == {"auction": 1, "price_x2": 100.0}


def test_udf_dotted_attribute_and_table_output() -> None:
    op = UserFunction("tests.unit.ring0.test_stateless_ops:Holder.same", SCHEMA)
    assert op.process(BATCH) == [BATCH]
    out = UserFunction(split_in_two, SCHEMA).process(BATCH)
    assert [b.num_rows for b in out] == [2, 3] and all(b.schema == SCHEMA for b in out)


def test_udf_none_output_emits_nothing() -> None:
    op = UserFunction(drop_everything, SCHEMA, OUT)
    assert op.process(BATCH) == []


def test_udf_wrong_schema_is_schema_mismatch_naming_both() -> None:
    op = UserFunction(wrong_columns, SCHEMA)
    with pytest.raises(SchemaMismatchError) as info:
        op.process(BATCH)
    msg = str(info.value)
    assert "wrong_columns" in msg
    assert "returned schema (auction: int64)" in msg
    assert "expected (auction: int64, price_x2: double)" in msg


def test_udf_wrong_return_type_is_schema_mismatch() -> None:
    op = UserFunction(lambda b: 42, SCHEMA, OUT)
    with pytest.raises(SchemaMismatchError, match="returned int; expected a RecordBatch"):
        op.process(BATCH)


def test_udf_output_relabelled_to_declared_nullability() -> None:
    declared = pa.schema(
        [pa.field("auction", pa.int64(), nullable=False), ("price_x2", pa.float64())]
    )
    (out,) = UserFunction(double_price, SCHEMA, declared).process(BATCH)
    assert out.schema == declared and out.schema.field("auction").nullable is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("tests.unit.ring0.test_stateless_ops:nope", "has no attribute 'nope'"),
        ("tests.unit.ring0.test_stateless_ops:NOT_CALLABLE", "is not callable: int 42"),
        ("just_a_name", "must have the form 'package.module:callable'"),
    ],
)
def test_udf_bad_function_string_is_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        UserFunction(spec, SCHEMA)
    assert repr(spec) in str(info.value)


def test_udf_inference_failure_is_config_error() -> None:
    with pytest.raises(ConfigError, match="failed on an empty batch.*pass output_schema"):
        UserFunction(fails_on_empty, SCHEMA)
    with pytest.raises(ConfigError, match="returned NoneType on an empty batch"):
        UserFunction(drop_everything, SCHEMA)
    with pytest.raises(ConfigError, match="must be a callable"):
        UserFunction(42, SCHEMA)  # type: ignore[arg-type]
