"""Grouping keys of the keyed operators: checked against the input, as internal columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import pyarrow as pa

from engine.errors import ConfigError
from engine.typenames import KEY_TYPES, is_key_type


class Plan(Protocol):
    """What ``rows_table`` needs of an aggregate plan: input column -> internal name, and the
    column's values (an input column, or an aggregate's expression)."""

    inputs: Mapping[str, str]

    def column(self, batch: pa.RecordBatch, column: str) -> pa.Array: ...


def check_keys(key: Sequence[str], schema: pa.Schema) -> None:
    """Key columns exist and have a key type (raises ConfigError naming the column)."""
    for col in key:
        if schema.get_field_index(col) < 0:
            raise ConfigError(f"column {col!r} is not in the input (columns: {schema.names})")
        t = schema.field(col).type
        if not is_key_type(t):
            raise ConfigError(f"key column {col!r} has type {t}; keys are {KEY_TYPES}")


def key_fields(key: Sequence[str], schema: pa.Schema) -> list[pa.Field]:
    """The internal key columns of a partial table: ``__k<i>``, or a constant int8 ``__k``
    when there is no key (so every group-by has a column to group on)."""
    if not key:
        return [pa.field("__k", pa.int8())]
    return [pa.field(f"__k{i}", value_type(schema.field(col).type)) for i, col in enumerate(key)]


def value_type(t: pa.DataType) -> pa.DataType:
    """A key's type in state and output: a dictionary-encoded key as its values' type (each
    batch may bring its own dictionary; grouping across batches needs the values)."""
    return t.value_type if pa.types.is_dictionary(t) else t


def key_output_field(f: pa.Field) -> pa.Field:
    """A key column as the operator outputs it (dictionary keys come out decoded)."""
    return f.with_type(value_type(f.type))


def key_column(batch: pa.RecordBatch, col: str) -> pa.Array:
    arr = batch.column(col)
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def rows_table(batch: pa.RecordBatch, key: Sequence[str], plan: Plan) -> pa.Table:
    """``batch`` as the internal columns ``Plan.partial`` reads: keys, then the value columns
    (zero-copy but for the constant key)."""
    arrays = [key_column(batch, col) for col in key]
    names = [f"__k{i}" for i in range(len(key))]
    if not key:
        arrays, names = [pa.array(np.zeros(batch.num_rows, dtype=np.int8))], ["__k"]
    arrays += [plan.column(batch, col) for col in plan.inputs]
    return pa.Table.from_arrays(arrays, names=names + list(plan.inputs.values()))


def result_schema(fields: list[pa.Field]) -> pa.Schema:
    """The output schema of a keyed aggregation; a name used twice is a ``ConfigError``."""
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"output column names {dup} occur twice; rename with 'as'")
    return pa.schema([pa.field(f.name, f.type) for f in fields])
