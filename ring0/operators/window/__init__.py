"""Keyed aggregations over event-time windows: tumbling, hopping, session and "input" windows.

Modules: ``aggregate`` (the operator), ``slots`` (tumbling, hopping, input),
``sessions``, ``tables`` (what they share).

The worker drives ``WindowAggregate`` as every operator (``ring0.operators.base``): ``process``
and ``on_watermark`` in any interleaving, then ``finish``; ``snapshot`` between calls;
``restore`` on a fresh instance before any other call. Times are ms (a timestamp column is
converted, flooring). Windows, half-open ``[start, end)``:

* tumbling ``[k*size, (k+1)*size)``: a row at exactly a window's end is in the next window.
* hopping ``[k*slide, k*slide + size)``: each row is in ``size/slide`` windows. State is kept
  per pane (``[k*slide, (k+1)*slide)``), never per window and row: a window is the merge of its
  panes' partials when it closes; a pane is freed when the last window that holds it closes.
* session, per key: rows whose consecutive times (in time order) differ by at most ``gap_ms``
  form one session ``[first, last + gap_ms)``. A batch's rows and the key's open sessions are
  merged as intervals, so a row may join two open sessions into one.
* input: rows already carry ``window_start``/``window_end`` (another window aggregation's
  output, e.g. per worker; int or timestamp, kept as they are); rows of the same window and
  key are merged (e.g. the global max). Event time is ``window_end``; ``time`` must name a
  column of the input but is not read (pass "window_end").

A window closes when ``watermark >= window_end + allowed_lateness_ms``. A row is late when every
window it belongs to has closed — for sessions: when ``ts + gap_ms + allowed_lateness_ms <=
watermark``, or when it would join a session that has closed (so the result always equals a
batch computation over the rows that were not late; closed sessions are remembered per key, as
the last event time, until no row can reach them). Late rows are dropped and counted
(``late_rows``); with ``keep_late`` ``take_late()`` returns them. A hopping-window row that is
late for some of its windows only counts in the others. Rows with a null time are dropped and
counted (``null_time_rows``).

emit="close": ``on_watermark`` returns one row per (window, key) of the windows it closes, in
ascending window end order; ``finish`` the same for every open window. emit="update": after
each ``process`` a changelog (``ring0.operators.changelog``) for every (window, key) the batch
touched (``_change`` int8 is the last column); session merges retract every merged session;
closing a window emits nothing and frees it.

Key columns: integers or strings, any number (``[]``: one group per window; null is a key).
Output columns: ``window_start``, ``window_end`` (int64 ms, or ``timestamp[ms]`` with the time
column's zone when it is a timestamp), the key columns, one per aggregate. The time column:
any integer type (ms) or a timestamp of any unit.

State (``snapshot``): ``meta`` (watermark and counters, one row), ``late`` (rows not yet taken
by ``take_late``), then ``slots`` (partial tables per pane or window, with their order kept so
float sums come out the same after a restore) or ``sessions`` and ``closed_sessions``.

Costs: per batch one ``group_by`` over its rows; close mode stores partials per pane and
merges them every 16 batches and on close (a hopping window merges its size/slide panes);
update mode merges into the touched windows' state (time linear in their groups; hopping
copies each pane partial to its size/slide windows); sessions also sort the batch with the
open sessions of its keys. Not guaranteed: batch boundaries, row order within a window.
"""

from ring0.operators.window.aggregate import MAX_DURATION_MS, TYPES, WindowAggregate, WindowSpec

__all__ = ["MAX_DURATION_MS", "TYPES", "WindowAggregate", "WindowSpec"]
