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
* ``finish()`` — ``[]``: nothing is pending in an inner join.

Times are compared in the common unit of both time columns (``common``), so a bound of 1 ms
on ``timestamp[us]`` columns means 1000 us. Rows whose key or time is null never match and
are dropped (``null_rows``). Not guaranteed: output order or batch boundaries.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.errors import ConfigError
from ring0.operators.join.common import TwoInputJoin, clamp


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
        super().__init__(
            left_schema,
            right_schema,
            left_key,
            right_key,
            left_time,
            right_time,
            left_prefix,
            right_prefix,
            keep_late,
            right_nullable=False,
        )
        self.lower_ms, self.upper_ms = lower_ms, upper_ms
        self._lower = lower_ms * self.per_ms
        self._upper = upper_ms * self.per_ms
        self._key_names = [f"k{i}" for i in range(len(self._keys[0]))]
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
        for port in (0, 1):
            self._keep(port, self._t[port] >= self._threshold(port))
        return []

    def _threshold(self, port: int) -> int:
        """Rows of ``port`` with time below this can match no future on-time row."""
        wm = self._wm_units()
        return clamp(wm - self._upper) if port == 0 else clamp(wm + self._lower)

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
        pairs = self._index(rows, times, port, "n").join(
            self._index(buffered, self._t[other], other, "b"),
            keys=self._key_names,
            join_type="inner",
            use_threads=False,
        )
        if pairs.num_rows == 0:
            return []
        new_t, old_t = pairs.column("nt").to_numpy(), pairs.column("bt").to_numpy()
        new_i, old_i = pairs.column("ni").to_numpy(), pairs.column("bi").to_numpy()
        if port == 0:
            diff, li, ri = old_t - new_t, new_i, old_i
            left, right = rows, buffered
        else:
            diff, li, ri = new_t - old_t, old_i, new_i
            left, right = buffered, rows
        hit = (diff >= self._lower) & (diff <= self._upper)
        if not hit.any():
            return []
        return self._emit(left.take(pa.array(li[hit])), right.take(pa.array(ri[hit])))


def _trim(rows: pa.Table, times: np.ndarray, threshold: int) -> tuple[pa.Table, np.ndarray]:
    keep = times >= threshold
    if keep.all():
        return rows, times
    idx = np.flatnonzero(keep)
    return rows.take(pa.array(idx)), times[idx]
