"""The checkpoint directory: manifests, state directories, retention, restore.

Layout of ``root``::

    epoch-00000000000000000007.manifest      manifest of epoch 7 (manifest.py format)
    epoch-00000000000000000007/              epoch 7's state (state.py format):
        worker-0000.state                    one file per worker,
        worker-0001.state
        sink-0000.state                      and per sink with a final stage
    *.tmp-<pid>                              a write in progress (or a dead writer's)
    LOCK                                     held by the run using the directory (lock.py)

Its part in the epoch protocol (the steps of ``engine.epochs``, numbered the same
everywhere: code, fault points, docs/architecture.md):

* Steps 3 and 4: each worker, and each sink with a final stage, writes its
  state with ``write_state(N, index, tables, role)`` into ``state_dir(N)``
  (created on demand) and reports the ``StateFileRef``.
* Step 5: the coordinator, with every report in, calls ``write_manifest(m)``:
  temp file, write, fsync, rename, fsync the directory — the point of no
  return. It refuses a manifest whose state files are missing or have another
  size. Then retention: the newest ``keep`` manifests stay, with every state
  directory they reference; older manifests are deleted first, then the state
  directories of epochs before ``N`` that no kept manifest references (also
  those of epochs that were aborted). Directories of epochs after ``N`` are
  never touched: workers may be writing them.
* Step 7: once every sink has committed, ``mark_committed(N)`` rewrites
  manifest N with ``sink_status="committed"`` through the same atomic path.

On restart: ``latest_valid()`` returns the newest manifest that decodes and
whose state files exist with matching size and checksum, reporting every
newer one it skipped; ``read_state(ref)`` loads a worker's tables; then
``discard_newer(N)`` removes manifests, state directories and temp files
newer than the one restored, so the next run starts clean from ``N + 1``.

Invariants: a manifest file present under its final name is complete (a
crash leaves at most a temp file); every state file a kept manifest names was
durable before the manifest was. Not guaranteed: concurrent writers of the
same store (there is one coordinator); surviving someone else's edits to the
files (those are detected, not repaired).
"""

from __future__ import annotations

import builtins
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pyarrow as pa

import engine.checkpoint.manifest as manifest_mod
import engine.checkpoint.state as state_mod
from engine.checkpoint.manifest import Manifest, Role, StateFileRef
from engine.durable import fsync_dir, publish
from engine.errors import CheckpointError, ConfigError, CorruptCheckpointError

_MANIFEST_RE = re.compile(r"^epoch-(\d{20})\.manifest$")
_STATE_DIR_RE = re.compile(r"^epoch-(\d{20})$")


@dataclass(frozen=True)
class ManifestInfo:
    """One manifest file as ``CheckpointStore.list`` found it.

    ``status`` is ``"ok"`` or the reason it cannot be restored from;
    ``manifest`` is None when it does not decode; ``state_bytes`` is the total
    the manifest records for its state files (0 when it does not decode).
    """

    epoch: int
    path: Path
    status: str
    manifest_bytes: int
    state_bytes: int
    manifest: Manifest | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class CheckpointStore:
    """Manifests and state files under one directory (see the module docstring)."""

    def __init__(self, root: Path | str, keep: int = 3) -> None:
        if keep < 1:
            raise ConfigError(f"checkpoint keep={keep} must be >= 1")
        self.root = Path(root).absolute()
        self.keep = keep
        self.root.mkdir(parents=True, exist_ok=True)

    # --- names ----------------------------------------------------------------

    def manifest_path(self, epoch: int) -> Path:
        _check_epoch(epoch)
        return self.root / f"epoch-{epoch:020d}.manifest"

    def state_dir(self, epoch: int) -> Path:
        """Where epoch ``epoch``'s state files go (created, durably, on first use)."""
        _check_epoch(epoch)
        d = self.root / f"epoch-{epoch:020d}"
        if not d.is_dir():
            d.mkdir(exist_ok=True)
            fsync_dir(self.root)
        return d

    # --- state files ----------------------------------------------------------

    def write_state(
        self, epoch: int, index: int, tables: dict[str, pa.Table], role: Role = "worker"
    ) -> StateFileRef:
        """Steps 3 and 4: ``role`` ``index``'s tables of ``epoch``; the manifest gets the ref."""
        path = self.state_dir(epoch) / f"{role}-{index:04d}.state"
        written = state_mod.write_state(path, tables)
        return StateFileRef(
            index, path.relative_to(self.root).as_posix(), written.bytes, written.checksum, role
        )

    def read_state(self, ref: StateFileRef) -> dict[str, pa.Table]:
        """The tables of one state file, verified against ``ref``."""
        return state_mod.read_state(self._resolve(ref), ref.checksum, ref.bytes)

    def _resolve(self, ref: StateFileRef) -> Path:
        rel = Path(ref.path)
        if rel.is_absolute() or ".." in rel.parts:
            raise CorruptCheckpointError(
                f"state file path {ref.path!r} of {ref.owner} is not inside {self.root}"
            )
        return self.root / rel

    # --- manifests ------------------------------------------------------------

    def write_manifest(self, m: Manifest) -> Path:
        """Step 5: write manifest ``m.epoch`` atomically and durably, then apply retention."""
        for ref in m.state_files:
            path = self._resolve(ref)
            size = path.stat().st_size if path.exists() else None
            if size != ref.bytes:
                found = "missing" if size is None else f"{size} bytes"
                raise CheckpointError(
                    f"manifest of epoch {m.epoch}: state file {path} of {ref.owner} is "
                    f"{found}, the manifest would record {ref.bytes} bytes"
                )
        final = self._write_manifest_file(m)
        self._apply_retention(written=m.epoch)
        return final

    def mark_committed(self, epoch: int) -> None:
        """Step 7: record that every sink committed ``epoch`` (a no-op if already recorded)."""
        m = self.read_manifest(epoch)
        if m.sink_status != "committed":
            self._write_manifest_file(msgspec.structs.replace(m, sink_status="committed"))

    def read_manifest(self, epoch: int) -> Manifest:
        """Manifest ``epoch``, decoded (its state files are not checked)."""
        path = self.manifest_path(epoch)
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise CheckpointError(f"no manifest for epoch={epoch} in {self.root}") from e
        return manifest_mod.decode(data, str(path))

    def _write_manifest_file(self, m: Manifest) -> Path:
        final = self.manifest_path(m.epoch)
        tmp = state_mod.temp_path(final)
        data = manifest_mod.encode(m)
        try:
            with state_mod.open_temp(tmp) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        publish(tmp, final)
        return final

    # --- restore --------------------------------------------------------------

    def latest_valid(self, report: Callable[[str], None] | None = None) -> Manifest | None:
        """The newest manifest that decodes and whose state files verify, or None.

        Each newer one that fails is passed to ``report`` as one line naming the
        file and the reason, and skipped.
        """
        for epoch, path in self._manifests():
            m, reason = self._check(path)
            if m is not None:
                return m
            if report is not None:
                report(f"skipping checkpoint epoch {epoch}: {reason}")
        return None

    def discard_newer(self, epoch: int) -> None:
        """After restoring ``epoch``: delete manifests and state directories of later epochs
        and every temp file in the store (no writer runs during a restore).

        Pass ``-1`` when nothing was restored, to clear every epoch.
        """
        for e, path in self._manifests():
            if e > epoch:
                path.unlink(missing_ok=True)
        for e, d in self._state_dirs():
            if e > epoch:
                shutil.rmtree(d, ignore_errors=True)
        for d in [self.root, *(d for _, d in self._state_dirs())]:
            for p in d.iterdir():
                if p.is_file() and state_mod.is_temp(p):
                    p.unlink(missing_ok=True)
        fsync_dir(self.root)

    # --- listing --------------------------------------------------------------

    def list(self) -> builtins.list[ManifestInfo]:
        """Every manifest file, newest first, each checked as ``latest_valid`` would."""
        infos: builtins.list[ManifestInfo] = []
        for epoch, path in self._manifests():
            m, reason = self._check(path)
            size = path.stat().st_size if path.exists() else 0
            state_bytes = 0
            if m is None:
                try:  # it may decode and fail only on its state files
                    decoded: Manifest | None = manifest_mod.decode(path.read_bytes(), str(path))
                except (CheckpointError, OSError):
                    decoded = None
            else:
                decoded = m
            if decoded is not None:
                state_bytes = sum(ref.bytes for ref in decoded.state_files)
            infos.append(ManifestInfo(epoch, path, reason or "ok", size, state_bytes, decoded))
        return infos

    # --- internals ------------------------------------------------------------

    def _check(self, path: Path) -> tuple[Manifest | None, str | None]:
        """(manifest, None) when ``path`` is restorable, else (None, reason)."""
        try:
            m = manifest_mod.decode(path.read_bytes(), str(path))
            for ref in m.state_files:
                state_mod.verify_state(self._resolve(ref), ref.checksum, ref.bytes)
        except CheckpointError as e:
            return None, str(e)
        except OSError as e:
            return None, f"{path}: cannot read: {e}"
        return m, None

    def _manifests(self) -> builtins.list[tuple[int, Path]]:
        """(epoch, path) of every manifest file, newest first."""
        found: builtins.list[tuple[int, Path]] = []
        for p in self.root.iterdir():
            match = _MANIFEST_RE.match(p.name)
            if match and p.is_file():
                found.append((int(match.group(1)), p))
        return sorted(found, reverse=True)

    def _state_dirs(self) -> builtins.list[tuple[int, Path]]:
        found: builtins.list[tuple[int, Path]] = []
        for p in self.root.iterdir():
            match = _STATE_DIR_RE.match(p.name)
            if match and p.is_dir():
                found.append((int(match.group(1)), p))
        return sorted(found)

    def _apply_retention(self, written: int) -> None:
        manifests = self._manifests()
        kept = manifests[: self.keep]
        if all(e != written for e, _ in kept):
            kept.append((written, self.manifest_path(written)))
        kept_epochs = {e for e, _ in kept}
        referenced: set[str] = set()
        for e, path in kept:
            referenced.add(f"epoch-{e:020d}")  # its own directory, even if it does not decode
            try:
                m = manifest_mod.decode(path.read_bytes(), str(path))
            except (CheckpointError, OSError):
                continue
            referenced.update(Path(ref.path).parts[0] for ref in m.state_files)
        for e, path in manifests:
            if e not in kept_epochs:
                path.unlink(missing_ok=True)
        for e, d in self._state_dirs():
            if e < written and d.name not in referenced:
                shutil.rmtree(d, ignore_errors=True)
        fsync_dir(self.root)


def _check_epoch(epoch: int) -> None:
    if not 0 <= epoch < 10**20:
        raise CheckpointError(f"epoch={epoch} is out of range [0, 10**20)")
