"""The stream runtime shared by every process that reads rings: workers and sinks.

* ``inputs`` — ``InputSet``: several rings read as one, round robin, pausable;
  ``EOS_END`` / ``EOS_STOPPED``: how a stream ended.
* ``alignment`` — ``Aligner``: barrier alignment (epoch steps 3 and 4).
* ``watermarks`` — ``SourceWatermark`` (made by a source) and ``Watermarks``
  (the minimum over a consumer's inputs, with idle inputs).
* ``consumer`` — ``Consumer``: the frame loop, one method per event.

Ring 0 (workers) and Ring 1 (sinks) both build on this package; neither
imports the other.
"""
