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

from engine.errors import ConfigError
from ring0.operators.join.common import TwoInputJoin, clamp
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
    ) -> None:
        if lower_ms > upper_ms:
            raise ConfigError(f"interval join lower_ms={lower_ms} > upper_ms={upper_ms}")
        sides = (left_schema, right_schema, left_key, right_key, left_time, right_time)
        super().__init__(*sides, left_prefix, right_prefix, keep_late, right_nullable=False)
        self.lower_ms, self.upper_ms = lower_ms, upper_ms
        self._lower = lower_ms * self.per_ms
        self._upper = upper_ms * self.per_ms
        # a left row lives ``upper`` past the watermark, a right row ``-lower``: each side is
        # trimmed after a quarter of its own span
        spans = (max(upper_ms, 0), max(-lower_ms, 0))
        self._trim_step = [max(span // 4, TRIM_MIN_MS) * self.per_ms for span in spans]
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
        if rows.num_rows == 0:
            return []
        out = self._match(rows, times, port)
        if self.watermark is not None:  # a row no future row can match is not kept
            rows, times = _trim(rows, times, self._threshold(port))
        self._append(port, rows, times)
        return out

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
        if self.watermark is not None:
            self._keep(port, self._t[port] >= self._threshold(port))
            self._trimmed_at[port] = self._wm_units()

    @property
    def state_rows(self) -> tuple[int, int]:
        """Rows buffered per port that a future on-time row can still match."""
        if self.watermark is None:
            return super().state_rows
        live = (np.count_nonzero(self._t[p] >= self._threshold(p)) for p in (0, 1))
        return tuple(int(n) for n in live)  # type: ignore[return-value]

    def snapshot(self) -> dict[str, pa.Table]:
        for port in (0, 1):
            self._trim_buffer(port)
        return super().snapshot()

    def _threshold(self, port: int) -> int:
        """Rows of ``port`` with time below this can match no future on-time row."""
        wm = self._wm_units()
        return clamp(wm - self._upper) if port == 0 else clamp(wm + self._lower)

    def restore(self, state: dict[str, pa.Table]) -> None:
        super().restore(state)
        self._trimmed_at = [None, None]
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

    def _append(self, port: int, rows: pa.Table, times: np.ndarray) -> None:
        base = self._rows[port].num_rows
        super()._append(port, rows, times)
        if not self._fast or rows.num_rows == 0:
            return
        keys = self._key_arrays(rows, port)
        if len(keys) > 1:
            self._kv[port] = [np.concatenate(p) for p in zip(self._kv[port], keys, strict=True)]
        self._index_of[port].add(self._hash(keys), base)

    def _keep(self, port: int, keep: np.ndarray) -> None:
        if keep.all():
            return
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

    def _match(self, rows: pa.Table, times: np.ndarray, port: int) -> list[pa.RecordBatch]:
        other = 1 - port
        buffered = self._rows[other]
        if buffered.num_rows == 0:
            return []
        if self._fast:
            new_i, old_i = self._candidates(rows, port)
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
        diff = old_t - new_t if port == 0 else new_t - old_t
        hit = (diff >= self._lower) & (diff <= self._upper)
        if self.watermark is not None:  # a buffered row past its time, not trimmed yet
            hit &= old_t >= self._threshold(other)
        if not hit.any():
            return []
        mine = rows.take(pa.array(new_i[hit]))
        theirs = take_rows(buffered, old_i[hit])
        return self._emit(mine, theirs) if port == 0 else self._emit(theirs, mine)


def _trim(rows: pa.Table, times: np.ndarray, threshold: int) -> tuple[pa.Table, np.ndarray]:
    keep = times >= threshold
    if keep.all():
        return rows, times
    idx = np.flatnonzero(keep)
    return rows.take(pa.array(idx)), times[idx]
