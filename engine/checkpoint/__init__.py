"""Checkpoints: manifests (the durable record of an epoch), state files, the store.

* ``manifest`` — ``Manifest``/``StateFileRef`` and their checksummed file format.
* ``state`` — one Arrow IPC state file per worker (or sink) and epoch, named tables.
* ``store`` — ``CheckpointStore``: the directory, atomic writes, retention, restore.
* ``snapshot`` — an operator graph and its watermark to a state file and back.
* ``lock`` — one live run per checkpoint directory.
* ``report`` — the listing of ``python -m engine checkpoints DIR``.

The epoch protocol these serve is ``engine.epochs`` (and docs/architecture.md).
"""

from __future__ import annotations

from engine.checkpoint.manifest import FORMAT_VERSION, Manifest, StateFileRef
from engine.checkpoint.store import CheckpointStore, ManifestInfo

__all__ = ["FORMAT_VERSION", "CheckpointStore", "Manifest", "ManifestInfo", "StateFileRef"]
