"""The window operator: assigns rows to windows, counts what it drops, snapshots its state.

See the package docstring (``ring0.operators.window``) for the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError, StateError
from engine.timeunits import to_ms
from ring0.operators.aggregate_spec import AggregateSpec
from ring0.operators.aggregates import Plan
from ring0.operators.base import Operator
from ring0.operators.changelog import CHANGE, changes
from ring0.operators.keys import (
    check_keys,
    key_fields,
    key_output_field,
    result_schema,
    rows_table,
)
from ring0.operators.window.sessions import Sessions
from ring0.operators.window.slots import Slots
from ring0.operators.window.tables import NONE, checked

MAX_DURATION_MS = 2**61  # sizes, slides, gaps, lateness: in-range times + this never overflow
TYPES = ("tumbling", "hopping", "session", "input")
_FORMAT = b"ringstream.window/1"


@dataclass(frozen=True)
class WindowSpec:
    """Which windows: tumbling(size_ms), hopping(size_ms, slide_ms), session(gap_ms), input."""

    type: str
    size_ms: int = 0
    slide_ms: int = 0
    gap_ms: int = 0

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ConfigError(f"window type {self.type!r} is not one of {list(TYPES)}")
        if self.type in ("tumbling", "hopping") and self.size_ms <= 0:
            raise ConfigError(f"{self.type} window size_ms={self.size_ms} must be > 0")
        if self.type == "hopping" and (self.slide_ms <= 0 or self.size_ms % self.slide_ms):
            raise ConfigError(
                f"hopping window size_ms={self.size_ms} must be a multiple of "
                f"slide_ms={self.slide_ms} (> 0)"
            )
        if self.type == "session" and self.gap_ms <= 0:
            raise ConfigError(f"session window gap_ms={self.gap_ms} must be > 0")
        for name in ("size_ms", "slide_ms", "gap_ms"):
            if getattr(self, name) > MAX_DURATION_MS:
                raise ConfigError(f"window {name}={getattr(self, name)} must be <= 2**61")


class WindowAggregate(Operator):
    """Aggregates per (window, key); see the module docstring for the contract."""

    def __init__(
        self,
        key: list[str],
        time: str,
        window: WindowSpec,
        aggregates: Sequence[AggregateSpec],
        input_schema: pa.Schema,
        emit: str = "close",
        allowed_lateness_ms: int = 0,
        keep_late: bool = False,
    ) -> None:
        if emit not in ("close", "update"):
            raise ConfigError(f"emit={emit!r} must be 'close' or 'update'")
        if allowed_lateness_ms < 0:
            raise ConfigError(f"allowed_lateness_ms={allowed_lateness_ms} must be >= 0")
        if allowed_lateness_ms > MAX_DURATION_MS:
            raise ConfigError(f"allowed_lateness_ms={allowed_lateness_ms} must be <= 2**61")
        self.window, self.emit, self.lateness = window, emit, allowed_lateness_ms
        self.keep_late, self.input_schema, self.time = keep_late, input_schema, time
        self.key = list(key)
        bounds = ["window_start", "window_end"] if window.type == "input" else [time]
        check_keys(self.key, input_schema)
        for col in [time, *bounds]:
            if input_schema.get_field_index(col) < 0:
                raise ConfigError(
                    f"column {col!r} is not in the input (columns: {input_schema.names})"
                )
        for col in bounds:
            t = input_schema.field(col).type
            if not (pa.types.is_integer(t) or pa.types.is_timestamp(t)):
                raise ConfigError(
                    f"event-time column {col!r} must be an integer (ms) or a timestamp, got {t}"
                )
        self.plan = Plan(aggregates, input_schema)
        if window.type == "input":
            self.bound_types = [input_schema.field(c).type for c in bounds]
        else:
            t = input_schema.field(time).type
            bt = pa.timestamp("ms", t.tz) if pa.types.is_timestamp(t) else pa.int64()
            self.bound_types = [bt, bt]
        self._time_col = bounds[-1]
        self.key_fields = key_fields(self.key, input_schema)
        self.keys = [f.name for f in self.key_fields]
        fields = [
            pa.field("window_start", self.bound_types[0]),
            pa.field("window_end", self.bound_types[1]),
            *(key_output_field(input_schema.field(k)) for k in self.key),
            *self.plan.output_fields,
        ]
        self._result_schema = result_schema(fields)
        self._out = self._result_schema.append(CHANGE) if emit == "update" else self._result_schema
        self.watermark = NONE
        self.late_rows = 0
        self.null_time_rows = 0
        self.out_of_range_rows = 0
        self._late: list[pa.RecordBatch] = []
        self._impl: Slots | Sessions = (
            Sessions(self) if window.type == "session" else Slots(self)
        )

    @property
    def output_schema(self) -> pa.Schema:
        return self._out

    @property
    def open_windows(self) -> int:
        """Open panes (tumbling, hopping), windows (input) or sessions."""
        return self._impl.open_count()

    # -- the Operator calls --------------------------------------------------------------------

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        cols = ["window_start", "window_end"] if self.window.type == "input" else [self.time]
        nulls = sum(batch.column(c).null_count for c in cols)
        if nulls:
            valid = pc.is_valid(batch.column(cols[0]))
            for c in cols[1:]:
                valid = pc.and_(valid, pc.is_valid(batch.column(c)))
            batch = batch.filter(valid)
            self.null_time_rows += len(valid) - batch.num_rows
        if batch.num_rows == 0:
            return []
        t, in_range = to_ms(batch.column(self._time_col))
        if in_range is not None:
            self.out_of_range_rows += int(np.count_nonzero(~in_range))
            batch, t = batch.filter(pa.array(in_range)), t[in_range]
            if batch.num_rows == 0:
                return []
        table, reach = self._impl.assign(rows_table(batch, self.key, self.plan), batch, t)
        if self.watermark != NONE and int(reach.min()) + self.lateness <= self.watermark:
            late = reach + self.lateness <= self.watermark
            if late.any():
                self._drop(batch, late)
                keep = pa.array(~late)
                batch, table = batch.filter(keep), table.filter(keep)
                if table.num_rows == 0:
                    return []
        out, late = self._impl.process(table)
        if late is not None:
            self._drop(batch, late)
        return out

    def on_watermark(self, watermark: int) -> list[pa.RecordBatch]:
        if watermark <= self.watermark:
            return []
        before, self.watermark = self.watermark, watermark
        return self._impl.close(before, watermark)

    def finish(self) -> list[pa.RecordBatch]:
        return self._impl.finish()

    def take_late(self) -> list[pa.RecordBatch]:
        late, self._late = self._late, []
        return late

    def snapshot(self) -> dict[str, pa.Table]:
        meta = pa.table(
            {
                "watermark": [self.watermark],
                "late_rows": [self.late_rows],
                "null_time_rows": [self.null_time_rows],
                "out_of_range_rows": [self.out_of_range_rows],
            }
        ).replace_schema_metadata({"format": _FORMAT})
        late = pa.Table.from_batches(self._late, schema=self.input_schema)
        return {"meta": meta, "late": late, **self._impl.snapshot()}

    def restore(self, state: dict[str, pa.Table]) -> None:
        expected = {"meta", "late", *self._impl.tables()}
        meta = state.get("meta")
        if set(state) != expected or meta is None or meta.num_rows != 1:
            raise StateError(
                f"window state has tables {sorted(state)}, expected {sorted(expected)}"
            )
        if (meta.schema.metadata or {}).get(b"format") != _FORMAT:
            raise StateError(f"window state format {meta.schema.metadata!r} is not {_FORMAT!r}")
        row = meta.to_pylist()[0]
        self.watermark, self.late_rows = row["watermark"], row["late_rows"]
        self.null_time_rows = row["null_time_rows"]
        self.out_of_range_rows = row.get("out_of_range_rows", 0)
        self._late = checked(state["late"], self.input_schema, "late").to_batches()
        self._impl.restore(state)

    # -- shared by the window kinds ------------------------------------------------------------

    def _drop(self, batch: pa.RecordBatch, late: np.ndarray) -> None:
        self.late_rows += int(late.sum())
        if self.keep_late:
            rows = batch.filter(pa.array(late))
            self._late.append(pa.RecordBatch.from_arrays(rows.columns, schema=self.input_schema))

    def result(self, groups: pa.Table, start: pa.Array, end: pa.Array) -> pa.Table:
        """Output rows (without ``_change``) of merged partial rows with their window bounds
        (int64: ms, or for input windows the columns' raw values)."""
        bounds = zip(self.bound_types, (start, end), strict=True)
        arrays = [pc.cast(a, t) for t, a in bounds]
        arrays += [groups.column(k) for k in self.keys[: len(self.key)]]
        values = self.plan.finalize(groups)
        arrays += [values[f.name] for f in self.plan.output_fields]
        return pa.Table.from_arrays(arrays, schema=self._result_schema)

    def closed(self, results: list[pa.Table]) -> list[pa.RecordBatch]:
        results = [r for r in results if r.num_rows]
        return pa.concat_tables(results).combine_chunks().to_batches() if results else []

    def changelog(self, before: pa.Table | None, after: pa.Table) -> list[pa.RecordBatch]:
        return changes(before, after, self._out)

    def partial_schema(self, group: list[pa.Field]) -> pa.Schema:
        return pa.schema(group + self.key_fields + self.plan.partial_fields())


