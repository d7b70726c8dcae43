"""Ring 1: the runtime around connectors — source and sink processes (docs/architecture.md §5).

* ``source_runner`` / ``sink_runner`` — the processes: one method per event
  (data, watermark, barrier, commit, finish).
* ``guard`` — every connector call with retries (transient errors only), health
  and metrics; ``retry``, ``health``, ``metrics`` are its parts.
* ``batching`` — polls gathered into ring-sized batches by rows and time.
* ``partition`` — the shuffle: rows split by a hash of the key into one part
  per worker.

The connectors themselves are ``connectors/``; what a sink reads is aligned by
the stream runtime (``engine.stream``) that workers use too.
"""
