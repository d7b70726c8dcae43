"""Interval join: every pair of rows with equal keys and ``lower <= r.time - l.time <= upper``.

An inner join of two streams, emitted eagerly. Contract (the worker calls, in any
interleaving, from one thread):

* ``process(batch, port)`` — port 0 is left, 1 is right. The new rows (minus late and
  null-key/null-time rows, see ``common``) are joined against the *other* side's buffered
  rows — ``Table.join`` on the key (``use_threads=False``), then a vectorised time filter —
  the matches are returned, and the new rows are buffered. Every pair is therefore emitted
  exactly once: by the call that brings the second of its two rows.
* ``on_watermark(wm)`` (ms, the minimum over both inputs) — rows arriving later with
  ``time < wm`` are late. No output; the buffers are trimmed to the rows a future on-time
  row of the other side can still match:

  - a left row ``l`` matches a future right row only if ``r.time <= l.time + upper`` for some
    ``r.time >= wm``: kept while ``l.time + upper >= wm``;
  - a right row ``r`` matches a future left row only if ``l.time <= r.time - lower`` for some
    ``l.time >= wm``: kept while ``r.time - lower >= wm``.

  So the state holds about ``(upper + out-of-orderness)`` of left rows and
  ``(-lower + out-of-orderness)`` of right rows. A lower watermark than before is ignored.
  Trimming is amortised: a side's buffer is trimmed when the watermark has moved a
  quarter of that side's span (``upper`` for the left, ``-lower`` for the right; at
  least ``TRIM_MIN_MS``) past its last trim, so a trim (linear in the buffer) runs a
  few times per span, not once per batch; until then the rows past their time stay
  buffered, and a match with one of them is rejected (as if it had been trimmed).
  ``state_rows`` counts only the rows still needed; ``snapshot`` trims first.
* ``finish()`` — ``[]``: nothing is pending in an inner join.

A bound per left row (``left_until``, a left column of the left time column's type)
replaces ``upper``: a pair matches when ``lower <= r.time - l.time`` and ``r.time <=
l.until`` (an auction and the bids made while it is open: ``lower = 0``, ``left_until =
"expires"``). A left row is then kept while ``l.until >= wm``, whatever its span, and its
buffer is trimmed each time the watermark has moved a quarter of the longest span seen
(``until - time``, at least ``TRIM_MIN_MS``). A left row with a null bound never matches:
dropped and counted in ``null_rows``.

Matching. With integer key columns (the usual case, and the only one with more than one
worker) each side keeps a ``KeyIndex`` of its buffered rows: a hash of the key (the key
itself for one column) sorted, with the row positions in that order, in a main part and a
small tail of recent rows. New rows find their candidates with ``np.searchsorted``,
compound keys are compared column by column, then the time filter. A batch costs about
its own rows plus ``2 sqrt(buffered x batch)`` index entries moved, never a rebuild of the
other side. Other key types (strings, ...) use
``Table.join`` of the new rows against the other side's whole buffer, once per batch.

Times are compared in the common unit of both time columns (``common``), so a bound of 1 ms
on ``timestamp[us]`` columns means 1000 us. Rows whose key or time is null never match and
are dropped (``null_rows``). Not guaranteed: output order or batch boundaries.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError
from ring0.operators.join.common import INT64_MAX, TwoInputJoin, clamp, grow
from ring0.operators.join.key_index import KeyIndex
from ring0.operators.join.tables import take_rows

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
TRIM_MIN_MS = 100  # the least watermark progress between two trims of a side


class IntervalJoin(TwoInputJoin):
    """Inner join of rows with equal keys whose times satisfy ``lower <= r - l <= upper``."""

    def __init__(
        self,
        left_schema: pa.Schema,
        right_schema: pa.Schema,
        left_key: list[str],
        right_key: list[str],
        left_time: str,
        right_time: str,
        lower_ms: int,
        upper_ms: int,
        left_prefix: str = "",
        right_prefix: str = "",
        keep_late: bool = False,
        left_until: str | None = None,
    ) -> None:
        if left_until is not None and upper_ms:
            raise ConfigError(
                f"upper_ms={upper_ms} and left_until={left_until!r}: give one (left_until "
                "is the upper bound of each left row)"
            )
        if left_until is None and lower_ms > upper_ms:
            raise ConfigError(f"interval join lower_ms={lower_ms} > upper_ms={upper_ms}")
        sides = (left_schema, right_schema, left_key, right_key, left_time, right_time)
        super().__init__(*sides, left_prefix, right_prefix, keep_late, right_nullable=False)
        self.lower_ms, self.upper_ms = lower_ms, upper_ms
        self._lower = lower_ms * self.per_ms
        self._upper = upper_ms * self.per_ms if left_until is None else INT64_MAX
        self._until_col = _check_until(left_schema, left_time, left_until)
        self._u = np.empty(0, np.int64)  # with left_until: each left row's bound (units)
        self._u_store: np.ndarray | None = None
        # a left row lives ``upper`` past the watermark, a right row ``-lower``: each side is
        # trimmed after a quarter of its own span
        spans = (max(upper_ms, 0), max(-lower_ms, 0))
        self._trim_step = [max(span // 4, TRIM_MIN_MS) * self.per_ms for span in spans]
        self._timed = True  # False (the inner join): no time filter, nothing ever trimmed
        self._trimmed_at: list[int | None] = [None, None]  # watermark (units) of the last trim
        self._key_names = [f"k{i}" for i in range(len(self._keys[0]))]
        self._fast = all(pa.types.is_integer(left_schema.field(k).type) for k in left_key)
        # per port, with _fast: the buffer's positions by key hash, and (compound keys only,
        # whose hashes may collide) the key columns as int64, row aligned
        self._kv: list[list[np.ndarray]] = [[], []]
        self._index_of = [KeyIndex(), KeyIndex()]
        for port in (0, 1):
            self._reindex(port)
        try:  # the hash join supports fewer key types than Arrow has: fail now, not mid-run
            probe = self._index(self._rows[0], self._t[0], 0, "n")
            other = self._index(self._rows[1], self._t[1], 1, "b")
            probe.join(other, keys=self._key_names, use_threads=False)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as e:
            raise ConfigError(f"join keys {self._keys[0]} cannot be hash-joined: {e}") from e

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        rows, times, _ = self._admit(batch, port)
        until = None
        if port == 0 and self._until_col is not None:
            rows, times, until = self._admit_until(rows, times)
        if rows.num_rows == 0:
            return []
        out = self._match(rows, times, port, until)
        if self.watermark is not None and self._timed:  # a row no future row can match
            keep = (times if until is None else until) >= self._threshold(port)
            if not keep.all():
                idx = np.flatnonzero(keep)
                rows, times = rows.take(pa.array(idx)), times[idx]
                until = None if until is None else until[idx]
        self._append(port, rows, times, until)
        return out

    def _admit_until(
        self, rows: pa.Table, times: np.ndarray
    ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        """Admitted left rows with their ``left_until`` bound; a null bound is dropped and
        counted in ``null_rows``, one out of range in ``out_of_range_rows``."""
        assert self._until_col is not None
        until, ok = self._times(rows, 0, self._until_col)
        keep = np.ones(rows.num_rows, bool)
        column = rows.column(self._until_col)
        if column.null_count:
            keep = pc.is_valid(column).to_numpy(zero_copy_only=False)
            self.null_rows += int(rows.num_rows - np.count_nonzero(keep))
        if ok is not None:
            self.out_of_range_rows += int(np.count_nonzero(keep & ~ok))
            keep &= ok
        if not keep.all():
            idx = np.flatnonzero(keep)
            rows, times, until = rows.take(pa.array(idx)), times[idx], until[idx]
        self._longest_span(until - times)
        return rows, times, until

    def _longest_span(self, spans: np.ndarray) -> None:
        """With ``left_until``: the left side is trimmed every quarter of its longest span."""
        if spans.size:
            step = max(int(spans.max()) // 4, TRIM_MIN_MS * self.per_ms)
            self._trim_step[0] = max(self._trim_step[0], step)

    def on_watermark(self, watermark: int) -> list[pa.RecordBatch]:
        if self.watermark is not None and watermark <= self.watermark:
            return []
        self.watermark = watermark
        wm = self._wm_units()
        for port in (0, 1):
            last = self._trimmed_at[port]
            if last is None or wm - last >= self._trim_step[port]:
                self._trim_buffer(port)
        return []

    def _trim_buffer(self, port: int) -> None:
        """Drop the buffered rows of ``port`` that no future on-time row can match."""
        if self.watermark is not None and self._timed:
            self._keep(port, self._ends(port) >= self._threshold(port))
            self._trimmed_at[port] = self._wm_units()

    @property
    def state_rows(self) -> tuple[int, int]:
        """Rows buffered per port that a future on-time row can still match."""
        if self.watermark is None or not self._timed:
            return super().state_rows
        live = (np.count_nonzero(self._ends(p) >= self._threshold(p)) for p in (0, 1))
        return tuple(int(n) for n in live)  # type: ignore[return-value]

    def snapshot(self) -> dict[str, pa.Table]:
        for port in (0, 1):
            self._trim_buffer(port)
        return super().snapshot()

    def _threshold(self, port: int) -> int:
        """Rows of ``port`` whose end (``_ends``) is below this can match no future on-time
        row."""
        wm = self._wm_units()
        if port == 0:
            return wm if self._until_col is not None else clamp(wm - self._upper)
        return clamp(wm + self._lower)

    def _ends(self, port: int) -> np.ndarray:
        """What ``_threshold`` is compared with: the buffered rows' times, or for the left
        with ``left_until`` their bounds."""
        return self._u if port == 0 and self._until_col is not None else self._t[port]

    def restore(self, state: dict[str, pa.Table]) -> None:
        super().restore(state)
        self._trimmed_at = [None, None]
        if self._until_col is not None:
            self._u, self._u_store = self._times(self._rows[0], 0, self._until_col)[0], None
            self._longest_span(self._u - self._t[0])
        for port in (0, 1):
            self._reindex(port)

    # -- the sorted key index (integer keys) ------------------------------------------------

    def _key_arrays(self, rows: pa.Table, port: int) -> list[np.ndarray]:
        """The key columns of admitted rows (never null) as int64 arrays."""
        return [np.asarray(rows.column(k).to_numpy(), dtype=np.int64) for k in self._keys[port]]

    @staticmethod
    def _hash(keys: list[np.ndarray]) -> np.ndarray:
        """One uint64 per row: the key itself for one column, else a mix (may collide)."""
        if len(keys) == 1:
            return keys[0].view(np.uint64)
        with np.errstate(over="ignore"):
            h = np.zeros(len(keys[0]), dtype=np.uint64)
            for col in keys:
                h = (h ^ col.view(np.uint64)) * _GOLDEN
                h ^= h >> np.uint64(29)
        return h

    def _reindex(self, port: int) -> None:
        if not self._fast:
            return
        keys = self._key_arrays(self._rows[port], port)
        self._kv[port] = keys if len(keys) > 1 else []
        self._index_of[port].reset(self._hash(keys))

    def _append(
        self, port: int, rows: pa.Table, times: np.ndarray, until: np.ndarray | None = None
    ) -> None:
        base = self._rows[port].num_rows
        super()._append(port, rows, times)
        if until is not None and until.size:
            self._u, self._u_store = grow(self._u, self._u_store, until)
        if not self._fast or rows.num_rows == 0:
            return
        keys = self._key_arrays(rows, port)
        if len(keys) > 1:
            self._kv[port] = [np.concatenate(p) for p in zip(self._kv[port], keys, strict=True)]
        self._index_of[port].add(self._hash(keys), base)

    def _keep(self, port: int, keep: np.ndarray) -> None:
        if keep.all():
            return
        if port == 0 and self._until_col is not None:
            self._u = self._u[keep]
        if self._fast:
            self._index_of[port].keep(keep)
            self._kv[port] = [a[keep] for a in self._kv[port]]
        super()._keep(port, keep)

    def _candidates(self, rows: pa.Table, port: int) -> tuple[np.ndarray, np.ndarray]:
        """(new row, buffered row of the other side) pairs with equal keys."""
        other = 1 - port
        keys = self._key_arrays(rows, port)
        new_i, old_i = self._index_of[other].find(self._hash(keys))
        if len(keys) > 1:  # hashes collide: compare the keys themselves
            same = np.ones(new_i.size, dtype=bool)
            for mine, theirs in zip(keys, self._kv[other], strict=True):
                same &= mine[new_i] == theirs[old_i]
            new_i, old_i = new_i[same], old_i[same]
        return new_i, old_i

    def _index(self, rows: pa.Table, times: np.ndarray, port: int, tag: str) -> pa.Table:
        """Key columns (renamed k0..), time ``{tag}t`` and row number ``{tag}i`` of ``rows``."""
        cols = [rows.column(k) for k in self._keys[port]]
        cols += [pa.array(times, pa.int64()), pa.array(np.arange(len(times), dtype=np.int64))]
        return pa.Table.from_arrays(cols, names=[*self._key_names, f"{tag}t", f"{tag}i"])

    def _in_time(
        self, new_t: np.ndarray, old_t: np.ndarray, new_i: np.ndarray, old_i: np.ndarray,
        port: int, until: np.ndarray | None,
    ) -> np.ndarray:  # fmt: skip
        """Which candidate pairs (new row, buffered row of the other side) meet the bounds."""
        diff = old_t - new_t if port == 0 else new_t - old_t
        hit = (diff >= self._lower) & (diff <= self._upper)
        if self._until_col is not None:  # the right row's time is within the left row's bound
            hit &= (old_t <= until[new_i]) if port == 0 else (new_t <= self._u[old_i])
        if self.watermark is not None:  # a buffered row past its time, not trimmed yet
            hit &= self._ends(1 - port)[old_i] >= self._threshold(1 - port)
        return hit

    def _match(
        self, rows: pa.Table, times: np.ndarray, port: int, until: np.ndarray | None = None
    ) -> list[pa.RecordBatch]:
        other = 1 - port
        buffered = self._rows[other]
        if buffered.num_rows == 0:
            return []
        if self._fast:
            new_i, old_i = self._candidates(rows, port)
            if self._timed:
                new_t, old_t = times[new_i], self._t[other][old_i]
        else:
            pairs = self._index(rows, times, port, "n").join(
                self._index(buffered, self._t[other], other, "b"),
                keys=self._key_names,
                join_type="inner",
                use_threads=False,
            )
            new_t, old_t = pairs.column("nt").to_numpy(), pairs.column("bt").to_numpy()
            new_i, old_i = pairs.column("ni").to_numpy(), pairs.column("bi").to_numpy()
        if new_i.size == 0:
            return []
        if self._timed:
            hit = self._in_time(new_t, old_t, new_i, old_i, port, until)
            if not hit.any():
                return []
            new_i, old_i = new_i[hit], old_i[hit]
        mine = rows.take(pa.array(new_i))
        theirs = take_rows(buffered, old_i)
        return self._emit(mine, theirs) if port == 0 else self._emit(theirs, mine)


def _check_until(schema: pa.Schema, time: str, until: str | None) -> str | None:
    """``until`` (a left column of the left time column's type), or None."""
    if until is None:
        return None
    if schema.get_field_index(until) < 0:
        raise ConfigError(f"left_until column {until!r} is not in left columns {schema.names}")
    if schema.field(until).type != schema.field(time).type:
        raise ConfigError(
            f"left_until column {until!r} has type {schema.field(until).type}; it must have "
            f"the type of the left time column {time!r}, {schema.field(time).type} (cast it)"
        )
    return until
