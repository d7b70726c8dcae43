"""Public testing helpers for connectors and pipelines.

* ``scripted`` — ``ScriptedSource`` (type ``"scripted"``): batches and in-band
  markers (end, crash, stall, fail) for recovery tests.
* ``collect`` — ``CollectingSink`` (type ``"collect"``): keeps what it was given
  and, with a path, commits exactly once to a JSON-lines file.
* ``conformance`` — ``check_source`` / ``check_sink``: the contract every
  shipped connector passes (``ConformanceError`` names the broken rule).
"""

from __future__ import annotations

from connectors.testing.collect import CollectingSink, read_committed
from connectors.testing.conformance import ConformanceError, check_sink, check_source
from connectors.testing.scripted import MARKERS, ScriptedSource

__all__ = [
    "MARKERS",
    "CollectingSink",
    "ConformanceError",
    "ScriptedSource",
    "check_sink",
    "check_source",
    "read_committed",
]
