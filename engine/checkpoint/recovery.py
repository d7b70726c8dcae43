"""Which checkpoint a run resumes from (the coordinator's lifecycle step L2).

``recover(store, pipeline, workers, say)`` returns the newest valid manifest
(a corrupt or truncated newer one is reported through ``say`` and skipped),
after discarding everything newer than it (manifests, state directories, temp
files), or None when there is none (everything is discarded). It refuses, as a
``ConfigError`` naming the key to change, a manifest written by a different
pipeline, with a different worker count, or with a different source
parallelism: rescaling from a checkpoint is not supported.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.checkpoint.manifest import Manifest
from engine.checkpoint.store import CheckpointStore
from engine.errors import ConfigError
from engine.pipeline import Pipeline


def recover(
    store: CheckpointStore, pipeline: Pipeline, workers: int, say: Callable[[str], None]
) -> Manifest | None:
    manifest = store.latest_valid(report=lambda text: say(f"checkpoint: {text}"))
    if manifest is None:
        store.discard_newer(-1)  # skipped manifests, state files of unfinished epochs
        return None
    p = pipeline
    if manifest.pipeline_hash != p.hash():
        raise ConfigError(
            f"checkpoint.dir: {p.checkpoint_dir} holds epoch {manifest.epoch} of a different "
            f"pipeline (hash {manifest.pipeline_hash}, this one {p.hash()}); use another "
            "checkpoint.dir or delete it to start over"
        )
    had = manifest.workers()
    if had and workers != had:
        raise ConfigError(
            f"topology: epoch {manifest.epoch} was checkpointed with {had} workers; "
            f"this topology has {workers} (rescaling from a checkpoint is not supported)"
        )
    for s in p.sources:
        offsets = manifest.source_offsets.get(s.name)
        if offsets is not None and len(offsets) != s.parallelism:
            raise ConfigError(
                f"sources.{s.name}.parallelism: epoch {manifest.epoch} was checkpointed "
                f"with {len(offsets)} instances, this pipeline has {s.parallelism}"
            )
    store.discard_newer(manifest.epoch)
    return manifest
