"""Which ring connects which two processes of one run (the coordinator creates and owns them).

For ``W`` workers:

* source instance → worker: one ring per (source instance, worker), for the
  sources the query reads (``plan.inputs``: one, or the two sides of a join);
* worker → sink: one ring per (worker, sink) for each sink reading ``"main"``
  or a late output (the workers make both);
* source instance → sink: one ring per (source instance, sink) for each sink
  reading a source's dead-letter output;
* source instance → sink, **direct**: when the plan has no Ring 0 work
  (``Plan.direct``: every step runs in the sources, no join, no final stage), one
  ring per (source instance, "main" sink) carrying the rows, their barriers and
  watermarks, instead of the workers' rings: a row crosses one ring instead of
  two. The workers still get each source's barriers and watermarks (and no
  rows: their rings are ``CONTROL_CAPACITY`` bytes) and report each epoch, so
  the epoch protocol is unchanged; they write to no sink.

Every ring has ``topology.ring_capacity`` bytes. ``specs()`` pairs the rings
with the children that use them (``engine.child.ChildSpec``, with the CPU each
is pinned to and what the manifest recorded for it). ``close()`` closes and
unlinks them all (the coordinator does it whatever happens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.child import ChildSpec
from engine.control import SinkRestore
from engine.pipeline import Pipeline
from engine.shm import Ring

CONTROL_CAPACITY = 1 << 16  # a direct plan's source -> worker ring: a schema, barriers, marks


@dataclass
class Wiring:
    capacity: int
    rings: list[Ring] = field(default_factory=list)
    labelled: list[tuple[str, str, Ring]] = field(default_factory=list)  # (from, to, ring)
    to_worker: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # per worker
    to_sink: dict[str, list[str]] = field(default_factory=dict)  # sink -> its input rings
    dead_letter: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # source inst
    direct: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # source inst

    @classmethod
    def create(
        cls, pipeline: Pipeline, inputs: list[str], workers: int, capacity: int,
        direct: bool = False,
    ) -> Wiring:  # fmt: skip
        w = cls(capacity)
        for s in pipeline.sources:
            for i in range(s.parallelism):
                w.dead_letter[(s.name, i)] = []
                if s.name in inputs:
                    control = min(capacity, CONTROL_CAPACITY) if direct else None  # no rows
                    w.to_worker[(s.name, i)] = [
                        w._ring(f"source {s.name} {i}", f"worker {k}", control)
                        for k in range(workers)
                    ]
        for k in pipeline.sinks:
            if w.from_sources(pipeline, k.input):
                rings = []
                for s in pipeline.sources:
                    if s.on_error == "dead_letter" and s.dead_letter_output == k.input:
                        for i in range(s.parallelism):
                            name = w._ring(f"source {s.name} {i}", f"sink {k.name}")
                            w.dead_letter[(s.name, i)].append(name)
                            rings.append(name)
                w.to_sink[k.name] = rings
            elif direct and k.input == "main":
                w.to_sink[k.name] = []
                for s in pipeline.sources:
                    for i in range(s.parallelism):
                        name = w._ring(f"source {s.name} {i}", f"sink {k.name}")
                        w.direct.setdefault((s.name, i), []).append(name)
                        w.to_sink[k.name].append(name)
            else:
                w.to_sink[k.name] = [
                    w._ring(f"worker {n}", f"sink {k.name}") for n in range(workers)
                ]
        return w

    def _ring(self, source: str, target: str, capacity: int | None = None) -> str:
        ring = Ring.create(capacity or self.capacity)
        self.rings.append(ring)
        self.labelled.append((source, target, ring))
        return ring.name

    def worker_outputs(self, pipeline: Pipeline, worker: int) -> tuple[list[str], list[str]]:
        """The rings worker ``worker`` writes, and the stream each carries."""
        rings, streams = [], []
        for k in pipeline.sinks:
            if not self.from_sources(pipeline, k.input) and not (
                self.direct and k.input == "main"
            ):
                rings.append(self.to_sink[k.name][worker])
                streams.append(k.input)
        return rings, streams

    @staticmethod
    def from_sources(pipeline: Pipeline, stream: str) -> bool:
        """Whether ``stream`` is a dead-letter output (made by sources, not workers)."""
        return any(
            s.on_error == "dead_letter" and s.dead_letter_output == stream for s in pipeline.sources
        )

    def specs(
        self, pipeline: Pipeline, plan, topology, manifest, common: dict[str, Any]
    ) -> list[ChildSpec]:  # type: ignore[no-untyped-def]
        """Every child's spec, in spawn order (sinks, workers, sources), each with its rings,
        its CPU, its counter slot and what ``manifest`` (or None) recorded for it."""
        p, t, w = pipeline, topology, self
        base = {
            **common,
            "pipeline": msgspec.json.encode(p),
            "workers": len(t.workers),
            "schemas": {k: v.serialize().to_pybytes() for k, v in plan.source_schemas.items()},
            "ring1_cpus": list(t.connectors),
        }
        cpus = iter(t.connectors * (len(p.sinks) + sum(s.parallelism for s in p.sources)))
        specs: list[ChildSpec] = []

        def add(role: str, index: int, name: str, cpu: int, restore: object, **kw: Any) -> None:
            specs.append(ChildSpec(role=role, index=index, name=name, cpu=cpu, slot=len(specs),
                                   restore=msgspec.json.encode(restore), **base, **kw))  # fmt: skip

        # a direct sink's inputs, one per source instance (in wiring order), and their timeouts
        instance_idle = [s.idle_timeout_ms / 1000 for s in p.sources for _ in range(s.parallelism)]
        for n, k in enumerate(p.sinks):
            restore = None
            if manifest is not None:
                committable = (manifest.sink_committables.get(k.name) or [None])[0]
                restore = SinkRestore(manifest.epoch, committable, _state(manifest, "sink", n),
                                      committed=manifest.sink_status == "committed")
            direct = bool(self.direct) and k.input == "main"  # its inputs: the source instances
            add("sink", n, k.name, next(cpus), restore, in_rings=w.to_sink[k.name], out_rings=[],
                in_idle_s=instance_idle if direct else [])  # fmt: skip
        for i in range(len(t.workers)):
            ins, ports, idle = [], [], []
            for port, src in enumerate(plan.inputs):
                cfg = p.source_named(src)
                for j in range(cfg.parallelism):
                    ins.append(w.to_worker[(src, j)][i])
                    ports.append(port)  # (direct: no rows come to tell busy from idle)
                    idle.append(0.0 if w.direct else cfg.idle_timeout_ms / 1000)
            outs, streams = w.worker_outputs(p, i)
            add("worker", i, "", t.workers[i], _state(manifest, "worker", i), in_rings=ins,
                in_ports=ports, in_idle_s=idle, out_rings=outs, out_streams=streams)  # fmt: skip
        for s in p.sources:
            offsets = manifest.source_offsets.get(s.name) if manifest is not None else None
            for j in range(s.parallelism):
                pos = offsets[j].get("position") if offsets is not None else None
                marks = offsets[j].get("watermark") if offsets is not None else None
                add("source", j, s.name, next(cpus), pos, in_rings=[],
                    restore_marks=msgspec.json.encode(marks),
                    out_rings=w.to_worker.get((s.name, j), []),
                    direct_rings=w.direct.get((s.name, j), []),
                    dead_letter_rings=w.dead_letter[(s.name, j)])  # fmt: skip
        return specs

    def close(self) -> None:
        for ring in self.rings:
            ring.close()
        self.rings, self.labelled = [], []


def _state(manifest, role: str, index: int):  # type: ignore[no-untyped-def]
    """The state file ``manifest`` (or None) recorded for ``role`` ``index``, if any."""
    if manifest is None:
        return None
    return next((r for r in manifest.state_files if r.role == role and r.index == index), None)
