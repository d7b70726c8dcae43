"""Filter: keep the rows of each batch for which a boolean expression is true.

``Filter(where, input_schema)`` compiles ``where`` once (``ring0.expr``; it must
type to bool, else ``ExpressionError``). ``process`` evaluates it and keeps the
rows where it is true; false *and null* drop the row (SQL ``WHERE``). Output
batches have exactly ``input_schema``; a batch with no rows left is not
emitted, one whose rows all pass is returned as is (sharing the input's
buffers: the worker must write it out before it releases the input). Stateless.
"""

from __future__ import annotations

import pyarrow as pa

from engine.errors import ExpressionError
from ring0.expr import compile_expr
from ring0.operators.base import Operator


class Filter(Operator):
    def __init__(self, where: str, input_schema: pa.Schema) -> None:
        self.where = compile_expr(where, input_schema)
        if self.where.type not in (pa.bool_(), pa.null()):
            raise ExpressionError(
                f"expression {where!r} at 0: a filter condition must be bool, got {self.where.type}"
            )
        self._schema = input_schema
        const = self.where.constant
        # None: evaluate per batch; True/False: a constant condition (null counts as false).
        self._always: bool | None = None if const is None else bool(const.as_py())

    @property
    def output_schema(self) -> pa.Schema:
        return self._schema

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        if batch.num_rows == 0 or self._always is False:
            return []
        if self._always:
            return [batch]
        mask = self.where.evaluate(batch)
        kept = mask.true_count
        if kept == batch.num_rows:
            return [batch]
        if kept == 0:
            return []
        return [batch.filter(mask)]  # null_selection_behavior="drop": null drops the row

    def __repr__(self) -> str:
        return f"Filter({self.where.text!r})"
