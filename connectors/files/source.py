"""Read CSV, JSON-lines or Parquet files as a replayable source (built-in type ``"files"``).

Options:

* ``path`` (required): one file, or a directory. A directory's files that
  match ``pattern`` (a ``pathlib`` glob, default ``"*"``; ``"**/*.csv"``
  recurses) are read one after another in name order (names relative to the
  directory). Names starting with ``.`` or ``_`` are ignored (temp files,
  ``_SUCCESS``).
* ``format``: ``csv`` | ``jsonl`` | ``parquet``; default: each file's extension.
* ``schema``: ``{col = "int64", ...}``; default: inferred once, from the first
  file in name order, and then enforced: a file whose columns differ (names,
  order or types) raises ``SchemaMismatchError`` naming it. CSV and JSON
  values are converted to the schema's types.
* ``batch_rows`` (default 65_536): most rows per polled batch.
* ``follow`` (default false): keep watching the directory. New files are
  picked up by later polls, in name order (a new name that sorts before files
  already read is still read). Bounded (false): the files present at ``open``
  (or ``restore``) are read, then ``finished()``.

Files are assumed complete when they appear: write them elsewhere (or under
a dot-name) and rename them into the directory. A file that changes after it
was read is not read again. With ``instances`` > 1, instance ``j`` reads the
files whose ``crc32(name) % instances == j``.

Position: ``{"file": name or None, "row": rows already returned from it,
"done": [names finished]}``; ``restore`` continues right after ``row`` (whole
Parquet row groups are skipped without reading them; CSV/JSON rows before it
are read and dropped). ``SourceBatch.offset`` is the row number, within its
file, of the last row returned. Reading is vectorised: Arrow's streaming CSV
and JSON readers, Parquet ``iter_batches``.

Not guaranteed: files appended to in place, deleted while being read, or
removed between a checkpoint and its restore (``ConnectorError``).
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from msgspec import Meta

from connectors.base import ConnectorConfig, Source, SourceBatch, SourceCheckpoint
from connectors.files import format_of, same_columns
from connectors.options import Options
from engine.errors import CheckpointError, ConfigError, ConnectorError, SchemaMismatchError
from engine.typenames import parse_schema


class FilesSourceOptions(Options, frozen=True):
    path: Annotated[str, Meta(min_length=1)]
    pattern: str = "*"
    format: Literal["csv", "jsonl", "parquet"] | None = None
    schema: dict[str, str] | None = None
    batch_rows: Annotated[int, Meta(ge=1)] = 65_536
    follow: bool = False

_TICK_S = 0.05  # data_ready: how often the directory is looked at
_SETTLE_S = 1.0
# Arrow's messages for a value or field that does not fit the schema (CSV, JSON).
_MISMATCH = (
    "conversion error",
    "unexpected field",
    "changed from",
)  # a directory changed this recently is listed again even if its mtime is the same


class _FileReader:
    """Batches of one file, in order; ``schema`` is the file's own (as read)."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema | None, batch_rows: int) -> None:
        self.path = path
        self._batches: Any
        self._closer: Any
        self._pf: pq.ParquetFile | None = None
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            self._pf = pf
            self.schema = pf.schema_arrow
            self._batch_rows = batch_rows
            self._batches = pf.iter_batches(batch_size=batch_rows)
            self._closer = pf
        elif fmt == "csv":
            convert = pacsv.ConvertOptions(column_types=schema) if schema is not None else None
            reader = pacsv.open_csv(path, convert_options=convert)
            self.schema, self._batches, self._closer = reader.schema, iter(reader), reader
        else:
            parse = None
            if schema is not None:
                parse = pajson.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="error"
                )
            reader = pajson.open_json(path, parse_options=parse)
            self.schema, self._batches, self._closer = reader.schema, iter(reader), reader

    def next(self) -> pa.RecordBatch | None:
        return next(self._batches, None)

    def skip(self, rows: int) -> pa.RecordBatch | None:
        """Drop the first ``rows`` rows; return the rest of the batch they ended in (or None)."""
        if self._pf is not None and rows:
            meta, group, left = self._pf.metadata, 0, rows
            while group < meta.num_row_groups and meta.row_group(group).num_rows <= left:
                left -= meta.row_group(group).num_rows
                group += 1
            groups = list(range(group, meta.num_row_groups))
            self._batches = (
                iter(())
                if not groups
                else self._pf.iter_batches(batch_size=self._batch_rows, row_groups=groups)
            )
            rows = left
        while rows:
            batch = self.next()
            if batch is None:
                raise CheckpointError(f"{self.path} has fewer rows than the checkpoint says")
            if batch.num_rows > rows:
                return batch.slice(rows)
            rows -= batch.num_rows
        return None

    def close(self) -> None:
        self._closer.close()


class FilesSource(Source):
    """See the module docstring for options, positions and guarantees."""

    options_type = FilesSourceOptions

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        opts: FilesSourceOptions = self.options
        self.root = Path(opts.path)
        self.pattern: str = opts.pattern
        self.format: str | None = opts.format
        self.batch_rows: int = opts.batch_rows
        self.follow = opts.follow
        if self.root.is_dir():
            self._dir: Path | None = self.root
        elif self.root.is_file():
            self._dir = None
            if self.follow:
                raise ConfigError(f"files source follow=true needs a directory, not {self.root}")
        else:
            raise ConfigError(f"files source path={str(self.root)!r} does not exist")
        self._listed_at = 0.0
        self._dir_mtime = -1
        self._reader: _FileReader | None = None
        self._buf: pa.RecordBatch | None = None
        self._file: str | None = None
        self._row = 0
        self._done: set[str] = set()
        everything = self._list(share_only=False)
        self._known: set[str] = {n for n in everything if self._mine(n)}
        self._pending = sorted(self._known)
        if opts.schema is not None:
            self._schema = parse_schema(opts.schema, f"sources.{config.name}.schema")
        elif everything:
            first = _FileReader(self._path(everything[0]), self._format(everything[0]), None, 1)
            first.close()
            self._schema = pa.schema([f.with_nullable(True) for f in first.schema])
        else:
            raise ConfigError(
                f"files source {config.name!r}: no file matches {self.pattern!r} in "
                f"{str(self.root)!r} yet, so the schema cannot be inferred; set schema = {{...}}"
            )

    # -- listing ------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.root if self._dir is None else self._dir / name

    def _format(self, name: str) -> str:
        return format_of(self._path(name), self.format)

    def _mine(self, name: str) -> bool:
        n = self.config.instances
        return n == 1 or zlib.crc32(name.encode()) % n == self.config.instance

    def _list(self, share_only: bool = True) -> list[str]:
        """The names to read, in name order (this instance's share unless told otherwise)."""
        if self._dir is None:
            names = [self.root.name]
        else:
            names = sorted(
                p.relative_to(self._dir).as_posix()
                for p in self._dir.glob(self.pattern)
                if p.is_file()
                and not any(part[0] in "._" for part in p.relative_to(self._dir).parts)
            )
        return [n for n in names if self._mine(n)] if share_only else names

    def _refresh(self) -> bool:
        """List the directory again if it may have changed; True if new files were found."""
        if self._dir is None:
            return False
        try:
            mtime = self._dir.stat().st_mtime_ns
        except OSError as exc:
            raise ConnectorError(f"files source {self.config.name!r}: {exc}") from exc
        settled = self._listed_at - mtime / 1e9 > _SETTLE_S and "**" not in self.pattern
        if mtime == self._dir_mtime and settled:
            return False
        self._dir_mtime, self._listed_at = mtime, time.time()
        new = [n for n in self._list() if n not in self._known]
        if not new:
            return False
        self._known.update(new)
        self._pending = sorted({*self._pending, *new})
        return True

    # -- reading ------------------------------------------------------------------------

    def _start(self, name: str, skip: int) -> None:
        path = self._path(name)
        try:
            reader = _FileReader(path, self._format(name), self._schema, self.batch_rows)
        except FileNotFoundError as exc:
            raise ConnectorError(f"files source {self.config.name!r}: {path} vanished") from exc
        except (pa.ArrowException, OSError) as exc:
            raise self._read_error(path, exc) from exc
        if not same_columns(reader.schema, self._schema):
            reader.close()
            raise SchemaMismatchError(
                f"files source {self.config.name!r}: {path} has columns "
                f"{_describe(reader.schema)}, expected {_describe(self._schema)}"
            )
        try:
            self._buf = reader.skip(skip)
        except pa.ArrowException as exc:
            reader.close()
            raise self._read_error(path, exc) from exc
        except CheckpointError:
            reader.close()
            raise
        self._reader, self._file, self._row = reader, name, skip

    def _read_error(self, path: Path, exc: Exception) -> Exception:
        """A reader's error as ours: values that do not fit the schema are a schema mismatch."""
        text = f"files source {self.config.name!r}: {path}: {exc}"
        if isinstance(exc, pa.ArrowInvalid) and any(m in str(exc) for m in _MISMATCH):
            return SchemaMismatchError(text)
        return ConnectorError(text)

    def _end_file(self) -> None:
        assert self._reader is not None and self._file is not None
        self._reader.close()
        self._done.add(self._file)
        self._reader, self._file, self._row = None, None, 0

    def schema(self) -> pa.Schema:
        return self._schema

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        limit = max(1, min(max_records, self.batch_rows))
        while True:
            if self._buf is not None:
                out = self._buf.slice(0, limit)
                self._buf = self._buf.slice(limit) if self._buf.num_rows > limit else None
                self._row += out.num_rows
                out = pa.RecordBatch.from_arrays(out.columns, schema=self._schema)
                return SourceBatch(out, offset=self._row - 1)
            if self._reader is not None:
                try:
                    batch = self._reader.next()
                except pa.ArrowException as exc:
                    raise self._read_error(self._reader.path, exc) from exc
                if batch is None:
                    self._end_file()
                elif batch.num_rows:
                    self._buf = batch
                continue
            if not self._pending and self.follow:
                self._refresh()
            if not self._pending:
                return None
            self._start(self._pending.pop(0), 0)

    def finished(self) -> bool:
        return not (self.follow or self._pending or self._reader or self._buf is not None)

    def data_ready(self, timeout_s: float) -> bool:
        """True at once if rows or files are waiting; else watch the directory up to timeout."""
        if self._buf is not None or self._reader is not None or self._pending or not self.follow:
            return True
        deadline = time.monotonic() + timeout_s
        while not self._refresh():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_TICK_S, left))
        return True

    # -- positions ----------------------------------------------------------------------

    def checkpoint(self) -> SourceCheckpoint:
        return SourceCheckpoint({"file": self._file, "row": self._row, "done": sorted(self._done)})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        pos = checkpoint.position
        name, row, done = pos.get("file"), pos.get("row", 0), pos.get("done", [])
        if (
            not (name is None or isinstance(name, str))
            or not isinstance(row, int)
            or row < 0
            or not isinstance(done, list)
        ):
            raise CheckpointError(f"files source {self.config.name!r}: bad position {pos!r}")
        if name is not None and not self._mine(name):
            raise CheckpointError(
                f"files source {self.config.name!r}: {name!r} is not read by instance "
                f"{self.config.instance} of {self.config.instances}"
            )
        if self._reader is not None:
            self._reader.close()
        self._reader, self._buf, self._file, self._row = None, None, None, 0
        self._done = set(done)
        self._known = set(self._list()) | self._done
        self._pending = sorted(self._known - self._done - {name})
        if name is not None:
            if not self._path(name).is_file():
                raise ConnectorError(
                    f"files source {self.config.name!r}: {self._path(name)} was in the "
                    "checkpoint but is gone: cannot replay"
                )
            self._known.add(name)
            self._start(name, row)

    def supports_replay(self) -> bool:
        return True

    def metrics(self) -> dict[str, float]:
        return {"files_done": float(len(self._done)), "files_pending": float(len(self._pending))}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _describe(schema: pa.Schema) -> str:
    return "(" + ", ".join(f"{f.name}: {f.type}" for f in schema) + ")"
