"""Exactly-once files sink: one file per epoch and instance, visible only once committed.

Options (``[[sinks]]`` table): ``path`` — a directory (required); ``format`` —
``"parquet"`` (default) or ``"jsonl"``; ``prefix`` — file name prefix
(default ``"part"``; must not start with ``.`` or ``_``).

Files, for epoch ``n`` of instance ``i`` (``name = <prefix>-<n:010d>-<i>.<ext>``)::

    <path>/.staging/<name>.inprogress   rows of the open epoch, being written
    <path>/.staging/<name>.staged       pre_commit(n): complete, fsynced, invisible
    <path>/<name>                       commit_epoch(n): renamed into place, visible

Protocol, per epoch (``connectors.base`` gives the call order):

1. ``begin_epoch(n)``; ``write_batch`` appends to the in-progress file, which
   is created by the first row (an epoch without rows creates no file).
2. ``pre_commit(n)`` finishes and fsyncs the file, renames it to ``.staged``,
   fsyncs ``.staging`` and returns ``{"files": [name], "rows": k}``
   (``{"files": [], "rows": 0}`` for an empty epoch).
3. ``commit_epoch(n, committable)`` renames each staged file to its final
   name and fsyncs ``path``. Idempotent: a file already in place is skipped
   (an identical staged copy of it is deleted; a different one is an error:
   the epoch ran twice with other rows). With ``committable=None`` it commits
   what is staged for ``n``. It also commits this instance's staged files of
   *earlier* epochs: a staged epoch ``k < n`` passed pre_commit and, since
   manifests are written in epoch order and a failed epoch is rolled back
   before a later one starts, manifest ``k`` exists — its commit may have been
   lost to a crash. A staged file that is neither staged nor in place any
   more is an error (its rows are lost), never silently skipped.
4. ``rollback_epoch(n)`` deletes this instance's staged and in-progress files
   of epochs ``>= n``; instance 0 also deletes those of instances ``>=
   instances`` (left by a run with a higher parallelism). It refuses (raises
   ``ConnectorError``) when ``path`` already holds committed files of this
   instance for epochs ``>= n``: they come from another run into the same
   directory, whose rows would otherwise be dropped as "already committed".

Readers see committed files only: everything uncommitted is under
``.staging``, which ``pyarrow.dataset.dataset(path)`` skips (its default
``ignore_prefixes`` is ``[".", "_"]``), as do ``read_committed`` and any
reader that ignores hidden directories. The rename is atomic, so a reader never
sees a partial file. Not guaranteed: exactly-once after a restore from a
manifest *older* than one whose files were already committed (the checkpoint
store only falls back like that when the newer manifest is corrupt).

JSON lines are written vectorised: each column is rendered to JSON text with
Arrow compute kernels (numbers and booleans cast to strings, non-finite floats
as ``null``, strings escaped and quoted, timestamps as ISO 8601 in UTC), the
columns are joined element-wise into one line per row, and the resulting
string array's data buffer is written as is. Only nested and binary columns
fall back to per-value ``msgspec.json.encode`` (a Python loop per row, for
that column only).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from msgspec import Meta

from connectors.base import ConnectorConfig, Sink, SinkCapabilities, WriteResult
from connectors.options import Options, invalid, parse_options
from engine.checkpoint.state import fsync_dir, publish
from engine.errors import ConfigError, ConnectorError, SchemaMismatchError

FORMATS = {"parquet": "parquet", "jsonl": "jsonl"}  # format -> file extension
STAGING = ".staging"


class FilesSinkOptions(Options, frozen=True):
    path: Annotated[str, Meta(min_length=1)]
    format: Literal["parquet", "jsonl"] = "parquet"
    prefix: str = "part"


def _where(config: ConnectorConfig) -> str:
    return f"sinks.{config.name}"


def _check_prefix(config: ConnectorConfig, opts: FilesSinkOptions) -> None:
    p = opts.prefix
    if not p or p[0] in "._" or "/" in p:
        raise ConfigError(
            invalid(
                _where(config), "prefix", p,
                "must be non-empty, without '/', and not start with '.' or '_' "
                "(readers would skip the files)",
            )  # fmt: skip
        )
_L = pa.large_string()
_CLASH = (
    "they come from another run, or from a restore older than an epoch that was committed; "
    "move them away or use another path or prefix"
)


class FilesSink(Sink):
    """One instance of the files sink (see the module docstring)."""

    options_type = FilesSinkOptions

    def check_config(self, config: ConnectorConfig) -> None:
        super().check_config(config)
        _check_prefix(config, parse_options(FilesSinkOptions, config.options, _where(config)))

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        opts: FilesSinkOptions = self.options
        _check_prefix(config, opts)
        self.format, self.prefix = opts.format, opts.prefix
        self.dir = Path(opts.path).absolute()
        self.staging = self.dir / STAGING
        self.staging.mkdir(parents=True, exist_ok=True)
        self._schema = config.schema
        stem = rf"^{re.escape(self.prefix)}-(\d+)-(\d+)\.{FORMATS[self.format]}"
        self._pattern = re.compile(stem + r"\.(inprogress|staged)$")
        self._final_pattern = re.compile(stem + "$")
        self._epoch: int | None = None
        self._writer: _ParquetWriter | _JsonlWriter | None = None
        self._rows = 0
        self._counters = {"rows": 0.0, "bytes": 0.0, "files_committed": 0.0}

    # --- names ----------------------------------------------------------------

    def file_name(self, epoch: int, instance: int | None = None) -> str:
        inst = self.config.instance if instance is None else instance
        return f"{self.prefix}-{epoch:010d}-{inst}.{FORMATS[self.format]}"

    def _staged(self) -> list[tuple[int, int, str, Path]]:
        """(epoch, instance, state, path) of every file of this sink under ``.staging``."""
        found: list[tuple[int, int, str, Path]] = []
        for p in self.staging.iterdir():
            m = self._pattern.match(p.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), m.group(3), p))
        return sorted(found)

    # --- writing --------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> None:
        self._abort_writer()
        self._epoch = epoch
        self._rows = 0

    def write_batch(self, batch: pa.RecordBatch) -> WriteResult:
        if self._epoch is None:
            raise ConnectorError(f"files sink {self.config.name!r}: write_batch before begin_epoch")
        if self._schema is None:
            self._schema = batch.schema
        elif not batch.schema.equals(self._schema, check_metadata=False):
            raise SchemaMismatchError(
                f"files sink {self.config.name!r}: batch schema {batch.schema} "
                f"differs from the stream's {self._schema}"
            )
        if batch.num_rows == 0:
            return WriteResult(0, 0)
        if self._writer is None:
            path = self.staging / (self.file_name(self._epoch) + ".inprogress")
            cls = _ParquetWriter if self.format == "parquet" else _JsonlWriter
            self._writer = cls(path, self._schema)
        self._writer.write(batch)
        self._rows += batch.num_rows
        self._counters["rows"] += batch.num_rows
        self._counters["bytes"] += batch.nbytes
        return WriteResult(batch.num_rows, batch.nbytes)

    def pre_commit(self, epoch: int) -> dict[str, Any] | None:
        if epoch != self._epoch:
            raise ConnectorError(
                f"files sink {self.config.name!r}: pre_commit({epoch}) but the open epoch is "
                f"{self._epoch}"
            )
        files: list[str] = []
        if self._writer is not None:
            self._writer.finish()
            name = self.file_name(epoch)
            publish(self._writer.path, self.staging / (name + ".staged"))
            files.append(name)
            self._writer = None
        rows, self._epoch, self._rows = self._rows, None, 0
        return {"files": files, "rows": rows}

    # --- committing -----------------------------------------------------------

    def commit_epoch(self, epoch: int, committable: dict[str, Any] | None = None) -> None:
        mine = self.config.instance
        names = {
            p.name.removesuffix(".staged")
            for e, inst, state, p in self._staged()
            if inst == mine and state == "staged" and e <= epoch
        }
        if committable is not None:
            names.update(committable.get("files", []))
        moved = False
        for name in sorted(names):
            if "/" in name or name.startswith("."):
                raise ConnectorError(f"files sink {self.config.name!r}: bad file name {name!r}")
            staged, final = self.staging / (name + ".staged"), self.dir / name
            if final.exists():
                if staged.exists():  # staged again after its commit: the epoch ran twice
                    if not filecmp.cmp(staged, final, shallow=False):
                        raise ConnectorError(
                            f"files sink {self.config.name!r}: epoch {epoch}: {final} is "
                            f"already committed with other rows than {staged}: {_CLASH}"
                        )
                    staged.unlink()
            elif staged.exists():
                os.replace(staged, final)
                moved = True
                self._counters["files_committed"] += 1
            else:
                raise ConnectorError(
                    f"files sink {self.config.name!r}: cannot commit epoch {epoch}: {final} "
                    f"does not exist and its staged file {staged} is missing"
                )
        if moved:
            fsync_dir(self.dir)
            fsync_dir(self.staging)

    def rollback_epoch(self, epoch: int) -> None:
        if self._epoch is not None and self._epoch >= epoch:
            self._abort_writer()
            self._epoch = None
        mine, instances = self.config.instance, self.config.instances
        clash = sorted(
            p.name
            for p in self.dir.iterdir()
            if (m := self._final_pattern.match(p.name)) and int(m[1]) >= epoch and int(m[2]) == mine
        )
        if clash:
            raise ConnectorError(
                f"files sink {self.config.name!r}: {self.dir} already holds committed files of "
                f"epoch >= {epoch} ({', '.join(clash[:3])}{', ...' if len(clash) > 3 else ''}): "
                f"{_CLASH}"
            )
        removed = False
        for e, inst, _, p in self._staged():
            if e >= epoch and (inst == mine or (mine == 0 and inst >= instances)):
                p.unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_dir(self.staging)

    def _abort_writer(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    # --- the rest of the contract ----------------------------------------------

    def capabilities(self) -> SinkCapabilities:
        return SinkCapabilities(exactly_once=True, idempotent=True, two_phase_commit=True)

    def metrics(self) -> dict[str, float]:
        return dict(self._counters)

    def close(self) -> None:
        """Drop an epoch that was not pre-committed; staged files stay for the next commit."""
        self._abort_writer()
        self._epoch = None


# --- file writers -------------------------------------------------------------


class _ParquetWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self._w = pq.ParquetWriter(str(path), schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._w.write_batch(batch)

    def finish(self) -> None:
        self._w.close()
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def abort(self) -> None:
        self._w.close()
        self.path.unlink(missing_ok=True)


class _JsonlWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self._f = open(path, "wb")  # noqa: SIM115 - closed in finish/abort

    def write(self, batch: pa.RecordBatch) -> None:
        self._f.write(encode_jsonl(batch))

    def finish(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


# --- JSON lines ---------------------------------------------------------------

_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}


def encode_jsonl(batch: pa.RecordBatch) -> memoryview:
    """One JSON object per row, each ending in a newline (see the module docstring)."""
    n = batch.num_rows
    if batch.num_columns == 0 or n == 0:
        return memoryview(b"{}\n" * n)
    parts: list[pa.Array | pa.Scalar] = []
    for i, (field, column) in enumerate(zip(batch.schema, batch.columns, strict=True)):
        key = ("{" if i == 0 else ",") + json.dumps(field.name) + ":"
        parts.append(pa.scalar(key, _L))
        parts.append(_json_text(column))
    parts.append(pa.scalar("}\n", _L))
    lines = pc.binary_join_element_wise(*parts, pa.scalar("", _L))
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + n])
    return memoryview(lines.buffers()[2])[start:end]


def _json_text(col: pa.Array) -> pa.Array:
    """The JSON text of each value as a large_string array without nulls."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
        t = col.type
    if pa.types.is_null(t):
        text = pa.nulls(len(col), _L)
    elif pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        text = pc.cast(col, _L)
    elif pa.types.is_duration(t):
        text = pc.cast(pc.cast(col, pa.int64()), _L)
    elif pa.types.is_floating(t):
        text = pc.if_else(pc.is_finite(col), pc.cast(col, _L), pa.scalar(None, _L))
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        text = _quote(_escape(pc.cast(col, _L)))
    elif pa.types.is_timestamp(t):
        if t.tz is not None:
            col = col.cast(pa.timestamp(t.unit, "UTC"))
        iso = pc.replace_substring(pc.cast(col, _L), " ", "T", max_replacements=1)
        text = _quote(iso)
    elif pa.types.is_date(t) or pa.types.is_time(t):
        text = _quote(pc.cast(col, _L))
    else:  # nested, binary, ...: per-value Python, this column only
        encode = msgspec.json.encode
        text = pa.array([encode(v).decode() for v in col.to_pylist()], _L)
    return pc.fill_null(text, pa.scalar("null", _L))


def _escape(s: pa.Array) -> pa.Array:
    s = pc.replace_substring(s, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    if pc.any(pc.match_substring_regex(s, "[\\x00-\\x1f]")).as_py():
        for code in range(0x20):
            s = pc.replace_substring(s, chr(code), _ESCAPES.get(code, f"\\u{code:04x}"))
    return s


def _quote(s: pa.Array) -> pa.Array:
    quote = pa.scalar('"', _L)
    return pc.binary_join_element_wise(quote, s, quote, pa.scalar("", _L))


# --- reading ------------------------------------------------------------------


def read_committed(path: str | Path, schema: pa.Schema | None = None) -> pa.Table:
    """Every committed file under ``path`` (not ``.staging``), in (epoch, instance) order.

    ``schema`` types the JSON lines files (their values are otherwise inferred)
    and is the schema of the empty result when nothing is committed.
    """
    root = Path(path)
    files = [
        p
        for p in root.iterdir()
        if p.is_file() and p.name[0] not in "._" and p.suffix in (".parquet", ".jsonl")
    ]
    files.sort(key=_commit_order)
    tables: list[pa.Table] = []
    for p in files:
        if p.suffix == ".parquet":
            tables.append(pq.read_table(p, schema=schema))
        else:
            options = pa_json.ParseOptions(explicit_schema=schema) if schema else None
            tables.append(pa_json.read_json(p, parse_options=options))
    if not tables:
        return (schema or pa.schema([])).empty_table()
    return pa.concat_tables(tables)


def _commit_order(p: Path) -> tuple[int, int, str]:
    m = re.match(r"^.*-(\d+)-(\d+)\.[a-z]+$", p.name)
    return (int(m.group(1)), int(m.group(2)), p.name) if m else (-1, -1, p.name)
