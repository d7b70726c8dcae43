"""ASOF join: each left row with the latest right row of its key at or before its time.

A left outer join, like DuckDB's ``ASOF LEFT JOIN ... ON l.k = r.k AND l.t >= r.t``: for
each left row, the right row with equal key and the greatest ``r.time <= l.time`` (and, with
``tolerance_ms``, ``l.time - r.time <= tolerance``); a left row without one is emitted with
nulls in the right columns. Among right rows of one key with the same time, the one that
arrived last wins (it is the newest value).

Contract (the worker calls, in any interleaving, from one thread):

* ``process(batch, 0)`` buffers left rows and returns ``[]`` — except rows with a null time,
  which can match nothing and are returned at once, unmatched. Left rows with a null key are
  buffered like the others and come out unmatched.
* ``process(batch, 1)`` buffers right rows (null key or time: dropped, ``null_rows``).
* ``on_watermark(wm)`` (ms, the minimum over both inputs): every later row has
  ``time >= wm`` (earlier ones are late: dropped and counted), so every right row a left
  row with ``l.time < wm`` can match is here (not yet for ``l.time == wm``: a right row at
  exactly ``wm`` is still on time). Those left rows are matched and emitted, then
  the right state is trimmed to what a left row with ``l.time >= wm`` can still match: per
  key the latest row with ``r.time < wm`` (dropped too when ``r.time < wm - tolerance``) and
  every row with ``r.time >= wm``. State is bounded by keys plus out-of-orderness.
* ``finish()`` — the inputs ended: every buffered left row is matched and emitted.

Matching is vectorised: key tuples of both sides get shared integer codes
(``common.key_codes``), times become dense ranks, and one ``np.searchsorted`` of
``code * ranks + rank`` over the right rows sorted by (code, time, arrival) finds each left
row's candidate. (``Table.join_asof`` is not used: in pyarrow 26 it matches a null key with
a null key, a null-key right row made the matches of other keys disappear in our checks, it
drops the right time and key columns from its output, and it needs sorted input and a finite
tolerance.)

Not guaranteed: output order or batch boundaries; the watermark, not arrival, decides when
a left row is emitted, so a stream without watermarks emits only on ``finish``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError
from ring0.operators.join.common import TwoInputJoin, clamp
from ring0.operators.join.tables import key_codes


class AsofJoin(TwoInputJoin):
    """Left outer join of each left row with the latest right row of its key not after it."""

    def __init__(
        self,
        left_schema: pa.Schema,
        right_schema: pa.Schema,
        left_key: list[str],
        right_key: list[str],
        left_time: str,
        right_time: str,
        tolerance_ms: int | None = None,
        left_prefix: str = "",
        right_prefix: str = "",
        keep_late: bool = False,
    ) -> None:
        if tolerance_ms is not None and tolerance_ms < 0:
            raise ConfigError(f"asof join tolerance_ms={tolerance_ms} must be >= 0 or None")
        sides = (left_schema, right_schema, left_key, right_key, left_time, right_time)
        super().__init__(*sides, left_prefix, right_prefix, keep_late, right_nullable=True)
        self.tolerance_ms = tolerance_ms
        self._tol = None if tolerance_ms is None else tolerance_ms * self.per_ms
        for k in self._keys[0]:
            t = left_schema.field(k).type
            try:
                pc.dictionary_encode(pa.array([], t))
            except pa.ArrowNotImplementedError as e:
                raise ConfigError(f"join key {k!r} of type {t} cannot be encoded: {e}") from e

    def process(self, batch: pa.RecordBatch, port: int = 0) -> list[pa.RecordBatch]:
        rows, times, timeless = self._admit(batch, port, null_keys_ok=port == 0)
        self._append(port, rows, times)
        if timeless is None or timeless.num_rows == 0:
            return []
        return self._emit(timeless, self._unmatched(timeless.num_rows))

    def on_watermark(self, watermark: int) -> list[pa.RecordBatch]:
        if self.watermark is not None and watermark <= self.watermark:
            return []
        self.watermark = watermark
        wm = self._wm_units()
        ready = self._t[0] < wm
        out = self._emit_left(np.flatnonzero(ready)) if ready.any() else []
        self._keep(0, ~ready)
        self._trim_right(wm)
        return out

    def finish(self) -> list[pa.RecordBatch]:
        out = self._emit_left(np.arange(self._rows[0].num_rows))
        self._keep(0, np.zeros(self._rows[0].num_rows, dtype=bool))
        return out

    def _unmatched(self, n: int) -> pa.Table:
        return self._rows[1].take(pa.nulls(n, pa.int64()))

    def _emit_left(self, idx: np.ndarray) -> list[pa.RecordBatch]:
        """Match and emit the buffered left rows at positions ``idx``."""
        if idx.size == 0:
            return []
        left = self._rows[0].take(pa.array(idx))
        match = self._match(left, self._t[0][idx])
        right = self._rows[1].take(pa.array(match, mask=match < 0))
        return self._emit(left, right)

    def _match(self, left: pa.Table, lt: np.ndarray) -> np.ndarray:
        """Position in the right buffer of each left row's match, or -1."""
        right, rt = self._rows[1], self._t[1]
        if right.num_rows == 0:
            return np.full(left.num_rows, -1, np.int64)
        lc, rc = key_codes([left, right], self._keys)
        ranks = np.unique(np.concatenate([lt, rt]), return_inverse=True)[1].reshape(-1)
        span = int(ranks.max()) + 1
        lkey = lc * span + ranks[: len(lt)]
        rkey = rc * span + ranks[len(lt) :]
        order = np.argsort(rkey, kind="stable")  # ties keep arrival order: last one wins
        pos = np.searchsorted(rkey[order], lkey, side="right") - 1
        cand = order[np.maximum(pos, 0)]
        ok = (pos >= 0) & (lc >= 0) & (rc[cand] == lc)
        if self._tol is not None:
            ok &= lt - rt[cand] <= self._tol
        return np.where(ok, cand, -1)

    def _trim_right(self, wm: int) -> None:
        """Keep per key the newest right row before ``wm`` (if in tolerance) and all later."""
        rt = self._t[1]
        before = np.flatnonzero(rt < wm)
        if before.size == 0:
            return
        keep = rt >= wm
        if self._tol is not None:
            before = before[rt[before] >= clamp(wm - self._tol)]
        if before.size:
            (codes,) = key_codes([self._rows[1].take(pa.array(before))], self._keys[1:])
            order = np.lexsort((before, rt[before], codes))
            sorted_codes = codes[order]
            last = np.ones(len(order), dtype=bool)
            last[:-1] = sorted_codes[:-1] != sorted_codes[1:]
            keep[before[order[last]]] = True
        self._keep(1, keep)
