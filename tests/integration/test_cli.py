"""The command line around a run: `connectors`, `checkpoints DIR`, rerunning a finished run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.files.sink import read_committed
from tests.engine_run import engine, pipeline_file, topology_file

EVENTS = 200_000


@dataclass
class FinishedRun:
    pipeline: Path
    topology: Path
    out: Path
    checkpoints: Path
    stdout: str


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """One bounded run, to the end, with a checkpoint every 100 ms (run once per module)."""
    tmp = tmp_path_factory.mktemp("finished")
    out = tmp / "out"
    run = FinishedRun(
        pipeline_file(tmp, EVENTS, out, interval_ms=100),
        topology_file(tmp, [1]),
        out,
        Path(f"{out}.checkpoints"),
        "",
    )
    done = engine("run", str(run.pipeline), "--topology", str(run.topology))
    assert done.returncode == 0, done.stderr
    run.stdout = done.stdout
    return run


def last_epoch(run: FinishedRun) -> int:
    found = re.search(r"last committed epoch (\d+)", run.stdout)
    assert found, run.stdout
    return int(found.group(1))


def test_cli_connectors_lists_builtin_sources_and_sinks() -> None:
    done = engine("connectors")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    listed = {(kind, name): target for kind, name, target in rows}
    assert listed["source", "generator"] == "connectors.generator:GeneratorSource"
    assert listed["source", "nexmark"] == "connectors.nexmark:NexmarkSource"
    assert listed["source", "files"] == "connectors.files.source:FilesSource"
    assert listed["sink", "files"] == "connectors.files.sink:FilesSink"
    assert listed["sink", "console"] == "connectors.console:ConsoleSink"
    assert listed["sink", "subscribe"] == "connectors.subscribe:SubscribeSink"
    for kind in ("source", "sink"):
        names = [name for k, name, _ in rows if k == kind]
        assert names == sorted(names)


def test_cli_checkpoints_of_finished_run_lists_committed_epochs_and_exits_0(
    finished: FinishedRun,
) -> None:
    done = engine("checkpoints", str(finished.checkpoints))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"checkpoints in {finished.checkpoints} (keeping the newest 3)"
    epochs = [int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+\S+Z\s+(\w+)", done.stdout, re.M)]
    statuses = re.findall(r"^\s*\d+\s+\S+Z\s+(\w+)", done.stdout, re.M)
    newest = last_epoch(finished)
    assert epochs[0] == newest and epochs == sorted(epochs, reverse=True)
    assert 1 <= len(epochs) <= 3 and statuses[0] == "committed"
    assert lines[-1].startswith(f"verdict: OK: the newest manifest (epoch {newest}) is valid")


def test_cli_checkpoints_corrupt_newest_manifest_exits_1_naming_it(
    finished: FinishedRun, tmp_path: Path
) -> None:
    copy = tmp_path / "ck"
    copy.mkdir()
    manifests = sorted(finished.checkpoints.glob("epoch-*.manifest"))
    for m in manifests:
        (copy / m.name).write_bytes(m.read_bytes())
    newest = copy / manifests[-1].name
    newest.write_bytes(newest.read_bytes()[:-7])  # torn
    done = engine("checkpoints", str(copy))
    assert done.returncode == 1
    assert re.search(rf"^\s*{last_epoch(finished)}\s+-\s+CORRUPT", done.stdout, re.M), done.stdout


def test_cli_checkpoints_missing_directory_exits_2(tmp_path: Path) -> None:
    done = engine("checkpoints", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert f"error: {tmp_path / 'nope'}: no such checkpoint directory" in done.stderr


def test_cli_run_of_completed_pipeline_says_already_complete_and_writes_nothing(
    finished: FinishedRun,
) -> None:
    before = sorted(p.name for p in finished.out.iterdir())
    rows = read_committed(finished.out).num_rows
    done = engine("run", str(finished.pipeline), "--topology", str(finished.topology))
    assert done.returncode == 0, done.stderr
    epoch = last_epoch(finished)
    assert done.stdout == f"done: already complete at epoch {epoch}; nothing to do\n"
    assert f"pipeline 'test' already completed at epoch {epoch}" in done.stderr
    assert "pinned:" not in done.stderr  # no child was started
    assert sorted(p.name for p in finished.out.iterdir()) == before
    assert read_committed(finished.out).num_rows == rows == EVENTS // 100_000 * 1000


def test_cli_run_with_checkpoints_of_another_pipeline_exits_2(
    finished: FinishedRun, tmp_path: Path
) -> None:
    other = pipeline_file(tmp_path, EVENTS, finished.out, keys=10)  # same dirs, other query
    done = engine("run", str(other), "--topology", str(finished.topology))
    assert done.returncode == 2
    assert f"checkpoint.dir: {finished.checkpoints} holds epoch" in done.stderr
    assert "of a different pipeline" in done.stderr
