"""Which ring connects which two processes of one run (the coordinator creates and owns them).

For ``W`` workers:

* source instance → worker: one ring per (source instance, worker), for the
  sources the query reads (``plan.inputs``: one, or the two sides of a join);
* worker → sink: one ring per (worker, sink) for each sink reading ``"main"``
  or a late output (the workers make both);
* source instance → sink: one ring per (source instance, sink) for each sink
  reading a source's dead-letter output.

Every ring has ``topology.ring_capacity`` bytes. ``close()`` closes and
unlinks them all (the coordinator does it whatever happens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.pipeline import Pipeline
from engine.shm import Ring


@dataclass
class Wiring:
    capacity: int
    rings: list[Ring] = field(default_factory=list)
    to_worker: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # per worker
    to_sink: dict[str, list[str]] = field(default_factory=dict)  # sink -> its input rings
    dead_letter: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # source inst

    @classmethod
    def create(cls, pipeline: Pipeline, inputs: list[str], workers: int, capacity: int) -> Wiring:
        w = cls(capacity)
        for s in pipeline.sources:
            for i in range(s.parallelism):
                w.dead_letter[(s.name, i)] = []
                if s.name in inputs:
                    w.to_worker[(s.name, i)] = [w._ring() for _ in range(workers)]
        for k in pipeline.sinks:
            if w.from_sources(pipeline, k.input):
                rings = []
                for s in pipeline.sources:
                    if s.on_error == "dead_letter" and s.dead_letter_output == k.input:
                        for i in range(s.parallelism):
                            name = w._ring()
                            w.dead_letter[(s.name, i)].append(name)
                            rings.append(name)
                w.to_sink[k.name] = rings
            else:
                w.to_sink[k.name] = [w._ring() for _ in range(workers)]
        return w

    def _ring(self) -> str:
        ring = Ring.create(self.capacity)
        self.rings.append(ring)
        return ring.name

    def worker_outputs(self, pipeline: Pipeline, worker: int) -> tuple[list[str], list[str]]:
        """The rings worker ``worker`` writes, and the stream each carries."""
        rings, streams = [], []
        for k in pipeline.sinks:
            if not self.from_sources(pipeline, k.input):
                rings.append(self.to_sink[k.name][worker])
                streams.append(k.input)
        return rings, streams

    @staticmethod
    def from_sources(pipeline: Pipeline, stream: str) -> bool:
        """Whether ``stream`` is a dead-letter output (made by sources, not workers)."""
        return any(
            s.on_error == "dead_letter" and s.dead_letter_output == stream
            for s in pipeline.sources
        )

    def close(self) -> None:
        for ring in self.rings:
            ring.close()
        self.rings = []
