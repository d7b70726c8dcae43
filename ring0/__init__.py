"""Ring 0: the worker processes and the operators they run (docs/architecture.md, §1 and §3).

* ``worker`` — the worker process: reads its input rings, runs the graph, writes its
  output rings, snapshots its state at each barrier.
* ``graph`` — the operator graph: chains of steps, an optional join, counters of
  dropped rows.
* ``operators/`` — filter, project, user functions, windows (tumbling, hopping,
  session, input), group-by, interval and ASOF joins; the operator contract is
  ``operators/base.py``.
* ``expr/`` — the expression language of filter, project and aggregates.

Where else to look: watermarks, barrier alignment and the frame loop are the
stream runtime (``engine.stream``) shared with the sinks; partitioning by key is
done by the sources (``ring1.partition``); the final stage (``[[query.final]]``)
runs the same graph in the sink process.
"""
