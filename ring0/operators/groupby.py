"""Running (non-windowed) keyed aggregation: a changelog per batch, or final values at the end.

``GroupByAggregate(key, aggregates, input_schema, emit)`` keeps one row of partial aggregates
per key (``ring0.operators.aggregates``) for the whole stream; event time and watermarks play no
part (``on_watermark`` returns nothing, no row is ever late).

* emit="update" (default): after each ``process`` a changelog (``ring0.operators.changelog``):
  for every key the batch touched, a ``-1`` row with its previous values (if emitted before)
  and a ``+1`` row with the new ones. ``finish`` emits nothing more.
* emit="close": ``process`` emits nothing; ``finish`` emits one row per key with its final
  values, once.

Output columns: the key columns, one per aggregate (then ``_change`` int8 in update mode).
``key`` may be ``[]``: one global group. Costs: one ``group_by`` over each batch; update mode
then merges into the whole state (time linear in the number of keys), close mode every 16
batches. ``snapshot``/``restore`` as every operator (``ring0.operators.base``).

A changelog input — the input schema has a ``_change`` column (a signed integer: +1 a row
inserted, -1 a row retracted; an update is a -1 row of the old values and a +1 row of the
new) — is aggregated as the table it describes (``ring0.operators.weighted``):

* ``count`` is the sum of ``_change``, ``count(x)`` that sum over rows where ``x`` is not
  null, ``sum(x)`` the sum of ``x * _change`` (``sum(price * qty)`` alike; of decimals, ``x``
  with its sign flipped where ``_change`` is -1, so every ``_change`` must be +1 or -1, else
  ``DataError``), ``avg(x)`` the one over the other; a ``sum``/``avg`` with no non-null value
  left is null.
* ``min``, ``max``, ``count_distinct``, ``max_by``, ``min_by`` cannot forget a retracted
  value: ``ConfigError`` when the operator is built, as for ``_change`` as a key or inside
  an aggregate.
* each group keeps its row count (the partial ``__n``, output only as ``count``). When it
  reaches 0 the group leaves the state: emit="update" emits only its ``-1`` row (the values
  emitted before), emit="close" does not emit it at finish; a group that comes back later is
  new (``+1`` only). With ``key=[]`` the one group too disappears (SQL's global aggregate
  would give a row of count 0).
* the input's ``_change`` is never an output column (update mode appends its own, last).

An input without ``_change`` counts every row once.

Not guaranteed: row order; float sums depend on merge order (which restore preserves); for a
changelog, that the input is consistent: a retraction of a row never inserted is subtracted
all the same (a count can go below 0 and is emitted so), a ``_change`` other than +-1 counts
as that many rows (with a decimal ``sum``/``avg``: ``DataError``), and a retracted float is
subtracted (rounding error stays in the sum).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from engine.errors import ConfigError, StateError
from ring0.operators.aggregate_spec import AggregateSpec
from ring0.operators.aggregates import Plan
from ring0.operators.base import Operator
from ring0.operators.changelog import CHANGE, changes, fold, nonempty
from ring0.operators.keys import (
    check_keys,
    key_fields,
    key_output_field,
    result_schema,
    rows_table,
)

_COMPACT_AFTER = 16
_FORMAT = b"ringstream.groupby/1"  # metadata "input": b"changelog" or b"rows" (absent: rows)


class GroupByAggregate(Operator):
    """Aggregates per key over the whole stream; see the module docstring for the contract."""

    def __init__(
        self,
        key: list[str],
        aggregates: Sequence[AggregateSpec],
        input_schema: pa.Schema,
        emit: str = "update",
    ) -> None:
        if emit not in ("close", "update"):
            raise ConfigError(f"emit={emit!r} must be 'close' or 'update'")
        check_keys(key, input_schema)
        weight = CHANGE.name if CHANGE.name in input_schema.names else None
        if weight in key:
            raise ConfigError(
                f"key column {weight!r} is the change (+1/-1) of a changelog input, "
                "not a value to group by"
            )
        self.key, self.emit, self.input_schema = list(key), emit, input_schema
        self.plan = Plan(aggregates, input_schema, weight)
        self._input_kind = b"changelog" if self.plan.weighted else b"rows"
        self._key_fields = key_fields(self.key, input_schema)
        self.keys = [f.name for f in self._key_fields]
        fields = [key_output_field(input_schema.field(k)) for k in self.key]
        fields += self.plan.output_fields
        self._result_schema = result_schema(fields)
        if emit == "update":
            result_schema([*fields, CHANGE])  # no output column named _change
        self._out = self._result_schema.append(CHANGE) if emit == "update" else self._result_schema
        self._schema = pa.schema(self._key_fields + self.plan.partial_fields())
        self._parts: list[pa.Table] = []  # update: one merged table; close: partials
        self._finished = False

    @property
    def output_schema(self) -> pa.Schema:
        return self._out

    @property
    def groups(self) -> int:
        """Groups held (exact in update mode; an upper bound in close mode between merges)."""
        return sum(p.num_rows for p in self._parts)

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        if batch.num_rows == 0:
            return []
        part = self.plan.partial(rows_table(batch, self.key, self.plan), self.keys)
        if self.emit == "close":
            self._parts.append(part)
            if len(self._parts) >= _COMPACT_AFTER:
                self._parts = [self._merged()]
            return []
        state = self._parts[0] if self._parts else None
        merged, before, after = fold(self.plan, state, part, self.keys, self.plan.weighted)
        self._parts = [merged]
        return changes(self._results(before), self._results(after), self._out)

    def finish(self) -> list[pa.RecordBatch]:
        if self.emit == "update" or self._finished or not self._parts:
            return []
        self._finished = True
        result = self._results(self._merged())
        self._parts = []
        return result.combine_chunks().to_batches() if result and result.num_rows else []

    def _merged(self) -> pa.Table:
        merged = self.plan.merge(pa.concat_tables(self._parts), self.keys)[0]
        return nonempty(merged) if self.plan.weighted else merged

    def _results(self, groups: pa.Table | None) -> pa.Table | None:
        if groups is None:
            return None
        values = self.plan.finalize(groups)
        arrays = [groups.column(k) for k in self.keys[: len(self.key)]]
        arrays += [values[f.name] for f in self.plan.output_fields]
        return pa.Table.from_arrays(arrays, schema=self._result_schema)

    def snapshot(self) -> dict[str, pa.Table]:
        schema = self._schema.append(pa.field("__part", pa.int32()))
        tables = [
            p.append_column("__part", pa.array(np.full(p.num_rows, i, dtype=np.int32)))
            for i, p in enumerate(self._parts)
        ]
        state = pa.concat_tables(tables) if tables else schema.empty_table()
        meta = {
            "format": _FORMAT,
            "finished": b"1" if self._finished else b"0",
            "input": self._input_kind,
        }
        return {"groups": state.replace_schema_metadata(meta)}

    def restore(self, state: dict[str, pa.Table]) -> None:
        table = state.get("groups")
        schema = self._schema.append(pa.field("__part", pa.int32()))
        meta = (table.schema.metadata or {}) if table is not None else {}
        if set(state) != {"groups"} or table is None or meta.get(b"format") != _FORMAT:
            raise StateError(f"group-by state has tables {sorted(state)}, expected ['groups']")
        saved = meta.get(b"input", b"rows")
        if saved != self._input_kind:
            raise StateError(
                f"group-by state was saved with input={saved.decode()}, this operator's input "
                f"is {self._input_kind.decode()} (a state saved before _change weighted the "
                "rows counted retractions as rows): restart without that state"
            )
        if not table.schema.remove_metadata().equals(schema):
            raise StateError(f"group-by state has schema {table.schema}, expected {schema}")
        self._finished = meta.get(b"finished") == b"1"
        table = table.replace_schema_metadata(None)
        parts = table.column("__part").to_numpy()
        cuts = [0, *(np.flatnonzero(parts[1:] != parts[:-1]) + 1).tolist(), len(parts)]
        self._parts = [
            table.slice(lo, hi - lo).drop_columns("__part")
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
            if hi > lo
        ]
