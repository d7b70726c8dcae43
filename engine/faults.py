"""Named fault points: kill this process at one exact step of the checkpoint protocol (tests).

``RINGSTREAM_FAULT="<point>@<epoch>[,<point>@<epoch>...]"`` makes the process
that reaches ``<point>`` during epoch ``<epoch>`` SIGKILL itself there;
``RINGSTREAM_FAULT_MARKS=<dir>`` (required) records each fired point, so a
point fires once across restarts. Points, in the order of the epoch
protocol's steps (``engine.epochs``; the same numbers in docs/architecture.md):

* ``source.after_checkpoint`` — a source reported its offset for N (step 2)
* ``worker.after_snapshot`` — a worker wrote and reported its state (step 3)
* ``sink.after_pre_commit`` — a sink staged epoch N and reported it (step 4)
* ``coordinator.before_manifest`` — every report is in, nothing written (step 5)
* ``coordinator.after_manifest`` — manifest N is durable, no commit sent (step 5)
* ``sink.after_commit`` — a sink committed N but did not confirm it (step 6)

Connector-specific points, inside a step: ``kafka_sink.mid_transaction`` — the Kafka
sink sent half of epoch N's records in its transaction, and the broker has them
(step 6, ``connectors.kafka.sink``).

Without the variables every call is a dictionary lookup that finds nothing.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("RINGSTREAM_FAULT", "")
_POINTS = {
    (p.partition("@")[0], int(p.partition("@")[2]))
    for p in _SPEC.split(",")
    if "@" in p and p.partition("@")[2].isdigit()
}


def armed(point: str, epoch: int) -> bool:
    """True if ``reached(point, epoch)`` may fire (to prepare the state it should see)."""
    return (point, epoch) in _POINTS


def reached(point: str, epoch: int) -> None:
    if not _POINTS or (point, epoch) not in _POINTS:
        return
    marks = os.environ.get("RINGSTREAM_FAULT_MARKS")
    if not marks:
        return
    try:
        fd = os.open(os.path.join(marks, f"{point}@{epoch}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
