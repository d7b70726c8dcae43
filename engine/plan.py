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
  partial results. With more than one worker, partition key columns must be
  integers and must come unchanged from the source.
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

    @classmethod
    def build(
        cls, pipeline: Pipeline, workers: int, schemas: dict[str, pa.Schema] | None = None
    ) -> Plan:
        """Check everything; ``schemas`` given (in a child): trust them, open no source."""
        replay: dict[str, bool] = {}
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
        graph = plan.worker_graph()
        plan.output_schema = graph.output_schema
        plan.late_schemas = graph.late_schemas()
        plan.final_schema = plan.final_chain().output_schema
        plan.partition_keys = plan._partitioning(graph)
        if replay:  # first: a guarantee that cannot hold matters more than an option
            plan._check_delivery()
        plan._check_sinks()
        return plan

    def worker_graph(self) -> WorkerGraph:
        p, q = self.pipeline, self.pipeline.query
        if q.join is None:
            s = p.source_named(self.inputs[0])
            pre = build_chain(q.steps, self.source_schemas[s.name], s.event_time, "query.steps")
            return WorkerGraph([pre], None, None)
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
            if j.type == "interval":
                from ring0.operators.join import IntervalJoin

                join: Operator = IntervalJoin(
                    left.output_schema, right.output_schema, keys_of(j.left_key),
                    keys_of(j.right_key), lt, rt, j.lower_ms, j.upper_ms,
                    left_prefix=j.left_prefix, right_prefix=j.right_prefix,
                )  # fmt: skip
            else:
                from ring0.operators.join import AsofJoin

                join = AsofJoin(
                    left.output_schema, right.output_schema, keys_of(j.left_key),
                    keys_of(j.right_key), lt, rt, tolerance_ms=j.tolerance_ms,
                    left_prefix=j.left_prefix, right_prefix=j.right_prefix,
                )  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(f"query.join: {exc}") from None
        post = build_chain(q.steps, join.output_schema, None, "query.steps")
        return WorkerGraph([left, right], join, post)

    def final_chain(self) -> Chain:
        return build_chain(self.pipeline.query.final, self.output_schema, None, "query.final")

    def final_graph(self) -> WorkerGraph:
        """``[[query.final]]`` as the graph a "main" sink runs (an empty one passes rows on)."""
        return WorkerGraph([self.final_chain()], None, None)

    def _partitioning(self, graph: WorkerGraph) -> dict[str, list[str] | None]:
        q = self.pipeline.query
        if q.join is not None:
            keys = {q.join.left: keys_of(q.join.left_key), q.join.right: keys_of(q.join.right_key)}
            stateful = [op for op in graph.post.ops if _keyed(op) is not None] if graph.post else []
            for name, k in keys.items():
                self._check_key_from_source(name, k, "query.join")
            j = q.join
            for op in stateful:
                left = [j.left_prefix + k for k in keys[j.left]]
                right = [j.right_prefix + k for k in keys[j.right]]
                if not set(left) <= set(_keyed(op) or []):
                    _require_superset(op, right, "query.steps")
            return keys  # type: ignore[return-value]
        name = self.inputs[0]
        ops = graph.pre[0].ops
        part: list[str] | None = None
        for i, op in enumerate(ops):
            k = _keyed(op)
            if k is None:
                continue
            if part is None:
                if not k:  # a global aggregate: batches round-robin
                    return {name: None}
                self._check_key_from_source(name, k, f"query.steps[{i}]", ops[:i])
                part = k
            else:
                _require_superset(op, part, f"query.steps[{i}]")
        return {name: part}

    def _check_key_from_source(
        self, source: str, key: list[str], where: str, before: list[Operator] | None = None
    ) -> None:
        schema = self.source_schemas[source]
        for col in key:
            if schema.get_field_index(col) < 0:
                raise ConfigError(
                    f"{where}: key column {col!r} must come unchanged from source {source!r} "
                    f"(rows are partitioned by it there; source columns: {schema.names})"
                )
            for op in before or []:
                from ring0.operators.project import Project

                expr = op.exprs.get(col) if isinstance(op, Project) else None
                if expr is not None and expr.column_ref != col:
                    raise ConfigError(
                        f"{where}: key column {col!r} is redefined by a project step before it; "
                        "partitioning needs the source's own column"
                    )
            if self.workers > 1 and not pa.types.is_integer(schema.field(col).type):
                raise ConfigError(
                    f"{where}: key column {col!r} has type {schema.field(col).type}; with "
                    f"{self.workers} workers rows are partitioned by integer keys only"
                )

    def dead_letter_outputs(self) -> dict[str, list[str]]:
        """Dead-letter output name -> the sources that send their bad records there."""
        out: dict[str, list[str]] = {}
        for s in self.pipeline.sources:
            if s.on_error == "dead_letter":
                out.setdefault(s.dead_letter_output, []).append(s.name)
        return out

    def _check_sinks(self) -> None:
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
            try:
                cls().check_config(ConnectorConfig(s.name, dict(s.options)))
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
        streams = {f"sources.{k}": v for k, v in self.source_schemas.items()}
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
            sink.config = ConnectorConfig(k.name, dict(k.options))
            if not sink.capabilities().exactly_once:
                raise DeliveryGuaranteeError(
                    f"pipeline.delivery: exactly-once needs exactly-once sinks; sink "
                    f"{k.name!r} ({k.type}) is not"
                )

    def describe(self) -> str:
        p = self.pipeline
        srcs = ", ".join(
            f"{s.name} ({s.type} x{s.parallelism}, partitioned by "
            f"{self.partition_keys.get(s.name) or 'batch'})"
            for s in p.sources
        )
        sinks = ", ".join(f"{k.name} ({k.type} <- {k.input})" for k in p.sinks)
        ckpt = (
            f"checkpoints every {p.checkpoint.interval_ms} ms in {p.checkpoint_dir}"
            if p.checkpointing
            else "no checkpoints"
        )
        return (
            f"pipeline {p.pipeline.name!r} ({p.pipeline.delivery}, {ckpt}): sources {srcs} -> "
            f"{self.workers} worker(s) -> output {self.final_schema.names} -> sinks {sinks}"
        )


def _keyed(op: Operator) -> list[str] | None:
    """The grouping key of a stateful keyed operator, [] for a global one, None if stateless."""
    key = getattr(op, "key", None)
    if key is None:
        return None
    return list(key)


def _require_superset(op: Operator, part: list[str], where: str) -> None:
    key = _keyed(op) or []
    if not set(part) <= set(key):
        raise ConfigError(
            f"{where}: groups by {key} but rows are partitioned by {part}; a result that "
            "combines partitions belongs in [[query.final]]"
        )
