"""Read CSV, JSON-lines or Parquet files as a replayable source (built-in type ``"files"``).

Options:

* ``path`` (required): one file, or a directory. A directory's files that
  match ``pattern`` (a ``pathlib`` glob, default ``"*"``; ``"**/*.csv"``
  recurses) are read one after another in name order (names relative to the
  directory). Names starting with ``.`` or ``_`` are ignored (temp files,
  ``_SUCCESS``).
* ``format``: ``csv`` | ``jsonl`` | ``parquet``; default: each file's extension.
* ``schema``: ``{col = "int64", ...}``; default: inferred once, from the
  first file in name order that is not empty (a column that is all null there
  becomes a string; so does a CSV or JSON column of bytes that are not UTF-8),
  and then enforced. CSV and JSON values are converted to the schema's types;
  columns are matched by name (a file with the same columns in another order
  is read as it is).
* ``batch_rows`` (default 65_536): most rows per polled batch.
* ``max_record_bytes`` (default 64 MiB): a longer record is a bad record.
* ``follow`` (default false): keep watching the directory. New files are
  picked up by later polls, in name order (a new name that sorts before files
  already read is still read). Bounded (false): the files present at ``open``
  (or ``restore``) are read, then ``finished()``.

Files are assumed complete when they appear: write them elsewhere (or under
a dot-name) and rename them into the directory. A file that changes after it
was read is not read again. With ``instances`` > 1, instance ``j`` reads the
files whose ``crc32(name) % instances == j``.

Bad records (``connectors.files.readers``): a value that does not fit its
column, a line with another number of fields, bytes that are not UTF-8 in a
string column, a record over ``max_record_bytes``, every record of a file
whose columns differ from the schema, a file that is not what its extension
says. With the source's ``on_error = "fail"`` (the default) the first one
raises ``BadRecordError`` naming the file, line, column and value; with
``"dead_letter"`` each is returned in ``SourceBatch.bad`` (with its raw text)
and reading goes on. Either way nothing is skipped silently: a bad record
counts as read (the position moves past it), and a good one is never dropped.

Position: ``{"file": name or None, "row": records already returned from it
(rows and bad records), "done": [names finished]}``; ``restore`` continues
right after ``row`` (whole Parquet row groups are skipped without reading
them; CSV/JSON records before it are read and dropped). When ``poll_batch``
raises, the position has not moved: the next poll reopens the file there.
``SourceBatch.offset`` is the record number, within its file, of the last row
returned. Reading is vectorised (Arrow's streaming CSV and JSON readers,
Parquet ``iter_batches``) until a file has a bad record; the rest of that
file is read a record at a time (``connectors.files.records``).

Not guaranteed: files appended to in place, deleted while being read, or
removed between a checkpoint and its restore (``ConnectorError``).
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Source, SourceBatch, SourceCheckpoint
from connectors.files import format_of
from connectors.files.readers import FileReader, infer_schema
from connectors.files.records import Segment
from connectors.options import Options
from engine.errors import BadRecordError, CheckpointError, ConfigError, ConnectorError
from engine.typenames import parse_schema


class FilesSourceOptions(Options, frozen=True):
    path: Annotated[str, Meta(min_length=1)]
    pattern: str = "*"
    format: Literal["csv", "jsonl", "parquet"] | None = None
    schema: dict[str, str] | None = None
    batch_rows: Annotated[int, Meta(ge=1)] = 65_536
    follow: bool = False
    max_record_bytes: Annotated[int, Meta(ge=1024)] = 64 << 20

_TICK_S = 0.05  # data_ready: how often the directory is looked at
_SETTLE_S = 1.0  # a directory changed this recently is listed again even if its mtime is the same
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
        self.max_record_bytes = opts.max_record_bytes
        self._reader: FileReader | None = None
        self._buf: Segment | None = None  # read, not yet returned
        self._file: str | None = None  # the file being read (its reader may be closed)
        self._row = 0  # records of it already returned
        self._done: set[str] = set()
        everything = self._list(share_only=False)
        self._known: set[str] = {n for n in everything if self._mine(n)}
        self._pending = sorted(self._known)
        where = f"sources.{config.name}"
        if opts.schema is not None:
            self._schema = parse_schema(opts.schema, f"{where}.schema")
        else:
            found = None
            for name in everything:  # the first file with a header or a row
                found = infer_schema(self._path(name), self._format(name), where)
                if found is not None:
                    break
            if found is None:
                what = "every file that matches it is empty" if everything else "no file matches it"
                raise ConfigError(
                    f"files source {config.name!r}: {what} ({self.pattern!r} in "
                    f"{str(self.root)!r}), so the schema cannot be inferred; set schema = {{...}}"
                )
            self._schema = found

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

    def _open(self, name: str, skip: int) -> FileReader:
        path = self._path(name)
        if not path.is_file():
            raise ConnectorError(
                f"files source {self.config.name!r}: {path} vanished before it was read"
                if skip == 0
                else f"files source {self.config.name!r}: {path} was in the checkpoint but is "
                "gone: cannot replay"
            )
        return FileReader(
            path, self._format(name), self._schema, self.batch_rows, skip, self.max_record_bytes
        )

    def _end_file(self) -> None:
        assert self._file is not None
        if self._reader is not None:
            self._reader.close()
        self._done.add(self._file)
        self._reader, self._file, self._row = None, None, 0

    def schema(self) -> pa.Schema:
        return self._schema

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        """The next rows (or bad records) in file order; the position moves only on return."""
        try:
            return self._poll(max(1, min(max_records, self.batch_rows)))
        except BaseException:
            self._drop_reader()  # the next poll reopens the file where the position is
            raise

    def _poll(self, limit: int) -> SourceBatch | None:
        while True:
            seg = self._buf
            if seg is not None:
                if isinstance(seg, pa.RecordBatch):
                    out, rest = seg.slice(0, limit), seg.slice(limit)
                    self._buf = rest if rest.num_rows else None
                    self._row += out.num_rows
                    return SourceBatch(out, offset=self._row - 1)
                self._buf = None
                if self.config.on_error == "fail":
                    self._buf = seg  # not consumed: a replay fails the same way
                    first = seg[0]
                    raise BadRecordError(
                        f"files source {self.config.name!r}: bad record: {first.describe()}", first
                    )
                self._row += len(seg)
                no_rows = pa.RecordBatch.from_pylist([], schema=self._schema)
                return SourceBatch(no_rows, offset=self._row - 1, bad=seg)
            if self._file is not None:
                if self._reader is None:
                    self._reader = self._open(self._file, self._row)
                seg = self._reader.next()
                if seg is None:
                    self._end_file()
                else:
                    self._buf = seg
                continue
            if not self._pending and self.follow:
                self._refresh()
            if not self._pending:
                return None
            self._file, self._row = self._pending.pop(0), 0

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader, self._buf = None, None

    def finished(self) -> bool:
        return not (self.follow or self._pending or self._file is not None)

    def data_ready(self, timeout_s: float) -> bool:
        """True at once if rows or files are waiting; else watch the directory up to timeout."""
        if self._buf is not None or self._file is not None or self._pending or not self.follow:
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
        self._drop_reader()
        self._file, self._row = None, 0
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
            self._file, self._row = name, row
            self._reader = self._open(name, row)
            self._buf = self._reader.next()  # skips to the position: past the file's end fails
            if self._buf is None:
                self._end_file()

    def supports_replay(self) -> bool:
        return True

    def metrics(self) -> dict[str, float]:
        out = {"files_done": float(len(self._done)), "files_pending": float(len(self._pending))}
        if self.follow:  # a followed directory's lag: files seen and not read yet
            out["lag_files"] = float(len(self._pending))
        else:  # bounded: bytes of finished files of all this instance's files (for progress)
            size = {n: self._size(n) for n in {*self._done, *self._pending, self._file} if n}
            out["progress_total"] = float(sum(size.values()))
            out["progress_done"] = float(sum(size.get(n, 0) for n in self._done))
        return out

    def _size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        self._drop_reader()
