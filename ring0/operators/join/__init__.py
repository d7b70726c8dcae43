"""Two-input stream joins of Ring 0: ``IntervalJoin`` (inner, eager) and ``AsofJoin``.

Port 0 is the left input, port 1 the right. Both keep their buffers as Arrow tables, trim
them on ``on_watermark`` and snapshot them as named tables; see ``common`` for what they
share (validation, time unit, late rows, state layout) and each module for its rule.
"""

from ring0.operators.join.asof import AsofJoin
from ring0.operators.join.interval import IntervalJoin

__all__ = ["AsofJoin", "IntervalJoin"]
