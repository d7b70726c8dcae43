"""The pipeline file (TOML): sources, the query, sinks — typed, validated up front.

::

    [pipeline]
    name = "quickstart"

    [[sources]]
    name = "events"
    type = "generator"            # the bounded/unbounded synthetic source
    events = 20_000_000           # 0 = unbounded
    keys = 10_000
    batch_rows = 65_536
    seed = 1
    events_per_second = 1_000_000 # event-time density (ms timestamps), not a rate limit
    max_out_of_orderness_ms = 0   # watermark = max event time seen - this
    parallelism = 1               # source processes; they split the stream by batch

    [query]                       # a keyed tumbling-window aggregation
    key = "key"
    time = "ts"
    window = { type = "tumbling", size_ms = 1_000 }
    aggregates = ["count", "sum(value)", "avg(value)"]   # count, sum, min, max, avg

    [[sinks]]
    name = "out"
    type = "parquet"
    path = "out/quickstart.parquet"   # relative to the current directory

Environment variables override keys: ``RINGSTREAM_<PATH>`` where ``<PATH>`` is
the key path in upper case with ``__`` between parts and list indexes as
numbers, e.g. ``RINGSTREAM_SOURCES__0__EVENTS=1000000`` or
``RINGSTREAM_SINKS__0__PATH=/tmp/x.parquet``. Values are read as TOML values
(numbers, booleans, quoted strings), falling back to a plain string.

Every error names the file (or variable), the key and the reason. This
version runs one source (with any parallelism) and one sink; joins of several
sources come with the operators issue.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pyarrow as pa

from connectors.generator import SCHEMA
from engine import tomlfile
from engine.errors import ConfigError
from ring0.operators.window import FUNCTIONS, Aggregate
from ring0.operators.window import check as check_window

ENV_PREFIX = "RINGSTREAM_"
_AGG = re.compile(r"^\s*(\w+)\s*(?:\(\s*(\w+)\s*\))?\s*$")

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]
Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class GeneratorSourceConfig(_Strict, tag="generator", tag_field="type", kw_only=True):
    name: Name
    events: NonNegative = 20_000_000
    keys: Positive = 10_000
    batch_rows: Positive = 65_536
    seed: int = 1
    events_per_second: Positive = 1_000_000
    max_out_of_orderness_ms: NonNegative = 0
    parallelism: Positive = 1


class ParquetSinkConfig(_Strict, tag="parquet", tag_field="type", kw_only=True):
    name: Name
    path: str


class WindowConfig(_Strict):
    type: Literal["tumbling"]
    size_ms: Positive


class QueryConfig(_Strict):
    key: str
    time: str
    window: WindowConfig
    aggregates: list[str]

    def parsed_aggregates(self) -> list[Aggregate]:
        out = []
        for i, text in enumerate(self.aggregates):
            m = _AGG.match(text)
            if not m or m.group(1) not in FUNCTIONS or (m.group(1) != "count") != bool(m.group(2)):
                raise ConfigError(
                    f"query.aggregates[{i}]: {text!r} is not an aggregate; write count, "
                    "sum(col), min(col), max(col) or avg(col)"
                )
            out.append(Aggregate(m.group(1), m.group(2)))
        return out


class PipelineMeta(_Strict):
    name: Name = "pipeline"


class Pipeline(_Strict, kw_only=True):
    sources: list[GeneratorSourceConfig]
    query: QueryConfig
    sinks: list[ParquetSinkConfig]
    pipeline: PipelineMeta = msgspec.field(default_factory=PipelineMeta)

    @property
    def source(self) -> GeneratorSourceConfig:
        return self.sources[0]

    @property
    def sink(self) -> ParquetSinkConfig:
        return self.sinks[0]


def load(path: str | Path, environ: dict[str, str] | None = None) -> Pipeline:
    """Read, override from the environment, and validate a pipeline file."""
    path = Path(path)
    raw = tomlfile.read(path, "pipeline file")
    _apply_env(raw, os.environ if environ is None else environ)
    try:
        pipeline = msgspec.convert(raw, Pipeline)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {tomlfile.key_reason(exc)}") from None
    for key, items in (("sources", pipeline.sources), ("sinks", pipeline.sinks)):
        if len(items) != 1:
            raise ConfigError(
                f"{path}: {key}: this version runs exactly one {key[:-1]}, got {len(items)}"
            )
    try:
        check(pipeline)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return pipeline


def check(pipeline: Pipeline) -> None:
    """Check the query against the source schema (raises ConfigError naming the key)."""
    q = pipeline.query
    aggregates = q.parsed_aggregates()
    try:
        check_window(q.key, q.time, q.window.size_ms, aggregates, SCHEMA)
    except ConfigError as exc:
        raise ConfigError(f"query: {exc}") from None
    if not pa.types.is_integer(SCHEMA.field(q.key).type):
        raise ConfigError(
            f"query.key: column {q.key!r} has type {SCHEMA.field(q.key).type}; sources "
            "partition by an integer key in this version"
        )


def _apply_env(raw: dict, environ: dict[str, str]) -> None:
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigError(f"environment {var}: empty key part")
        node: object = raw
        for i, part in enumerate(parts[:-1]):
            node = _step(node, part, var, parts[: i + 1], create=True)
        _set(node, parts[-1], _parse_value(environ[var]), var)


def _step(node: object, part: str, var: str, where: list[str], create: bool) -> object:
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
