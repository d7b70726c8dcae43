"""What both two-input joins share: validation, one time axis, admission of rows, state.

A join has two inputs, port 0 (left) and port 1 (right), each with its own schema, key
columns and event-time column. ``TwoInputJoin`` owns everything that does not depend on the
join's matching rule:

* **Validation** (at construction, never mid-run): key columns exist and have equal types
  pairwise, time columns are integers (ms) or timestamps (any unit), and the output names
  (``left_prefix + name`` for every left column, then ``right_prefix + name`` for every right
  column) are unique. Every failure is a ``ConfigError`` naming the value.
* **One time axis.** Both time columns are read as int64 in a common unit: the finest of
  milliseconds and the two columns' units (an ``int64`` column counts as ms). Bounds,
  tolerances and watermarks (always ms) are scaled into that unit, so nothing is rounded.
* **Admission** (``_admit``): every batch is checked against its port's schema. Rows
  with ``time < watermark`` are late (whatever their key; never in a join whose class sets
  ``drops_late = False``): dropped, counted in ``late_rows``
  (and per port in ``late_by_port``) and, with ``keep_late``, kept for ``take_late(port)``.
  Other rows whose key or time is null can never match: dropped and counted in
  ``null_rows`` (the left side of the ASOF join keeps them: it is an outer join).
  Admitted rows are copied (``take``), so they no longer point into ring memory.
* **State**: ``snapshot()`` returns ``left`` and ``right`` (the buffered rows, input
  schemas), ``late_left``/``late_right`` (late rows not yet taken) and a one-row ``meta``
  table (format version, watermark, counters). ``restore`` rebuilds the buffers from them.
* **Buffers** are tables of chunks in arrival order. Appending never copies the rows already
  buffered: small chunks are merged pairwise, like a binary counter, until they hold
  ``CHUNK_BYTES`` (each row is copied a few times at most, however small the batches).
  Trimming a run of rows off the front — rows arriving in time order — is a zero-copy slice;
  any other trim copies the rows kept. ``take_rows`` gathers rows chunk by chunk (Arrow's
  ``take`` on a chunked column concatenates every chunk first: the whole buffer per call).

Not guaranteed: order of output rows; that the buffers are minimal between watermarks (state
is trimmed in ``on_watermark``); a dictionary-typed column of an admitted row may still share
its dictionary with the input batch (``take`` copies indices only).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError, SchemaMismatchError, StateError
from engine.timeunits import to_ms
from ring0.operators.base import Operator
from ring0.operators.join.tables import take_rows

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
CHUNK_BYTES = 1 << 20  # buffered chunks smaller than this are merged as new rows arrive
STATE_VERSION = 1
SIDES = ("left", "right")
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_META = pa.schema(
    [
        ("version", pa.int32()),
        ("watermark", pa.int64()),
        ("late_left", pa.int64()),
        ("late_right", pa.int64()),
        ("null_rows", pa.int64()),
        ("out_of_range_rows", pa.int64()),
    ]
)
_META_V1 = pa.schema([f for f in _META if f.name != "out_of_range_rows"])  # before 0.2


def clamp(value: int) -> int:
    """``value`` limited to the int64 range (thresholds are compared with int64 arrays)."""
    return max(INT64_MIN, min(INT64_MAX, value))


def grow(
    values: np.ndarray, store: np.ndarray | None, more: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``values`` then ``more``, as a view of ``store``, a buffer with room to spare that
    doubles when full: appending costs ``more``, not a copy of ``values``. Returns (the
    view, its store). Only a view made here grows in place; any other ``values`` (filtered,
    restored: a new array) starts a new store."""
    n = values.size
    if (store is None or values.base is not store or store.size < n + more.size
            or values.ctypes.data != store.ctypes.data):  # fmt: skip
        store = np.empty(max(2 * (n + more.size), 1024), values.dtype)
        store[:n] = values
    store[n : n + more.size] = more
    return store[: n + more.size], store


def _per_second(schema: pa.Schema, column: str, side: str) -> int:
    if schema.get_field_index(column) < 0:
        raise ConfigError(f"{side} time column {column!r} is not in {side} columns {schema.names}")
    t = schema.field(column).type
    if pa.types.is_timestamp(t):
        return _PER_SECOND[t.unit]
    if pa.types.is_integer(t):
        return _PER_SECOND["ms"]
    raise ConfigError(
        f"{side} time column {column!r} has type {t}; it must be an integer (ms) or a timestamp"
    )


def _check_keys(left: pa.Schema, right: pa.Schema, lkey: list[str], rkey: list[str]) -> None:
    if not lkey or len(lkey) != len(rkey):
        raise ConfigError(
            f"join keys must be non-empty and of equal length: left_key={lkey} right_key={rkey}"
        )
    for side, schema, key in (("left", left, lkey), ("right", right, rkey)):
        for col in key:
            if schema.get_field_index(col) < 0:
                raise ConfigError(f"{side} key {col!r} is not in {side} columns {schema.names}")
    for lk, rk in zip(lkey, rkey, strict=True):
        lt, rt = left.field(lk).type, right.field(rk).type
        for side, name, t in (("left", lk, lt), ("right", rk, rt)):
            if pa.types.is_dictionary(t):
                raise ConfigError(
                    f"{side} key {name!r} is dictionary-encoded ({t}); cast it to its values' "
                    f"type in a project step first (cast({name} as {t.value_type}))"
                )
        if lt != rt:
            raise ConfigError(
                f"join key types differ: left {lk!r} is {lt}, right {rk!r} is {rt} (cast one side)"
            )


def output_schema(
    left: pa.Schema, right: pa.Schema, left_prefix: str, right_prefix: str, right_nullable: bool
) -> pa.Schema:
    """All left fields renamed ``left_prefix + name``, then all right fields likewise."""
    fields = [f.with_name(left_prefix + f.name) for f in left]
    fields += [
        f.with_name(right_prefix + f.name).with_nullable(f.nullable or right_nullable)
        for f in right
    ]
    seen: set[str] = set()
    for f in fields:
        if f.name in seen:
            raise ConfigError(
                f"output column {f.name!r} occurs twice (left_prefix={left_prefix!r}, "
                f"right_prefix={right_prefix!r}); set left_prefix or right_prefix to tell the "
                f"sides apart"
            )
        seen.add(f.name)
    return pa.schema(fields)


class TwoInputJoin(Operator):
    """Base of the joins: validated config, admission of rows, late rows, snapshot/restore.

    Subclasses own the matching; they keep ``self._rows[port]`` (buffered rows, input schema)
    and ``self._t[port]`` (their times in the common unit) aligned row for row.
    """

    inputs = 2
    drops_late = True  # False: no row is ever late (a join without time bounds)

    # Both joins take these eight side parameters in this order (their signatures repeat
    # them: the public constructors stay flat, as the plan and the tests call them).
    def __init__(
        self,
        left_schema: pa.Schema,
        right_schema: pa.Schema,
        left_key: list[str],
        right_key: list[str],
        left_time: str,
        right_time: str,
        left_prefix: str,
        right_prefix: str,
        keep_late: bool,
        right_nullable: bool,
    ) -> None:
        _check_keys(left_schema, right_schema, list(left_key), list(right_key))
        per_second = (
            _per_second(left_schema, left_time, "left"),
            _per_second(right_schema, right_time, "right"),
        )
        unit = max(_PER_SECOND["ms"], *per_second)
        self._schemas = (left_schema, right_schema)
        self._keys = (list(left_key), list(right_key))
        self._time_cols = (left_time, right_time)
        self._factor = (unit // per_second[0], unit // per_second[1])
        self.per_ms = unit // _PER_SECOND["ms"]  # common time units per millisecond
        self._out = output_schema(
            left_schema, right_schema, left_prefix, right_prefix, right_nullable
        )
        self._keep_late = keep_late
        self._late: tuple[list[pa.RecordBatch], list[pa.RecordBatch]] = ([], [])
        self.late_rows = 0
        self.late_by_port = [0, 0]
        self.null_rows = 0
        self.out_of_range_rows = 0
        self.watermark: int | None = None  # ms; None until the first on_watermark
        self._rows = [left_schema.empty_table(), right_schema.empty_table()]
        self._t = [np.empty(0, np.int64), np.empty(0, np.int64)]
        self._t_store: list[np.ndarray | None] = [None, None]  # grows ``_t`` (_extend_times)

    @property
    def output_schema(self) -> pa.Schema:
        return self._out

    @property
    def state_rows(self) -> tuple[int, int]:
        """Rows buffered per port (left, right)."""
        return self._rows[0].num_rows, self._rows[1].num_rows

    def take_late(self, port: int = 0) -> list[pa.RecordBatch]:
        """Late rows of ``port`` (that port's input schema) collected since the last call.

        Two inputs have two schemas, so late rows are taken per port: a worker with
        ``keep_late`` calls ``take_late(0)`` and ``take_late(1)``. Empty without ``keep_late``.
        """
        self._check_port(port)
        taken = self._late[port][:]
        self._late[port].clear()
        return taken

    # -- admission ---------------------------------------------------------------------------

    def _check_port(self, port: int) -> None:
        if port not in (0, 1):
            raise ConfigError(f"port={port!r}: a join has ports 0 (left) and 1 (right)")

    def _times(
        self, table: pa.Table, port: int, column: str | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The time column (or ``column``, of the same type) as int64 in the common unit
        (nulls read as 0), and a mask of the rows whose time is in range (None: all are):
        within ``engine.timeunits``' range and representable in the common unit."""
        column = column or self._time_cols[port]
        col = pc.cast(table.column(column), pa.int64(), safe=False)
        if col.null_count:
            col = pc.fill_null(col, 0)
        raw = np.asarray(col.to_numpy(), dtype=np.int64)
        _, ok = to_ms(table.column(column).fill_null(0))
        factor = self._factor[port]
        if factor != 1:
            fits = np.abs(raw) <= INT64_MAX // factor
            ok = fits if ok is None else ok & fits
            raw = np.where(fits, raw, 0) * factor
        if ok is not None and ok.all():
            ok = None
        return raw, ok

    def _wm_units(self) -> int:
        assert self.watermark is not None
        return clamp(self.watermark * self.per_ms)

    def _admit(
        self, batch: pa.RecordBatch, port: int, null_keys_ok: bool = False
    ) -> tuple[pa.Table, np.ndarray, pa.Table | None]:
        """Check, split and copy one batch: (on-time rows, their times, rows without time).

        A row with ``time < watermark`` is late (whatever its key): dropped and counted.
        Of the others, rows with a null time or (unless ``null_keys_ok``) a null key are
        dropped and counted in ``null_rows`` — except that with ``null_keys_ok`` the rows
        without time come back third (an outer side emits them unmatched). The on-time rows
        are copies.
        """
        self._check_port(port)
        if not batch.schema.equals(self._schemas[port], check_metadata=False):
            raise SchemaMismatchError(
                f"{SIDES[port]} input (port {port}) batch schema {batch.schema} differs from "
                f"the join's {SIDES[port]} schema {self._schemas[port]}"
            )
        table = pa.Table.from_batches([batch])
        times, in_range = self._times(table, port)
        time_col = table.column(self._time_cols[port])
        timeless = None
        if time_col.null_count:
            keep = pc.is_valid(time_col).to_numpy(zero_copy_only=False)
            if null_keys_ok:
                timeless = table.filter(pa.array(~keep))
            else:
                self.null_rows += int(table.num_rows - np.count_nonzero(keep))
        else:
            keep = np.ones(table.num_rows, dtype=bool)
        if in_range is not None:  # a time the engine cannot compute with: dropped, counted
            self.out_of_range_rows += int(np.count_nonzero(keep & ~in_range))
            keep &= in_range
        if self.watermark is not None and self.drops_late:
            late = keep & (times < self._wm_units())
            n_late = int(np.count_nonzero(late))
            if n_late:
                self.late_rows += n_late
                self.late_by_port[port] += n_late
                if self._keep_late:
                    self._late[port].extend(table.filter(pa.array(late)).to_batches())
                keep &= ~late
        if not null_keys_ok:
            for k in self._keys[port]:
                column = table.column(k)
                if column.null_count:
                    valid = pc.is_valid(column).to_numpy()
                    self.null_rows += int(np.count_nonzero(keep & ~valid))
                    keep &= valid
        kept = np.flatnonzero(keep)
        return table.take(pa.array(kept)), times[kept], timeless

    # -- buffers -----------------------------------------------------------------------------

    def _append(self, port: int, rows: pa.Table, times: np.ndarray) -> None:
        if rows.num_rows == 0:
            return
        chunks = [*self._rows[port].to_batches(), *rows.combine_chunks().to_batches()]
        while (
            len(chunks) > 1
            and chunks[-2].nbytes < CHUNK_BYTES
            and chunks[-1].num_rows >= chunks[-2].num_rows
        ):
            chunks[-2:] = [pa.concat_batches(chunks[-2:])]
        self._rows[port] = pa.Table.from_batches(chunks, schema=self._rows[port].schema)
        self._extend_times(port, times)

    def _extend_times(self, port: int, more: np.ndarray) -> None:
        """``_t[port]`` then ``more`` (see ``grow``)."""
        self._t[port], self._t_store[port] = grow(self._t[port], self._t_store[port], more)

    def _keep(self, port: int, keep: np.ndarray) -> None:
        """Keep only the buffered rows of ``port`` where ``keep`` (order preserved)."""
        if keep.all():
            return
        idx = np.flatnonzero(keep)
        rows = self._rows[port]
        if idx.size == 0:
            self._rows[port] = rows.schema.empty_table()
        elif idx[-1] - idx[0] + 1 == idx.size:  # one run: a slice, whole chunks before it go
            self._rows[port] = rows.slice(int(idx[0]), int(idx.size))
        else:
            self._rows[port] = take_rows(rows, idx)
        self._t[port] = self._t[port][idx]

    def _emit(self, left: pa.Table, right: pa.Table) -> list[pa.RecordBatch]:
        """Output batches of the row-aligned ``left`` and ``right`` parts."""
        if left.num_rows == 0:
            return []
        table = pa.Table.from_arrays([*left.columns, *right.columns], schema=self._out)
        return table.to_batches()

    # -- state -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, pa.Table]:
        meta = pa.Table.from_pylist(
            [
                {
                    "version": STATE_VERSION,
                    "watermark": self.watermark,
                    "late_left": self.late_by_port[0],
                    "late_right": self.late_by_port[1],
                    "null_rows": self.null_rows,
                    "out_of_range_rows": self.out_of_range_rows,
                }
            ],
            schema=_META,
        )
        state = {"meta": meta}
        for port, side in enumerate(SIDES):
            state[side] = self._rows[port]
            state[f"late_{side}"] = pa.Table.from_batches(self._late[port], self._schemas[port])
        return state

    def restore(self, state: dict[str, pa.Table]) -> None:
        expected = {"meta", *SIDES, *(f"late_{s}" for s in SIDES)}
        if set(state) != expected:
            raise StateError(
                f"{type(self).__name__} state has tables {sorted(state)}, "
                f"expected {sorted(expected)}"
            )
        meta = state["meta"]
        if not (meta.schema.equals(_META) or meta.schema.equals(_META_V1)) or meta.num_rows != 1:
            raise StateError(f"{type(self).__name__} state 'meta' is malformed: {meta.schema}")
        row = meta.to_pylist()[0]
        if row["version"] != STATE_VERSION:
            raise StateError(
                f"{type(self).__name__} state version {row['version']} is not {STATE_VERSION}"
            )
        for port, side in enumerate(SIDES):
            for name in (side, f"late_{side}"):
                if not state[name].schema.equals(self._schemas[port], check_metadata=False):
                    raise StateError(
                        f"{type(self).__name__} state {name!r} has schema {state[name].schema}, "
                        f"expected the {side} schema {self._schemas[port]}"
                    )
            self._rows[port] = state[side].cast(self._schemas[port])
            self._t[port] = self._times(self._rows[port], port)[0]
            self._late[port].clear()
            self._late[port].extend(state[f"late_{side}"].to_batches())
        self.watermark = row["watermark"]
        self.late_by_port = [row["late_left"], row["late_right"]]
        self.late_rows = sum(self.late_by_port)
        self.null_rows = row["null_rows"]
        self.out_of_range_rows = row.get("out_of_range_rows", 0)

