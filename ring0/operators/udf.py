"""UserFunction: a Python function over whole batches, with its output schema checked.

``UserFunction(function, input_schema, output_schema=None)``: ``function`` is a
callable or a ``"package.module:callable"`` string (``module:Class.attr`` also
works), imported once; an import failure or a non-callable is a ``ConfigError``
naming the string. The function is called as ``function(batch)`` with one
``pa.RecordBatch`` of ``input_schema`` and returns a ``RecordBatch``, a
``Table`` (possibly several chunks) or ``None`` (no output).

``output_schema=None`` infers it once, at construction, by calling the function
on an empty batch of ``input_schema`` (it must return a batch or table there).
Every output is checked against ``output_schema`` by column names and types: a
mismatch, or a return value of another kind, is a ``SchemaMismatchError``
naming the function and both schemas. Field nullability and metadata are not
compared; outputs are relabelled with ``output_schema`` so every batch has it
exactly. Empty outputs are dropped. Stateless as far as the engine knows: a
function that keeps state of its own loses it on restore.

Not guaranteed: the function may be called with batches of any size (not
empty ones), in any grouping; it must not keep references to a batch past the
call (the batch may live in ring memory, released after it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from engine.errors import ConfigError, SchemaMismatchError
from engine.importing import load_object
from ring0.operators.base import Operator

BatchFunction = Callable[[pa.RecordBatch], Any]


class UserFunction(Operator):
    def __init__(
        self,
        function: str | BatchFunction,
        input_schema: pa.Schema,
        output_schema: pa.Schema | None = None,
    ) -> None:
        if isinstance(function, str):
            self.name = function
            self.function = load(function)
        elif callable(function):
            self.function = function
            module = getattr(function, "__module__", None) or "?"
            qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
            self.name = f"{module}:{qualname}"
        else:
            raise ConfigError(
                f"a user function must be a callable or 'module:callable', got {function!r}"
            )
        self.input_schema = input_schema
        if output_schema is None:
            output_schema = self._infer()
        elif not isinstance(output_schema, pa.Schema):
            raise ConfigError(
                f"output_schema of {self.name} must be a pyarrow Schema, got {output_schema!r}"
            )
        self._schema = output_schema
        self._signature = _signature(output_schema)

    def _infer(self) -> pa.Schema:
        empty = pa.RecordBatch.from_pylist([], schema=self.input_schema)
        try:
            out = self.function(empty)
        except Exception as e:
            raise ConfigError(
                f"user function {self.name} failed on an empty batch, called to infer its "
                f"output schema (pass output_schema to skip this): {e!r}"
            ) from e
        if not isinstance(out, pa.RecordBatch | pa.Table):
            raise ConfigError(
                f"user function {self.name} returned {type(out).__name__} on an empty batch; "
                f"it must return a RecordBatch or Table there to infer its output schema "
                f"(or pass output_schema)"
            )
        return out.schema

    @property
    def output_schema(self) -> pa.Schema:
        return self._schema

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        if batch.num_rows == 0:
            return []
        out = self.function(batch)
        if out is None:
            return []
        if isinstance(out, pa.RecordBatch):
            batches = [out]
        elif isinstance(out, pa.Table):
            batches = out.to_batches()
        else:
            raise SchemaMismatchError(
                f"user function {self.name} returned {type(out).__name__}; expected a "
                f"RecordBatch, a Table or None with schema {_show(self._schema)}"
            )
        if _signature(out.schema) != self._signature:
            raise SchemaMismatchError(
                f"user function {self.name} returned schema {_show(out.schema)}; expected "
                f"{_show(self._schema)}"
            )
        relabel = not out.schema.equals(self._schema, check_metadata=True)
        return [
            pa.RecordBatch.from_arrays(b.columns, schema=self._schema) if relabel else b
            for b in batches
            if b.num_rows
        ]

    def __repr__(self) -> str:
        return f"UserFunction({self.name})"


def load(spec: str) -> BatchFunction:
    """Import ``"package.module:callable"`` (the attribute may be dotted)."""
    target = load_object(spec, f"user function {spec!r}", form="package.module:callable")
    if not callable(target):
        raise ConfigError(
            f"user function {spec!r} is not callable: {type(target).__name__} {target!r}"
        )
    fn: BatchFunction = target
    return fn


def _signature(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


def _show(schema: pa.Schema) -> str:
    return "(" + ", ".join(f"{f.name}: {f.type}" for f in schema) + ")"
