"""Checkpoints: manifests (the durable record of an epoch), worker state files, the store.

* ``manifest`` — ``Manifest``/``StateFileRef`` and their checksummed file format.
* ``state`` — one Arrow IPC state file per worker and epoch, several named tables.
* ``store`` — ``CheckpointStore``: the directory, atomic writes, retention, restore.
* ``report`` — the listing of ``python -m engine checkpoints DIR``.

See ``store``'s docstring for the protocol, step by step (DESIGN.md §5).
"""

from __future__ import annotations

from engine.checkpoint.manifest import FORMAT_VERSION, Manifest, StateFileRef, decode, encode
from engine.checkpoint.state import WrittenState, fsync_dir, publish, read_state, write_state
from engine.checkpoint.store import CheckpointStore, ManifestInfo

__all__ = [
    "FORMAT_VERSION",
    "CheckpointStore",
    "Manifest",
    "ManifestInfo",
    "StateFileRef",
    "WrittenState",
    "decode",
    "encode",
    "fsync_dir",
    "publish",
    "read_state",
    "write_state",
]
