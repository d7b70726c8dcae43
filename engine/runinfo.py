"""The run file: how ``python -m engine status`` finds a running pipeline; how the last one ended.

The coordinator writes ``<checkpoint.dir>/run.json`` (without checkpoints:
``directory_of``, a private directory under the temp dir) when a run starts (its pid,
the metrics endpoint's URL, the time) and again when it ends (its state —
done, stopped, failed — the summary, and the final metrics text, so that
``status`` can still show the last figures). Writes are atomic (temp file,
rename); the file is owner-only. A run killed with SIGKILL leaves it saying
"running" with a pid that is gone: ``status`` tells that apart.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import msgspec

from engine.durable import private_dir

NAME = "run.json"
State = Literal["running", "done", "stopped", "failed"]


class RunInfo(msgspec.Struct, kw_only=True):
    pipeline: str
    pid: int
    started_unix_s: float
    state: State = "running"
    metrics_url: str | None = None
    ended_unix_s: float | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None
    final_metrics: str | None = None  # the exposition text at the end of the run


def directory_of(pipeline: Any) -> Path:
    """Where a pipeline's run file lives: its checkpoint directory; without checkpoints
    (nothing may be written there) a private directory under the system's temp dir,
    named after the pipeline and its checkpoint directory's path."""
    if pipeline.checkpointing:
        return Path(pipeline.checkpoint_dir)
    where = str(Path(pipeline.checkpoint_dir).resolve())
    digest = hashlib.sha256(where.encode()).hexdigest()[:12]
    base = Path(tempfile.gettempdir()) / f"ringstream-{os.geteuid()}"
    private_dir(base, "run files")
    return base / f"{pipeline.pipeline.name}-{digest}"


def path(directory: Path) -> Path:
    return Path(directory) / NAME


def write(directory: Path, info: RunInfo) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = path(directory)
    tmp = final.with_name(f"{NAME}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.encode(info))
    os.replace(tmp, final)


def read(directory: Path) -> RunInfo | None:
    """The run file in ``directory``, or None when there is none (or it is unreadable)."""
    try:
        return msgspec.json.decode(path(directory).read_bytes(), type=RunInfo)
    except (OSError, msgspec.DecodeError):
        return None
