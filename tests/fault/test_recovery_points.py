"""Kill -9 at each named step of the checkpoint protocol (engine/faults.py); output stays exact.

``RINGSTREAM_FAULT=<point>@<epoch>`` makes the process that reaches the point
SIGKILL itself there, once (``RINGSTREAM_FAULT_MARKS`` records that it fired).
A child's death restarts the run inside the same ``python -m engine run``; the
coordinator's own death ends that command, and the test runs it again, as an
operator would. Every case checks that the point fired, which manifest the
recovery started from, and that the committed output equals the fault-free
reference row for row.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pyarrow as pa
import pytest

from tests.fault.test_exactly_once import (
    EngineRun,
    assert_same,
    committed,
    engine,
    make_job,
    reference,
    wait_gone,
)

# point -> (dies, the epochs a recovery may start from)
MID_RUN = {
    "source.after_checkpoint": ("source", {1}),  # its barrier 2 never left: no manifest 2
    "worker.after_snapshot": ("worker", {1, 2}),  # it reported epoch 2 before it died
    "sink.after_pre_commit": ("sink", {1, 2}),  # manifest 2 may be written before it is missed
    "coordinator.before_manifest": ("coordinator", {1}),
    "coordinator.after_manifest": ("coordinator", {2}),
    "sink.after_commit": ("sink", {2}),
}


@pytest.fixture
def ref(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    return reference(tmp_path_factory)[0]


def _recovered_from(stderr: str) -> list[int]:
    return [int(n) for n in re.findall(r"recovering from epoch (\d+)", stderr)]


def _run_with_fault(job_dir: Path, point: str, epoch: int, interval_ms: int = 100):  # type: ignore[no-untyped-def]
    """Run the job with the fault armed until a run exits 0; (job, stderr of every run)."""
    job = make_job(job_dir, interval_ms=interval_ms)
    marks = job_dir / "marks"
    marks.mkdir()
    env = {"RINGSTREAM_FAULT": f"{point}@{epoch}", "RINGSTREAM_FAULT_MARKS": str(marks)}
    stderrs: list[str] = []
    with EngineRun(job, env) as run:
        rc = run.wait()
        stderrs.append(run.stderr)
        assert not wait_gone(run.pids()), f"children of the first run outlived it ({point})"
    assert (marks / f"{point}@{epoch}").exists(), f"{point}@{epoch} never fired:\n{stderrs[0]}"
    if point.startswith("coordinator."):
        assert rc == -signal.SIGKILL, stderrs[0]
        again = engine(*job.args(), env=env)
        stderrs.append(again.stderr)
        assert again.returncode == 0, again.stderr
    else:
        assert rc == 0, stderrs[0]
        assert "restart 1/10" in stderrs[0], stderrs[0]
    return job, stderrs


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(MID_RUN))
def test_fault_point_mid_run_killed_output_equals_reference(
    tmp_path: Path, point: str, ref: pa.Table
) -> None:
    role, epochs = MID_RUN[point]
    job, stderrs = _run_with_fault(tmp_path, point, 2)
    if role != "coordinator":  # the victim, or a peer that found it dead first
        failure = re.search(r"^failure: (.*)$", stderrs[0], re.M)
        assert failure is not None, stderrs[0]
        assert re.match(rf"{role} .*\(pid \d+\) was killed by SIGKILL", failure[1]) or (
            "died without closing the ring" in failure[1]
        ), stderrs[0]
    recovered = _recovered_from(stderrs[-1])
    assert recovered and recovered[0] in epochs, stderrs[-1]
    assert_same(committed(job), ref, f"{point}@2")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "rerun_once_more"),
    [("coordinator.after_manifest", True), ("sink.after_commit", False)],
)
def test_fault_point_final_epoch_recovers_then_rerun_reports_complete(
    tmp_path: Path, point: str, rerun_once_more: bool, ref: pa.Table
) -> None:
    # one epoch for the whole run: epoch 1 is the last one, closed by the end of the stream
    job, stderrs = _run_with_fault(tmp_path, point, 1, interval_ms=600_000)
    assert _recovered_from(stderrs[-1])[:1] == [1], stderrs[-1]
    assert_same(committed(job), ref, f"{point}@1 (the final epoch)")
    listing = engine("checkpoints", str(job.checkpoints))
    assert listing.returncode == 0, listing.stdout
    # epoch 1's manifest was pending: the restart re-drove its commit and then marked it
    listed = re.findall(r"^\s*(\d+)\s+\S+Z\s+(\w+)", listing.stdout, re.M)
    assert "1" in [e for e, _ in listed], listing.stdout
    assert {status for _, status in listed} == {"committed"}, listing.stdout
    newest_epoch = listed[0][0]
    if not rerun_once_more:
        return
    again = engine(*job.args())
    assert again.returncode == 0, again.stderr
    assert f"already completed at epoch {newest_epoch}" in again.stderr
    assert again.stdout.startswith("done: already complete")
    assert_same(committed(job), ref, "a rerun of a completed pipeline")
