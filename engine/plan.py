"""The query plan: connectors resolved, schemas known, every step checked before a child starts.

``Plan.build(pipeline, workers)`` opens each source once (in the
coordinator, to learn its schema and whether it can replay) and builds every
operator once against the schemas flowing into it, so a wrong column, type or
expression is a ``ConfigError`` at ``validate`` time, never mid-run. The
workers and the sink rebuild the same operators from the same pipeline
(``worker_graph()``, ``final_chain()``).

Decisions written down here:

* Partitioning: rows are split by a hash of the *partition key*: the join
  keys of each side, else the key of the first keyed stateful step. Every
  later stateful step in the workers must group by a superset of it (so one
  key's rows meet in one worker); a global step (no key) partitions by batch,
  round-robin, and needs a ``[[query.final]]`` stage to merge the workers'
  partial results. A key may be of any key type (``engine.typenames.is_key_type``;
  ``ring1.partition`` hashes it) and may be computed by a step before it.
* Where steps run: the stateless steps (``filter``, ``project``, ``udf``) before
  the first stateful one of each input run in that input's source processes
  (``source_steps``), so a computed key can partition and filtered rows never
  cross a ring; the workers keep the same operators (same indices, same
  snapshots) and start each input's chain after them. ``describe()`` (printed
  by ``validate``) says where each step runs. ``query.stateless_in =
  "workers"`` keeps them in the workers instead (for a pipeline whose sources
  are its busiest processes); a partition key must then be a source column.
* A restart must rebuild exactly the same operators: the pipeline hash (in
  every manifest) covers sources, query and sinks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from connectors import registry
from connectors.base import DEAD_LETTER_SCHEMA, ConnectorConfig, Source
from engine.errors import ConfigError, DeliveryGuaranteeError, RingstreamError
from engine.pipeline import Pipeline, SourceConfig
from engine.placement import partitioning, placement, stateless_prefix
from engine.steps import build_chain, keys_of
from ring0.graph import Chain, WorkerGraph
from ring0.operators.base import Operator


def open_source(cfg: SourceConfig, instance: int = 0) -> Source:
    """Resolve, construct and open one instance of a source (errors name the source)."""
    try:
        cls = registry.resolve_source(cfg.type)
    except ConfigError as exc:
        raise type(exc)(f"sources.{cfg.name}.type: {exc}") from None
    src = cls()
    try:
        src.open(ConnectorConfig(cfg.name, dict(cfg.options), instance, cfg.parallelism))
    except RingstreamError as exc:
        raise ConfigError(_named(f"sources.{cfg.name}", exc)) from None
    return src


def _named(where: str, exc: Exception) -> str:
    """``exc``'s message, prefixed with ``where`` unless it already starts with it."""
    text = str(exc)
    return text if text.startswith(where) else f"{where}: {text}"


@dataclass
class Plan:
    pipeline: Pipeline
    workers: int
    source_schemas: dict[str, pa.Schema]
    inputs: list[str]  # source names in port order
    partition_keys: dict[str, list[str] | None]
    output_schema: pa.Schema  # what workers write to "main"
    final_schema: pa.Schema  # what "main" sinks receive (after [[query.final]])
    late_schemas: dict[str, pa.Schema] = field(default_factory=dict)
    replayable: dict[str, bool] = field(default_factory=dict)
    source_steps: dict[str, int] = field(default_factory=dict)  # leading steps run in a source
    ring_schemas: dict[str, pa.Schema] = field(default_factory=dict)  # source -> its rings
    direct: bool = False  # no Ring 0 work: sources write rows straight into "main" sinks' rings

    @classmethod
    def build(
        cls, pipeline: Pipeline, workers: int, schemas: dict[str, pa.Schema] | None = None
    ) -> Plan:
        """Check everything; ``schemas`` given (in a child): trust them, open no source."""
        replay: dict[str, bool] = {}
        in_child = schemas is not None
        if schemas is None:
            schemas = {}
            for s in pipeline.sources:
                src = open_source(s)
                try:
                    schemas[s.name] = src.schema()
                    replay[s.name] = bool(src.supports_replay())
                finally:
                    src.close()
        for s in pipeline.sources:
            if s.event_time is not None and schemas[s.name].get_field_index(s.event_time) < 0:
                raise ConfigError(
                    f"sources.{s.name}.event_time: column {s.event_time!r} is not in its schema "
                    f"(columns: {schemas[s.name].names})"
                )
        q = pipeline.query
        if q.join is None:
            if len(pipeline.sources) != 1:
                raise ConfigError(
                    f"query: {len(pipeline.sources)} sources need a [query.join] (or use one)"
                )
            if q.left_steps or q.right_steps:
                raise ConfigError("query.left_steps/right_steps: only with [query.join]")
            inputs = [pipeline.sources[0].name]
        else:
            inputs = [q.join.left, q.join.right]
            for key, side in zip(("left", "right"), inputs, strict=True):
                try:
                    pipeline.source_named(side)
                except ConfigError as exc:
                    raise ConfigError(f"query.join.{key}: {exc}") from None
            if len(pipeline.sources) != 2 or q.join.left == q.join.right:
                raise ConfigError("query.join: joins exactly two different sources")
        plan = cls(pipeline, workers, schemas, inputs, {}, pa.schema([]), pa.schema([]))
        plan.replayable = replay
        in_sources = q.stateless_in == "sources"
        plan.source_steps = {name: stateless_prefix(plan.steps_of(port)) if in_sources else 0
                             for port, name in enumerate(inputs)}  # fmt: skip
        graph = plan.worker_graph()
        for port, name in enumerate(inputs):  # what each source sends: its steps' output
            n = plan.source_steps[name]
            chain = graph.pre[port]
            plan.ring_schemas[name] = chain.ops[n - 1].output_schema if n else chain.input_schema
        plan.output_schema = graph.output_schema
        plan.late_schemas = graph.late_schemas()
        plan.final_schema = plan.final_chain().output_schema
        for i, step in enumerate(q.final):  # (the sinks run it: no late stream leaves them)
            if getattr(step, "late_output", None) is not None:
                raise ConfigError(
                    f"query.final[{i}].late_output: late rows of a final step have no "
                    "stream to a sink; move the window into query.steps, or leave "
                    "late_output out (its late rows are then counted, not kept)"
                )
        plan.partition_keys = partitioning(plan, graph)
        q = pipeline.query
        plan.direct = (  # every step runs in the source; nothing for a worker to do with rows
            q.join is None and not q.final and not plan.late_schemas
            and plan.source_steps[inputs[0]] == len(q.steps)
            and any(k.input == "main" for k in pipeline.sinks)
        )  # fmt: skip
        if replay:  # first: a guarantee that cannot hold matters more than an option
            plan._check_delivery()
        plan._check_sinks(servers=not in_child)
        return plan

    def steps_of(self, port: int) -> list:  # type: ignore[type-arg]
        """The steps before the join on ``port`` (all of ``query.steps`` without a join)."""
        q = self.pipeline.query
        if q.join is None:
            return list(q.steps)
        return list(q.left_steps if port == 0 else q.right_steps)

    def source_chain(self, source: str) -> Chain | None:
        """The steps ``source``'s processes run before partitioning (None: none)."""
        n = self.source_steps.get(source, 0)
        if not n:
            return None
        port = self.inputs.index(source)
        where = "query.steps" if self.pipeline.query.join is None else (
            "query.left_steps" if port == 0 else "query.right_steps")  # fmt: skip
        s = self.pipeline.source_named(source)
        return build_chain(self.steps_of(port)[:n], self.source_schemas[source], s.event_time,
                           where)  # fmt: skip

    def ring_schema(self, source: str) -> pa.Schema:
        """What ``source`` writes into the workers' rings (after its own steps)."""
        return self.ring_schemas[source]

    def worker_graph(self) -> WorkerGraph:
        p, q = self.pipeline, self.pipeline.query
        skip = [self.source_steps.get(name, 0) for name in self.inputs]
        if q.join is None:
            s = p.source_named(self.inputs[0])
            pre = build_chain(q.steps, self.source_schemas[s.name], s.event_time, "query.steps")
            return WorkerGraph([pre], None, None, skip)
        j = q.join
        left_src, right_src = p.source_named(j.left), p.source_named(j.right)
        left = build_chain(
            q.left_steps, self.source_schemas[j.left], left_src.event_time, "query.left_steps"
        )
        right = build_chain(
            q.right_steps, self.source_schemas[j.right], right_src.event_time, "query.right_steps"
        )
        lt, rt = j.left_time or left_src.event_time, j.right_time or right_src.event_time
        if lt is None or rt is None:
            raise ConfigError("query.join: both sides need an event-time column")
        try:
            if j.type == "inner":
                from ring0.operators.join import InnerJoin

                if j.lower_ms or j.upper_ms or j.tolerance_ms is not None or j.left_until:
                    raise ConfigError(
                        'type = "inner" has no time bounds: leave lower_ms, upper_ms, '
                        'left_until and tolerance_ms out (or use type = "interval")'
                    )
                join: Operator = InnerJoin(
                    left.output_schema, right.output_schema, keys_of(j.left_key),
                    keys_of(j.right_key), lt, rt,
                    left_prefix=j.left_prefix, right_prefix=j.right_prefix,
                )  # fmt: skip
            elif j.type == "interval":
                from ring0.operators.join import IntervalJoin

                join = IntervalJoin(
                    left.output_schema, right.output_schema, keys_of(j.left_key),
                    keys_of(j.right_key), lt, rt, j.lower_ms, j.upper_ms,
                    left_prefix=j.left_prefix, right_prefix=j.right_prefix,
                    left_until=j.left_until,
                )  # fmt: skip
            else:
                from ring0.operators.join import AsofJoin

                if j.left_until is not None:
                    raise ConfigError('left_until is a bound of type = "interval"')

                join = AsofJoin(
                    left.output_schema, right.output_schema, keys_of(j.left_key),
                    keys_of(j.right_key), lt, rt, tolerance_ms=j.tolerance_ms,
                    left_prefix=j.left_prefix, right_prefix=j.right_prefix,
                )  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(f"query.join: {exc}") from None
        post = build_chain(q.steps, join.output_schema, None, "query.steps")
        return WorkerGraph([left, right], join, post, skip)

    def final_chain(self) -> Chain:
        return build_chain(self.pipeline.query.final, self.output_schema, None, "query.final")

    def final_graph(self) -> WorkerGraph:
        """``[[query.final]]`` as the graph a "main" sink runs (an empty one passes rows on)."""
        return WorkerGraph([self.final_chain()], None, None)

    def dead_letter_outputs(self) -> dict[str, list[str]]:
        """Dead-letter output name -> the sources that send their bad records there."""
        out: dict[str, list[str]] = {}
        for s in self.pipeline.sources:
            if s.on_error == "dead_letter":
                out.setdefault(s.dead_letter_output, []).append(s.name)
        return out

    def _check_sinks(self, servers: bool = True) -> None:
        dead = self.dead_letter_outputs()
        for name, sources in dead.items():
            if name == "main" or name in self.late_schemas:
                raise ConfigError(
                    f"sources.{sources[0]}.dead_letter_output: {name!r} is already the name of "
                    f"{'the main output' if name == 'main' else 'a late output'}; choose another"
                )
        streams = {"main", *self.late_schemas, *dead}
        taken = {s.input for s in self.pipeline.sinks}
        for name in sorted(set(self.late_schemas) - taken):
            raise ConfigError(
                f"late_output {name!r} has no sink: its late rows would be lost; add a "
                f'[[sinks]] with input = "{name}", or remove late_output to only count them'
            )
        for name, sources in sorted(dead.items()):
            if name not in taken:
                raise ConfigError(
                    f"sources.{sources[0]}.on_error: \"dead_letter\" sends bad records to "
                    f"{name!r}, which no sink reads; add a [[sinks]] with input = \"{name}\""
                )
        pname = self.pipeline.pipeline.name
        for s in self.pipeline.sinks:
            if s.input not in streams:
                raise ConfigError(
                    f"sinks.{s.name}.input: {s.input!r} is not a stream "
                    f"(streams: {sorted(streams)})"
                )
            try:
                cls = registry.resolve_sink(s.type)
            except ConfigError as exc:
                raise type(exc)(f"sinks.{s.name}.type: {exc}") from None
            if not servers:  # a child: the coordinator checked them; a server restarting
                continue  # now is the sink's own transient failure, not a config error
            try:
                cls().check_config(ConnectorConfig(s.name, dict(s.options), pipeline=pname))
            except ConfigError as exc:
                raise ConfigError(_named(f"sinks.{s.name}", exc)) from None

    def check_rings(self, capacity: int) -> None:
        """Refuse a ring capacity too small for a stream's frames (it would fail in a child).

        Every ring carries a SCHEMA frame, then batches cut to half a ring; the
        schema frame and a frame of one empty batch must fit in that half.
        """
        from engine.shm.arrow_codec import BatchEncoder
        from engine.shm.layout import FRAME_HEADER_SIZE

        limit = (capacity - FRAME_HEADER_SIZE) // 2
        streams = {f"sources.{k}": self.ring_schema(k) for k in self.inputs}
        streams["the main output"] = self.output_schema
        streams.update({f"late output {k!r}": v for k, v in self.late_schemas.items()})
        if self.dead_letter_outputs():
            streams["the dead-letter output"] = DEAD_LETTER_SCHEMA
        for name, schema in streams.items():
            empty = pa.RecordBatch.from_pylist([], schema=schema)
            need = max(schema.serialize().size, BatchEncoder.size_bound(empty)) + FRAME_HEADER_SIZE
            if need > limit:
                smallest = 1 << max(16, (2 * need + FRAME_HEADER_SIZE - 1).bit_length())
                raise ConfigError(
                    f"rings.capacity={capacity} is too small for {name}: its frames need "
                    f"{need} bytes and a ring takes frames of at most half its capacity; "
                    f"use rings.capacity = {smallest} or more"
                )

    def sink_schema(self, input_name: str) -> pa.Schema:
        if input_name == "main":
            return self.final_schema
        if input_name in self.late_schemas:
            return self.late_schemas[input_name]
        return DEAD_LETTER_SCHEMA

    def _check_delivery(self) -> None:
        p = self.pipeline
        if p.pipeline.delivery != "exactly-once":
            return
        if not p.checkpointing:
            raise DeliveryGuaranteeError(
                "pipeline.delivery: exactly-once needs checkpoints (checkpoint.interval_ms > 0)"
            )
        for s in p.sources:
            if not self.replayable[s.name]:
                raise DeliveryGuaranteeError(
                    f"pipeline.delivery: exactly-once needs replayable sources; source "
                    f"{s.name!r} ({s.type}) cannot replay from a checkpoint"
                )
        for k in p.sinks:
            sink = registry.resolve_sink(k.type)()
            sink.config = ConnectorConfig(k.name, dict(k.options), pipeline=p.pipeline.name)
            if not sink.capabilities().exactly_once:
                raise DeliveryGuaranteeError(
                    f"pipeline.delivery: exactly-once needs exactly-once sinks; sink "
                    f"{k.name!r} ({k.type}) is not"
                )

    def describe(self) -> str:
        p = self.pipeline
        def routed(name: str) -> str:
            if self.direct:  # (partition_by has nothing to spread: no worker sees the rows)
                return "in order, to the sinks"
            key = self.partition_keys.get(name)
            return "one worker, in order" if key == [] else f"partitioned by {key or 'batch'}"

        srcs = ", ".join(f"{s.name} ({s.type} x{s.parallelism}, {routed(s.name)})"
                         for s in p.sources)  # fmt: skip
        sinks = ", ".join(f"{k.name} ({k.type} <- {k.input})" for k in p.sinks)
        ckpt = (
            f"checkpoints every {p.checkpoint.interval_ms} ms in {p.checkpoint_dir}"
            if p.checkpointing
            else "no checkpoints"
        )
        placed = "; ".join(placement(self))
        return (
            f"pipeline {p.pipeline.name!r} ({p.pipeline.delivery}, {ckpt}): sources {srcs} -> "
            + ("" if self.direct else f"{self.workers} worker(s) -> ")
            + f"output {self.final_schema.names} -> sinks {sinks}"
            + (f"; steps: {placed}" if placed else "")
        )
