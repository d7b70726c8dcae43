"""The pipeline file (TOML): sources, the query, sinks, checkpoints — typed, validated up front.

::

    [pipeline]
    name = "quickstart"
    delivery = "exactly-once"        # or "at-least-once" (default)

    [checkpoint]
    interval_ms = 1_000              # 0 = no checkpoints (and no recovery)
    dir = ".ringstream/checkpoints/quickstart"   # default: .ringstream/checkpoints/<name>
    keep = 3                         # manifests kept
    max_restarts = 3                 # automatic recoveries after a child crash
    restart_backoff_ms = 500         # doubled after each restart

    [[sources]]
    name = "events"
    type = "generator"               # built in, registered by entry point, or "pkg.mod:Class"
    parallelism = 1                  # source processes; each reads its share
    event_time = "ts"                # the event-time column (no watermarks without one)
    max_out_of_orderness_ms = 0      # watermark = max event time seen - this
    idle_timeout_ms = 0              # silent this long: stops holding the watermark (0 = never)
    batch_max_rows = 65_536          # the runtime batches polls up to this many rows ...
    batch_max_wait_ms = 100          # ... or this long
    retry = { max_retries = 5, base_ms = 50, cap_ms = 5_000 }   # transient errors only
    health_failures = 3              # consecutive failures before the connector is unhealthy
    on_error = "fail"                # a record it cannot read: "fail" the run (naming it) or
    dead_letter_output = "dead_letter"   # ... "dead_letter": rows of this stream, for a sink
    events = 20_000_000              # every other key is the connector's own option
    keys = 10_000

    [query]                          # steps run in every Ring 0 worker, in order
    [[query.steps]]
    op = "filter"
    where = "value > 0.5"
    [[query.steps]]
    op = "window"                    # also: filter, project, udf, group_by
    key = ["key"]
    time = "ts"
    window = { type = "tumbling", size_ms = 1_000 }   # hopping: slide_ms; session: gap_ms
    aggregates = ["count", "sum(value)", "avg(value)"]
    emit = "close"                   # or "update" (changelog with retractions)

    [[sinks]]
    name = "out"
    type = "files"                   # exactly-once directory of Parquet or JSON-lines files
    path = "out/quickstart"

    [metrics]                        # the Prometheus endpoint of the coordinator
    enabled = true
    port = 9464                      # taken (another pipeline): a free port, said at start
    bind = "127.0.0.1"               # anything else is reachable from other machines

A two-input query joins two sources: ``[query.join]`` (``type = "interval"``,
``"asof"`` or ``"inner"``, ``left``/``right`` source names, keys, bounds) with optional
``[[query.left_steps]]``/``[[query.right_steps]]`` before it; ``[[query.steps]]``
then run on the joined stream. ``[[query.final]]`` steps run once, in the sink
process, over the union of every worker's output (for global results such as
"the top auction per window": a ``window`` step with ``type = "input"``).
A window step's ``late_output = "NAME"`` sends its late rows to the sinks whose
``input = "NAME"`` (default input: ``"main"``).

Environment variables override keys: ``RINGSTREAM_<PATH>`` where ``<PATH>`` is
the key path in upper case with ``__`` between parts and list indexes as
numbers, e.g. ``RINGSTREAM_SOURCES__0__EVENTS=1000000`` or
``RINGSTREAM_CHECKPOINT__INTERVAL_MS=0``. Values are read as TOML values
(numbers, booleans, quoted strings), falling back to a plain string.

Every error names the file (or variable), the key and the reason. Checks
that need the connectors (schemas, replay, exactly-once capability) and the
query plan run in ``engine.plan``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from engine import tomlfile
from engine.errors import ConfigError

ENV_PREFIX = "RINGSTREAM_"
FAULT_PREFIX = "RINGSTREAM_FAULT"  # engine.faults, not a config key

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]
Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Keys = str | list[str]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class RetryConfig(_Strict, kw_only=True):
    max_retries: NonNegative = 5
    base_ms: Positive = 50
    cap_ms: Positive = 5_000


SOURCE_RUNTIME_KEYS = frozenset(
    {
        "name",
        "type",
        "parallelism",
        "event_time",
        "max_out_of_orderness_ms",
        "idle_timeout_ms",
        "batch_max_rows",
        "batch_max_wait_ms",
        "retry",
        "health_failures",
        "on_error",
        "dead_letter_output",
        "partition_by",
    }
)
SINK_RUNTIME_KEYS = frozenset({"name", "type", "input", "retry", "health_failures"})


class SourceConfig(_Strict, kw_only=True):
    name: Name
    type: str
    parallelism: Positive = 1
    event_time: str | None = None
    max_out_of_orderness_ms: NonNegative = 0
    idle_timeout_ms: NonNegative = 0
    batch_max_rows: Positive = 65_536
    batch_max_wait_ms: NonNegative = 100
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    health_failures: Positive = 3
    on_error: Literal["fail", "dead_letter"] = "fail"  # a record the connector cannot read
    dead_letter_output: Name = "dead_letter"  # the stream bad records go to (a sink's input)
    partition_by: list[str] | None = None  # with no keyed step: keeps each key's rows in order
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class SinkConfig(_Strict, kw_only=True):
    name: Name
    type: str
    input: Name = "main"
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    health_failures: Positive = 3
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class FilterStep(_Strict, tag="filter", tag_field="op", kw_only=True):
    where: str


class ProjectStep(_Strict, tag="project", tag_field="op", kw_only=True):
    columns: dict[str, str] | list[str]  # name -> expression, or ["a", "b * 2 as c"]


class UdfStep(_Strict, tag="udf", tag_field="op", kw_only=True):
    function: str  # "package.module:callable"
    output_schema: dict[str, str] | None = None  # column -> type name; None = inferred


class WindowShape(_Strict, kw_only=True):
    type: Literal["tumbling", "hopping", "session", "input"]
    size_ms: NonNegative = 0
    slide_ms: NonNegative = 0
    gap_ms: NonNegative = 0


class WindowStep(_Strict, tag="window", tag_field="op", kw_only=True):
    key: Keys = msgspec.field(default_factory=list)
    time: str | None = None  # default: the source's event_time
    window: WindowShape
    aggregates: list[str]
    emit: Literal["close", "update"] = "close"
    allowed_lateness_ms: NonNegative = 0
    late_output: Name | None = None


class GroupByStep(_Strict, tag="group_by", tag_field="op", kw_only=True):
    key: Keys
    aggregates: list[str]
    emit: Literal["update", "close"] = "update"


class OverStep(_Strict, tag="over", tag_field="op", kw_only=True):
    key: Keys = msgspec.field(default_factory=list)
    time: str | None = None  # default: the source's event_time
    order_by: list[str] = msgspec.field(default_factory=list)  # ties in time, in this order
    rows: Positive  # the frame: this row and the rows - 1 rows of its key before it
    aggregates: list[str]


Step = FilterStep | ProjectStep | UdfStep | WindowStep | GroupByStep | OverStep


class JoinConfig(_Strict, kw_only=True):
    type: Literal["interval", "asof", "inner"]
    left: Name
    right: Name
    left_key: Keys
    right_key: Keys
    left_time: str | None = None  # default: each source's event_time
    right_time: str | None = None
    lower_ms: int = 0  # interval: lower <= right.time - left.time <= upper
    upper_ms: int = 0
    left_until: str | None = None  # interval: right.time <= this left column, not upper_ms
    tolerance_ms: NonNegative | None = None  # asof
    left_prefix: str = ""
    right_prefix: str = ""


class QueryConfig(_Strict, kw_only=True):
    steps: list[Step] = msgspec.field(default_factory=list)
    join: JoinConfig | None = None
    left_steps: list[Step] = msgspec.field(default_factory=list)
    right_steps: list[Step] = msgspec.field(default_factory=list)
    final: list[Step] = msgspec.field(default_factory=list)
    # where the stateless steps before the first keyed one run (engine.plan): "sources" saves
    # the rings the rows they drop; "workers" takes their CPU off a source-bound pipeline
    stateless_in: Literal["sources", "workers"] = "sources"


class CheckpointConfig(_Strict, kw_only=True):
    interval_ms: NonNegative = 1_000
    dir: str | None = None
    keep: Positive = 3
    max_restarts: NonNegative = 3
    restart_backoff_ms: NonNegative = 500


class MetricsConfig(_Strict, kw_only=True):
    enabled: bool = True
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464  # 0: any free port
    bind: str = "127.0.0.1"  # another address is an explicit choice (a warning says so)


class PipelineMeta(_Strict, kw_only=True):
    name: Name = "pipeline"
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"


class Pipeline(_Strict, kw_only=True):
    sources: list[SourceConfig]
    query: QueryConfig = msgspec.field(default_factory=QueryConfig)
    sinks: list[SinkConfig]
    pipeline: PipelineMeta = msgspec.field(default_factory=PipelineMeta)
    checkpoint: CheckpointConfig = msgspec.field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)

    def source_named(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(f"no source named {name!r} (sources: {[s.name for s in self.sources]})")

    @property
    def checkpoint_dir(self) -> Path:
        d = self.checkpoint.dir or f".ringstream/checkpoints/{self.pipeline.name}"
        return Path(d).absolute()

    @property
    def checkpointing(self) -> bool:
        return self.checkpoint.interval_ms > 0

    def hash(self) -> str:
        """A digest of everything that shapes state and output (not checkpoint tuning, nor
        where the stateless steps run: they keep no state, and a checkpoint holds no row in
        flight, so a run may resume with ``query.stateless_in`` changed)."""
        import hashlib

        query = msgspec.structs.asdict(self.query)
        del query["stateless_in"]
        shape = msgspec.json.encode([self.sources, query, self.sinks])
        return hashlib.sha256(shape).hexdigest()[:16]


def load(path: str | Path, environ: dict[str, str] | None = None) -> Pipeline:
    """Read, override from the environment, and validate a pipeline file (not the plan)."""
    path = Path(path)
    raw = tomlfile.read(path, "pipeline file")
    _apply_env(raw, os.environ if environ is None else environ)
    return parse(raw, str(path))


def parse(raw: dict[str, Any], where: str = "pipeline") -> Pipeline:
    """Validate a decoded pipeline table; connector options are split from runtime keys."""
    raw = dict(raw)
    for key, runtime in (("sources", SOURCE_RUNTIME_KEYS), ("sinks", SINK_RUNTIME_KEYS)):
        items = raw.get(key)
        if isinstance(items, list):
            raw[key] = [_split_options(item, runtime) for item in items]
    try:
        pipeline = msgspec.convert(raw, Pipeline)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {tomlfile.key_reason(exc, root=Pipeline, data=raw)}") from None
    for key, items in (("sources", pipeline.sources), ("sinks", pipeline.sinks)):
        if not items:
            raise ConfigError(f"{where}: {key}: at least one is needed")
        names = [i.name for i in items]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"{where}: {key}: duplicate name(s) {sorted(dup)}")
    return pipeline


def _split_options(item: object, runtime: frozenset[str]) -> object:
    if not isinstance(item, dict):
        return item
    if "options" in item:
        return item
    out = {k: v for k, v in item.items() if k in runtime}
    out["options"] = {k: v for k, v in item.items() if k not in runtime}
    return out


def _apply_env(raw: dict, environ: dict[str, str]) -> None:
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var.startswith(FAULT_PREFIX):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigError(f"environment {var}: empty key part")
        node: object = raw
        for i, part in enumerate(parts[:-1]):
            node = _step(node, part, var, parts[: i + 1])
        _set(node, parts[-1], _parse_value(environ[var]), var)


def _step(node: object, part: str, var: str, where: list[str]) -> object:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ConfigError(f"environment {var}: {'.'.join(where)} is not an index of the list")
        return node[int(part)]
    if isinstance(node, dict):
        if part not in node:
            node[part] = {}
        return node[part]
    raise ConfigError(f"environment {var}: {'.'.join(where[:-1])} is not a table")


def _set(node: object, part: str, value: object, var: str) -> None:
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        node[int(part)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"environment {var}: cannot set {part!r} there")


def _parse_value(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
