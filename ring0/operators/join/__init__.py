"""Two-input stream joins of Ring 0: ``IntervalJoin`` (inner, eager), ``InnerJoin`` (the
interval join without time bounds) and ``AsofJoin``.

Port 0 is the left input, port 1 the right. All keep their buffers as Arrow tables, trim
them on ``on_watermark`` (the inner join never does) and snapshot them as named tables;
see ``common`` for what they share (validation, time unit, late rows, state layout) and
each module for its rule.
"""

from ring0.operators.join.asof import AsofJoin
from ring0.operators.join.inner import InnerJoin
from ring0.operators.join.interval import IntervalJoin

__all__ = ["AsofJoin", "InnerJoin", "IntervalJoin"]
