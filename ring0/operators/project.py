"""Project: compute the output columns of each batch from expressions over the input.

``Project(columns, input_schema)`` maps output names to expressions (``ring0.expr``),
in dict order; each is compiled once. ``Project.from_list(["a", "x * 2 as y"],
schema)`` is the same from SQL-style select items (``EXPR [AS NAME]``; without a
name: the column's own name, or the expression's text). Output field types are
the expressions' types; a bare column reference keeps its input field
(nullability, metadata) under the new name. Output columns may share buffers
with the input batch (a bare column is not copied). Empty input batches are
dropped. Stateless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa

from engine.errors import ConfigError
from ring0.expr import Expr, compile_expr, split_alias
from ring0.operators.base import Operator


class Project(Operator):
    def __init__(self, columns: Mapping[str, str], input_schema: pa.Schema) -> None:
        if not isinstance(columns, Mapping) or not columns:
            raise ConfigError(
                f"a projection needs a mapping of output name to expression, got {columns!r}"
            )
        self.exprs: dict[str, Expr] = {}
        fields = []
        for name, text in columns.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"projection output name {name!r} must be a non-empty string")
            expr = self.exprs[name] = compile_expr(text, input_schema)
            ref = expr.column_ref
            fields.append(
                input_schema.field(ref).with_name(name)
                if ref is not None
                else pa.field(name, expr.type)
            )
        self._schema = pa.schema(fields)
        self._evaluators = [e.evaluate for e in self.exprs.values()]

    @classmethod
    def from_list(cls, items: Sequence[str], input_schema: pa.Schema) -> Project:
        """Build from select items ``EXPR [AS NAME]``; a repeated output name is a ConfigError."""
        if isinstance(items, str) or not items:
            raise ConfigError(f"a projection needs a list of select items, got {items!r}")
        columns: dict[str, str] = {}
        for item in items:
            text, name = split_alias(item)
            if name in columns:
                raise ConfigError(
                    f"projection output name {name!r} is used twice "
                    f"({columns[name]!r} and {item!r})"
                )
            columns[name] = text
        return cls(columns, input_schema)

    @property
    def output_schema(self) -> pa.Schema:
        return self._schema

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        if batch.num_rows == 0:
            return []
        arrays = [evaluate(batch) for evaluate in self._evaluators]
        return [pa.RecordBatch.from_arrays(arrays, schema=self._schema)]

    def __repr__(self) -> str:
        items = ", ".join(f"{e.text} as {n}" for n, e in self.exprs.items())
        return f"Project({items})"
