"""The Kafka sink's spool: each epoch's encoded records in a local file until they are committed.

``Spool(directory, where)`` keeps one Arrow IPC stream file per epoch in
``directory`` (created 0700; the sink's own under the run's checkpoint directory:
a file is durable before the manifest naming it is written, and deleted once its
epoch is committed):

* ``write(epoch, records)`` appends records (``encode.RECORDS``) to the epoch's
  temporary file ``epoch-<N>.arrow.tmp-<pid>``, opened at the epoch's first write
  (an earlier process's file of that name is replaced).
* ``seal(epoch)`` closes the epoch's file, fsyncs it, renames it to
  ``epoch-<N>.arrow`` and fsyncs the directory, then returns
  ``{"path", "records", "bytes"}``, or None when the epoch wrote nothing. After it
  returns, the records survive a kill -9 of any process and a power loss:
  ``pre_commit`` seals before the coordinator writes the manifest that names the file.
* ``read(spooled)`` yields the records back from such a dict (memory-mapped),
  raising ``CorruptCheckpointError`` for a file that is missing, damaged, or holds
  another number of records: the epoch's rows would be lost, so it never passes
  for an empty epoch.
* ``drop(upto=N)`` removes the files of epochs ``<= N`` (they are committed);
  ``drop(since=N)`` those of epochs ``>= N`` and the open file (rolled back). The
  first call, and every ``since``, also lists the directory for files an earlier
  process left (a dead writer's temp files among them); later ones remove this
  process's own files without a listing.

Why a local file and not a topic: the records must outlive the process that wrote
them only as long as the manifest does, and the manifest is a local file too.
Staging them in a Kafka topic cost a broker round trip for every chunk, and
waiting for those acknowledgements was the largest part of the sink's time.
Not guaranteed: a spool on a disk that loses fsynced data.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.kafka.encode import RECORDS
from engine.durable import create_exclusive, fsync_dir, private_dir, publish
from engine.errors import CorruptCheckpointError

_NAME = re.compile(r"^epoch-(\d{20})\.arrow(\.tmp-\d+)?$")


def temporary_dir() -> str:
    """A spool directory for a run without a checkpoint directory (removed at ``close``),
    named by this process; those of processes that died (kill -9) are removed first."""
    root = Path(tempfile.gettempdir())
    for d in root.glob("rs-kafka-spool-*-*"):
        pid = d.name.split("-")[3]
        with contextlib.suppress(OSError):  # (another process removed it first)
            dead = pid.isdigit() and not Path(f"/proc/{pid}").exists()
            if dead and d.stat().st_uid == os.getuid():
                shutil.rmtree(d, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"rs-kafka-spool-{os.getpid()}-")


class Spool:
    def __init__(self, directory: Path | str, where: str) -> None:
        self.dir, self.where = Path(directory), where
        private_dir(self.dir, where)
        for d in (self.dir.parent, self.dir):  # its entry, and ours, survive a power loss
            fsync_dir(d)
        self.epoch = -1  # the epoch of the open file
        self._file: Any = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.records = self.bytes = 0
        self.sealed: dict[int, Path] = {}  # this process's files, to drop without a listing
        self.scanned = False  # the directory was listed once (files of earlier processes)

    def _path(self, epoch: int, tmp: bool = False) -> Path:
        name = f"epoch-{epoch:020d}.arrow"
        return self.dir / (f"{name}.tmp-{os.getpid()}" if tmp else name)

    def write(self, epoch: int, records: pa.RecordBatch) -> None:
        if records.num_rows == 0:
            return
        if self.epoch != epoch:
            self._abandon()
            tmp = self._path(epoch, tmp=True)
            tmp.unlink(missing_ok=True)
            self._file = os.fdopen(create_exclusive(tmp), "wb", buffering=1 << 20)
            self._writer = pa.ipc.new_stream(self._file, RECORDS)
            self.epoch, self.records, self.bytes = epoch, 0, 0
        assert self._writer is not None
        self._writer.write_batch(records)
        self.records += records.num_rows
        self.bytes += records.nbytes

    def seal(self, epoch: int) -> dict[str, Any] | None:
        if self.epoch != epoch or self._writer is None:
            return None
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._path(epoch)
        publish(self._path(epoch, tmp=True), final)
        out = {"path": str(final), "records": self.records, "bytes": self.bytes}
        self.sealed[epoch] = final
        self._writer = self._file = None
        self.epoch = -1
        return out

    def read(self, spooled: dict[str, Any], epoch: int) -> Iterator[pa.RecordBatch]:
        path, want = Path(spooled["path"]), int(spooled["records"])
        mine = self.dir / path.name  # ours first (a copied checkpoint directory reads its own)
        if mine.exists():
            path = mine
        got = 0
        try:
            with pa.memory_map(str(path)) as source:
                for batch in pa.ipc.open_stream(source):
                    got += batch.num_rows
                    yield batch
        except (OSError, pa.ArrowException) as exc:
            raise CorruptCheckpointError(
                f"{self.where}: epoch {epoch}'s staged records {path} cannot be read ({exc}); "
                "the manifest names them, so the epoch cannot be committed without them"
            ) from exc
        if got != want:
            raise CorruptCheckpointError(
                f"{self.where}: epoch {epoch}'s staged records {path} hold {got} records, "
                f"the manifest says {want}: the file was cut short or replaced"
            )

    def drop(self, upto: int | None = None, since: int | None = None) -> None:
        if since is not None and self.epoch >= since:
            self._abandon()
        gone = [e for e in self.sealed if (upto is not None and e <= upto)
                or (since is not None and e >= since)]  # fmt: skip
        for e in gone:
            self.sealed.pop(e).unlink(missing_ok=True)
        if self.scanned and since is None:
            return
        self.scanned = True
        for p in self.dir.iterdir():
            m = _NAME.match(p.name)
            if m is None:
                continue
            e = int(m.group(1))
            if m.group(2):  # a temp file: ours for the open epoch, else a dead writer's
                if not (m.group(2) == f".tmp-{os.getpid()}" and e == self.epoch):
                    p.unlink(missing_ok=True)
            elif not m.group(2) and ((upto is not None and e <= upto)
                                     or (since is not None and e >= since)):  # fmt: skip
                p.unlink(missing_ok=True)

    def _abandon(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
                self._file.close()
            finally:
                self._path(self.epoch, tmp=True).unlink(missing_ok=True)
                self._writer = self._file = None
                self.epoch = -1

    def close(self) -> None:
        self._abandon()
        fsync_dir(self.dir)
