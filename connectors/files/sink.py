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

Safety (a sink often runs as a service user, into directories others can see):

* ``path`` is refused if other users may write into it, unless it is ours and
  sticky; ``.staging`` is ours alone (0700; another user's or a symlink is
  refused). Directories the sink creates get 0755 (``path``) and 0700.
* Every file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``: the sink never
  writes through a symlink planted where it is about to write, nor into a file
  it did not create; a committed file is never a symlink (a symlink at a final
  name is refused). Files get mode 0644 explicitly, whatever the umask.
* A write that fails (a full disk, an I/O error) is an error naming the cause
  and the file (``No space left on device``), never retried in place: the run
  restarts from the last checkpoint and the epoch is written again.

JSON lines are written by ``connectors.files.jsonl`` (vectorised);
``connectors.files.committed.read_committed`` reads what was committed.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from msgspec import Meta

from connectors.base import ConnectorConfig, Sink, SinkCapabilities, WriteResult
from connectors.files.committed import read_committed  # noqa: F401  (the sink's reader)
from connectors.files.jsonl import encode_jsonl
from connectors.options import Options, invalid, parse_options
from engine.durable import check_not_shared, create_exclusive, fsync_dir, private_dir, publish
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
FILE_MODE = 0o644  # committed files: readable like any output
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
        where = f"sinks.{config.name}.path"
        if not self.dir.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir, 0o755)
        if not self.dir.is_dir():
            raise ConfigError(f"{where}: {self.dir} is not a directory")
        check_not_shared(self.dir, where)
        private_dir(self.staging, where)
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
            self._writer = self._io(path, "create", lambda: cls(path, self._schema))
        writer = self._writer
        self._io(writer.path, "write", lambda: writer.write(batch))
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
            writer, name = self._writer, self.file_name(epoch)
            self._io(writer.path, "finish", writer.finish)
            staged = self.staging / (name + ".staged")
            self._io(writer.path, "stage", lambda: publish(writer.path, staged))
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
            if final.is_symlink() or (final.exists() and not final.is_file()):
                raise ConnectorError(
                    f"files sink {self.config.name!r}: {final} is a symlink or not a regular "
                    "file: refusing to commit over it (someone planted it)"
                )
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

    def _io(self, path: Path, what: str, fn):  # type: ignore[no-untyped-def]
        """``fn()``; an I/O failure as an error naming the cause and the file."""
        try:
            return fn()
        except (OSError, pa.ArrowException) as exc:
            self._writer = None  # a failed writer is not written again: the epoch is replayed
            code = getattr(exc, "errno", None)
            cause = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})" if code else str(exc)
            if code is None and "No space left" in str(exc):
                cause = "No space left on device (ENOSPC)"
            raise ConnectorError(
                f"files sink {self.config.name!r}: cannot {what} {path}: {cause}"
            ) from exc

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


def _open_new(path: Path) -> pa.NativeFile:
    """``path`` created for writing, never through a symlink; a leftover of ours is replaced.

    The file is created with ``O_EXCL | O_NOFOLLOW``, then opened for Arrow through
    ``/proc/self/fd``: the same inode, whatever happens to the name meanwhile.
    """
    try:
        fd = create_exclusive(path, FILE_MODE)
    except FileExistsError:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise
        path.unlink()  # an earlier attempt's in-progress file, in our own 0700 .staging
        fd = create_exclusive(path, FILE_MODE)
    try:
        return pa.OSFile(f"/proc/self/fd/{fd}", mode="wb")
    finally:
        os.close(fd)


class _ParquetWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self._f = _open_new(path)
        self._w = pq.ParquetWriter(self._f, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._w.write_batch(batch)

    def finish(self) -> None:
        self._w.close()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):  # a full disk: the file goes anyway
            self._w.close()
        with contextlib.suppress(OSError, pa.ArrowException):
            self._f.close()
        self.path.unlink(missing_ok=True)


class _JsonlWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self._f = _open_new(path)

    def write(self, batch: pa.RecordBatch) -> None:
        self._f.write(encode_jsonl(batch))

    def finish(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):  # a full disk: the file goes anyway
            self._f.close()
        self.path.unlink(missing_ok=True)
