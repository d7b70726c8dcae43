"""Inner join without time bounds: every pair of rows with equal keys, whatever their times.

The streaming form of SQL's ``a JOIN b ON a.k = b.k`` over two append-only inputs
(Nexmark q3: persons and the auctions they sell). It is the interval join
(``interval``) without its time filter and its trims, so it shares its matching, its
key index and its contract, with these differences:

* **Every pair is emitted once**, by the ``process`` call that brings the second of its
  two rows, however far apart in event time the two rows are.
* **No row is late**: a row behind the watermark still matches (the watermark cannot
  close an unbounded join), so ``late_rows`` stays 0. Rows with a null key or time are
  dropped and counted (``null_rows``), as in the interval join; the time column is only
  read for that check and for the engine's watermarks.
* **State grows with the inputs**: every admitted row of both sides is kept for the
  whole run and written to every checkpoint. Filter both sides first (``left_steps``,
  ``right_steps``: they run in the source processes) so only the rows that can match
  are kept; a join whose rows stop mattering after a while is an interval join.

Not guaranteed: output order or batch boundaries (as the interval join).
"""

from __future__ import annotations

import pyarrow as pa

from ring0.operators.join.interval import IntervalJoin


class InnerJoin(IntervalJoin):
    """Every pair of rows with equal keys; both sides are kept for the whole run."""

    drops_late = False

    def __init__(
        self,
        left_schema: pa.Schema,
        right_schema: pa.Schema,
        left_key: list[str],
        right_key: list[str],
        left_time: str,
        right_time: str,
        left_prefix: str = "",
        right_prefix: str = "",
    ) -> None:
        sides = (left_schema, right_schema, left_key, right_key, left_time, right_time)
        super().__init__(*sides, 0, 0, left_prefix=left_prefix, right_prefix=right_prefix)
        self._timed = False  # every pair with equal keys: no time filter, no trim
