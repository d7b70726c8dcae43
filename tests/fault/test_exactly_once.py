"""Exactly-once across real crashes: kill -9 children and the coordinator, compare every row.

Every run here is ``python -m engine run`` in a subprocess: a windowed
aggregation with integer aggregates (so outputs compare exactly) over the
generator, key-partitioned over 2 workers, into the exactly-once files sink,
with a checkpoint every 100 ms. The reference is one run without faults
(itself checked against pyarrow). A helper thread reads the coordinator's
stderr for its ``pinned:`` lines (one per attempt) to find the pids to kill.

The random tests draw their kill times and victims from a seed that every
failure message prints; ``FAULT_TEST_SEED=<n>`` replays one.

This module also holds the helpers the other fault tests import (``Job``,
``EngineRun``, ``reference``, ...).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from connectors import testing as connector_testing
from connectors.files.sink import read_committed
from connectors.generator import generate

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 2_000_000
KEYS = 2_000
SEED = 11
EVENTS_PER_SECOND = 200_000  # 10 s of event time: 10 one-second windows per key
MAX_RATE = 2_500_000  # events per wall-clock second: a run of about 0.8 s
COLUMNS = ["window_start", "window_end", "key", "count", "sum_key", "min_ts", "max_ts"]
TOPOLOGY = (
    "[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [0, 1]\n[rings]\ncapacity = 4194304\n"
)


WINDOW_STEP = """[[query.steps]]
op = "window"
key = "key"
window = {{ type = "tumbling", size_ms = 1000 }}
aggregates = [{aggregates}]"""


# --- a pipeline in a directory ---------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One pipeline written under ``dir``: its files and where its output goes."""

    dir: Path
    pipeline: Path
    topology: Path
    out: Path  # the files sink's directory, or the collect sink's JSON-lines file
    checkpoints: Path

    def args(self) -> list[str]:
        return ["run", str(self.pipeline), "--topology", str(self.topology)]


def make_job(
    dir: Path,
    *,
    delivery: str = "exactly-once",
    sink: str = "files",
    source_type: str = "generator",
    parallelism: int = 1,
    interval_ms: int = 100,
    max_restarts: int = 10,
    key_prefix: str | None = None,
    sink_options: str | None = None,
    steps: str | None = None,
) -> Job:
    """Write the test pipeline and topology under ``dir`` (created). ``sink_options``: the
    sink's own keys (default: a files or collect path); ``steps``: the query steps (default:
    the 1 s tumbling window per key)."""
    dir.mkdir(parents=True, exist_ok=True)
    ckpt = dir / "checkpoints"
    out = dir / ("out" if sink == "files" else "out.jsonl")
    if sink_options is None:
        sink_options = f'path = "{out}"' + ('\nformat = "parquet"' if sink == "files" else "")
    strings = "" if key_prefix is None else f'key_prefix = "{key_prefix}"'
    sums = "" if key_prefix else '"sum(key)", '  # no sum of strings
    # the generator at MAX_RATE: a run that lasts about as long on any machine, so that
    # kills and fault points land mid-run (unpaced, the whole run took 0.2 s here)
    pace = f"max_rate = {MAX_RATE}" if source_type == "generator" else ""
    aggregates = f'"count", {sums}"min(ts)", "max(ts)"'
    pipeline = dir / "pipeline.toml"
    pipeline.write_text(f"""
[pipeline]
name = "exactly_once"
delivery = "{delivery}"

[checkpoint]
interval_ms = {interval_ms}
dir = "{ckpt}"
max_restarts = {max_restarts}
restart_backoff_ms = 50

[[sources]]
name = "events"
type = "{source_type}"
parallelism = {parallelism}
event_time = "ts"
events = {EVENTS}
keys = {KEYS}
batch_rows = 4096
batch_max_rows = 4096
seed = {SEED}
events_per_second = {EVENTS_PER_SECOND}
{pace}
{strings}

{steps or WINDOW_STEP.format(aggregates=aggregates)}

[[sinks]]
name = "out"
type = "{sink}"
{sink_options}
""")
    topology = dir / "topology.toml"
    topology.write_text(TOPOLOGY)
    return Job(dir, pipeline, topology, out, ckpt)


def engine(*args: str, env: dict[str, str] | None = None, timeout: float = 180):  # type: ignore[no-untyped-def]
    """``python -m engine ARGS`` to the end: the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def committed(job: Job) -> pa.Table:
    """What the files sink committed, sorted by every column."""
    t = read_committed(job.out)
    return t.sort_by([(c, "ascending") for c in t.column_names])


# --- a run in the background ----------------------------------------------------------------

_PINNED = re.compile(r"(\w+) (?:'[^']*' )?(\d+) pid (\d+) cpu \d+")


class EngineRun:
    """``python -m engine run`` in the background; threads collect its stdout and stderr.

    ``attempts`` holds, per ``pinned:`` line of the coordinator (one per
    attempt: the first start and every restart), the child label -> pid.
    Use as a context manager: leaving it kills the coordinator if it still runs.
    """

    def __init__(self, job: Job, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", *job.args()],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self.stdout = ""
        self.attempts: list[dict[str, int]] = []
        self._cond = threading.Condition()
        self._eof = False
        self._threads = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                if line.startswith("pinned: "):
                    self.attempts.append(
                        {f"{m[0]} {m[1]}": int(m[2]) for m in _PINNED.findall(line)}
                    )
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def pids(self) -> set[int]:
        """Every child pid any attempt reported."""
        with self._cond:
            return {pid for attempt in self.attempts for pid in attempt.values()}

    def wait_attempt(self, n: int, timeout: float = 120) -> dict[str, int] | None:
        """The children of attempt ``n`` (1-based) once pinned; None if the run ended first."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.attempts) >= n or self._eof, timeout)
            return dict(self.attempts[n - 1]) if len(self.attempts) >= n else None

    def wait(self, timeout: float = 180) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return rc

    def __enter__(self) -> EngineRun:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(30)


def kill_child(run: EngineRun, kind: str, delay: float, attempt: int) -> tuple[str, int]:
    """``delay`` s after attempt ``attempt`` started, SIGKILL its child of ``kind``.

    An attempt can end on its own before the kill (a transient error: the runtime
    restarts it); its stderr is printed and the kill goes to the next attempt.
    Returns the label killed and the attempt it belonged to.
    """
    while True:
        children = run.wait_attempt(attempt)
        assert children is not None, f"the run ended before attempt {attempt}\n{run.stderr[-3000:]}"
        time.sleep(delay)
        label = next(label for label in children if label.startswith(kind))
        try:
            os.kill(children[label], signal.SIGKILL)
        except ProcessLookupError:
            print(f"attempt {attempt} ended before {label} was killed:\n{run.stderr[-3000:]}")
            attempt, delay = attempt + 1, min(delay, 0.5)
            continue
        return label, attempt


def survivors(pids: set[int]) -> list[int]:
    """The pids that still run (a zombie has exited)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_gone(pids: set[int], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while survivors(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return survivors(pids)


def fault_seed() -> int:
    """``FAULT_TEST_SEED`` if set, else a fresh one (printed: pytest shows it on failure)."""
    seed = int(os.environ.get("FAULT_TEST_SEED") or random.SystemRandom().randrange(2**31))
    print(f"FAULT_TEST_SEED={seed}")
    return seed


# --- the reference ---------------------------------------------------------------------------

_REFERENCE: dict[str, tuple[pa.Table, Job, float]] = {}


def expected() -> pa.Table:
    """The windowed aggregation computed by pyarrow over the same generated events."""
    batch = generate(SEED, 0, EVENTS, KEYS, EVENTS_PER_SECOND)
    ts = batch.column("ts").to_numpy()
    start = ts - ts % 1000
    t = pa.table(batch).append_column("window_start", pa.array(start))
    g = t.group_by(["window_start", "key"], use_threads=False).aggregate(
        [([], "count_all"), ("key", "sum"), ("ts", "min"), ("ts", "max")]
    )
    out = pa.table(
        {
            "window_start": g["window_start"],
            "window_end": pa.compute.add(g["window_start"], 1000),
            "key": g["key"],
            "count": g["count_all"],
            "sum_key": g["key_sum"],
            "min_ts": g["ts_min"],
            "max_ts": g["ts_max"],
        }
    )
    return out.sort_by([(c, "ascending") for c in COLUMNS])


def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, Job]:
    """The committed output of one run without faults (once per session), and its job.

    Also records how long it processed, for ``kill_delay``.
    """
    if "files" not in _REFERENCE:
        job = make_job(tmp_path_factory.mktemp("reference"))
        done = engine(*job.args())
        assert done.returncode == 0, done.stderr
        took = re.search(rf"done: {EVENTS:,} events in ([\d.]+) s", done.stdout)
        assert took is not None, done.stdout
        _REFERENCE["files"] = (committed(job), job, float(took[1]))
    table, job, _ = _REFERENCE["files"]
    return table, job


def kill_delay(rng: random.Random) -> float:
    """A random time to wait after a start before a kill: early enough to land mid-run.

    Scaled by how long the reference run processed: at most 0.3 of it. The generator is
    paced (``MAX_RATE``), so a run lasts about 0.8 s on any machine that can keep up; an
    unpaced run of 2 sources and 2 workers once ended before a kill at half of it.
    """
    assert _REFERENCE, "reference() runs first"
    return rng.uniform(0.02, max(0.1, 0.3 * _REFERENCE["files"][2]))


@pytest.fixture
def ref(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    return reference(tmp_path_factory)[0]


def row_counts(t: pa.Table) -> Counter[tuple[int, ...]]:
    """The rows of ``t`` (its ``COLUMNS``) as a multiset."""
    return Counter(zip(*(t[c].to_pylist() for c in COLUMNS), strict=True))


def assert_same(got: pa.Table, want: pa.Table, why: str) -> None:
    """Equal tables; otherwise say how many rows are missing and how many are extra."""
    if got.equals(want):
        return
    have, need = row_counts(got), row_counts(want)
    lost, extra = need - have, have - need
    raise AssertionError(
        f"{why}: {got.num_rows} rows committed, {want.num_rows} expected; "
        f"{sum(lost.values())} lost (e.g. {list(lost)[:3]}), "
        f"{sum(extra.values())} extra or duplicated (e.g. {list(extra)[:3]})"
    )


def kill_random_child(run: EngineRun, attempt: int, rng: random.Random) -> str | None:
    """Once attempt ``attempt`` is pinned, wait ``kill_delay``, SIGKILL one of its children
    that still runs, chosen at random; its label, or None if the run ended first."""
    children = run.wait_attempt(attempt)
    if children is None:
        return None
    time.sleep(kill_delay(rng))
    running = sorted(label for label, pid in children.items() if survivors({pid}))
    if not running:
        return None
    label = rng.choice(running)
    with contextlib.suppress(ProcessLookupError):
        os.kill(children[label], signal.SIGKILL)
    return label


# --- tests -----------------------------------------------------------------------------------


def test_exactly_once_run_without_faults_equals_pyarrow(ref: pa.Table) -> None:
    assert ref.column_names == COLUMNS
    assert ref.num_rows == KEYS * 10
    assert_same(ref, expected(), "the fault-free reference run")


@pytest.mark.slow
def test_exactly_once_random_child_kills_output_equals_reference(
    tmp_path: Path, ref: pa.Table
) -> None:
    job = make_job(tmp_path, parallelism=2)  # any split of the generator: the same events
    why = run_with_random_kills(job, kills=3)
    assert_same(committed(job), ref, why)


def run_with_random_kills(job: Job, kills: int) -> str:
    """Run ``job`` and SIGKILL a random child of each attempt, ``kills`` times; check the run
    recovered and left no process behind. Returns the seed and victims, for messages."""
    seed = fault_seed()
    rng = random.Random(seed)
    killed: list[str] = []
    with EngineRun(job) as run:
        while len(killed) < kills:  # each kill restarts the run: attempt k + 1 prints its children
            label = kill_random_child(run, len(killed) + 1, rng)
            if label is None:
                break
            killed.append(label)
        rc = run.wait()
        why = f"seed {seed}, killed {killed}"
        assert rc == 0, f"{why}\n{run.stderr}"
        assert "restart 1/10" in run.stderr, f"{why}: no kill landed mid-run\n{run.stderr}"
        assert not wait_gone(run.pids()), why
    return why


def filter_steps(stateless_in: str) -> str:
    return (f'[query]\nstateless_in = "{stateless_in}"\n\n'
            '[[query.steps]]\nop = "filter"\nwhere = "key % 7 = 0"')  # fmt: skip


def assert_filtered_once(job: Job, why: str) -> None:
    """The committed output holds every event of ``filter_steps`` exactly once."""
    events = pa.table(generate(SEED, 0, EVENTS, KEYS, EVENTS_PER_SECOND))
    want = events.filter(pa.array(events["key"].to_numpy() % 7 == 0))
    got = read_committed(job.out).select(want.column_names)
    have = Counter(zip(*(got[c].to_pylist() for c in want.column_names), strict=True))
    need = Counter(zip(*(want[c].to_pylist() for c in want.column_names), strict=True))
    assert have == need, (
        f"{why}: {sum((need - have).values())} rows lost, "
        f"{sum((have - need).values())} extra or duplicated"
    )


@pytest.mark.slow
@pytest.mark.parametrize("stateless_in", ["sources", "workers"])
def test_exactly_once_stateless_pipeline_random_child_kills_every_row_once(
    tmp_path: Path, ref: pa.Table, stateless_in: str
) -> None:
    """A filter only. In the sources, they write rows straight into the sink's rings
    (``engine.wiring``: direct) while the workers pass barriers on and report epochs; in
    the workers, rows go round-robin by batch through them. Kill -9 children at random
    (workers among them): every selected event exactly once."""
    assert ref.num_rows  # the windowed run: its duration scales kill_delay
    job = make_job(tmp_path, parallelism=2, steps=filter_steps(stateless_in))
    assert_filtered_once(job, run_with_random_kills(job, kills=3))


@pytest.mark.slow
def test_exactly_once_resumes_with_the_stateless_steps_moved(
    tmp_path: Path, ref: pa.Table
) -> None:
    """Drained by SIGTERM with the filter in the sources, run again with it in the workers
    (``stateless_in`` is outside the pipeline hash): the rerun resumes from the
    checkpoint, and every selected event is committed once."""
    job = make_job(tmp_path, parallelism=2, steps=filter_steps("sources"))
    with EngineRun(job) as run:
        assert run.wait_attempt(1) is not None, run.stderr
        time.sleep(0.25 * _REFERENCE["files"][2])
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait() == 0, run.stderr
    drained = read_committed(job.out).num_rows
    assert drained, "the drain committed nothing: the move is not tested"
    make_job(tmp_path, parallelism=2, steps=filter_steps("workers"))
    again = engine(*job.args())
    assert again.returncode == 0, again.stderr
    assert "recovering from epoch" in again.stdout + again.stderr, again.stdout + again.stderr
    assert_filtered_once(job, f"drained after {drained} rows, resumed in the workers")


@pytest.mark.slow
def test_exactly_once_string_keys_random_child_kills_output_equals_pyarrow(
    tmp_path: Path, ref: pa.Table
) -> None:
    """String keys partitioned over 2 workers (and 2 source instances) by their hash: kill -9
    children at random; every window of every key exactly once."""
    assert ref.num_rows  # the integer run: its duration scales kill_delay
    job = make_job(tmp_path, parallelism=2, key_prefix="user-")
    why = run_with_random_kills(job, kills=3)
    want = expected().drop_columns(["sum_key"])
    names = pa.array([f"user-{k:06d}" for k in range(KEYS)])
    want = want.set_column(2, "key", names.take(want["key"]))
    want = want.sort_by([(c, "ascending") for c in want.column_names])
    got = committed(job)
    assert got.num_rows == want.num_rows, f"{why}: {got.num_rows} rows, {want.num_rows} expected"
    assert got.equals(want), f"{why}: committed rows differ from the reference"


@pytest.mark.slow
def test_exactly_once_coordinator_killed_and_rerun_output_equals_reference(
    tmp_path: Path, ref: pa.Table
) -> None:
    seed = fault_seed()
    rng = random.Random(seed)
    job = make_job(tmp_path)
    kills = 0
    for _ in range(6):
        with EngineRun(job) as run:
            children = run.wait_attempt(1)
            family = set(run.pids())
            if kills < 3 and children is not None:
                time.sleep(kill_delay(rng))
                # every process it started (the multiprocess resource tracker too)
                with contextlib.suppress(psutil.NoSuchProcess):
                    family |= {p.pid for p in psutil.Process(run.proc.pid).children(True)}
                if run.proc.poll() is None:
                    run.proc.kill()
                    kills += 1
            rc = run.wait()
            # PR_SET_PDEATHSIG: the children die with their coordinator, whatever killed it
            left = wait_gone(family | run.pids())
            assert not left, f"seed {seed}: {left} outlived the coordinator"
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, f"seed {seed}: exit {rc}\n{run.stderr}"
    assert rc == 0, f"seed {seed}: no rerun completed\n{run.stderr}"
    assert kills >= 1
    assert_same(committed(job), ref, f"seed {seed}, coordinator killed {kills} time(s)")


@pytest.mark.slow
def test_exactly_once_drained_by_sigterm_then_rerun_output_equals_reference(
    tmp_path: Path, ref: pa.Table
) -> None:
    job = make_job(tmp_path)
    with EngineRun(job) as run:
        assert run.wait_attempt(1) is not None, run.stderr
        time.sleep(0.25 * _REFERENCE["files"][2])  # a quarter of the way (paced: about 0.8 s)
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait() == 0, run.stderr
        assert "stopped by SIGTERM, drained" in run.stdout, run.stdout + run.stderr
    drained = row_counts(committed(job))
    # only rows of windows the watermark closed, each final: none half-full, to be redone later
    assert sum(drained.values()) < ref.num_rows
    assert not drained - row_counts(ref), "the drain published rows the reference lacks"
    again = engine(*job.args())
    assert again.returncode == 0, again.stderr
    assert_same(committed(job), ref, "drained, then run again to the end")


@pytest.mark.slow
def test_at_least_once_child_killed_loses_no_row(tmp_path: Path, ref: pa.Table) -> None:
    seed = fault_seed()
    rng = random.Random(seed)
    job = make_job(tmp_path, delivery="at-least-once", sink="collect")
    with EngineRun(job) as run:
        label = kill_random_child(run, 1, rng)
        rc = run.wait()
        assert rc == 0, f"seed {seed}, killed {label}\n{run.stderr}"
        assert "restart 1/10" in run.stderr, f"seed {seed}: no kill landed\n{run.stderr}"
    rows = Counter(
        tuple(row[c] for c in COLUMNS)
        for epoch_rows in connector_testing.read_committed(job.out).values()
        for row in epoch_rows
    )
    want = row_counts(ref)
    lost = want - rows
    assert not lost, f"seed {seed}, killed {label}: {sum(lost.values())} rows lost"
    assert set(rows) == set(want), f"seed {seed}: rows that no run produces"


def test_exactly_once_non_replayable_source_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "oneshot.py").write_text(
        "from connectors.generator import GeneratorSource\n\n\n"
        "class OneShot(GeneratorSource):\n"
        "    def supports_replay(self) -> bool:\n"
        "        return False\n"
    )
    job = make_job(tmp_path, source_type="oneshot:OneShot")
    done = engine(*job.args(), env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert done.returncode == 2, done.stderr
    assert "exactly-once needs replayable sources" in done.stderr
    assert "source 'events' (oneshot:OneShot)" in done.stderr
    assert not job.out.exists() and not job.checkpoints.exists()


@pytest.mark.parametrize(
    "sink",
    [
        "console",
        "collect",  # without a path: in memory, not exactly-once
    ],
)
def test_exactly_once_sink_without_two_phase_commit_refused_naming_it(
    tmp_path: Path, sink: str
) -> None:
    job = make_job(tmp_path, sink=sink)
    text = job.pipeline.read_text()
    job.pipeline.write_text(text.replace(f'path = "{job.out}"', ""))
    done = engine(*job.args())
    assert done.returncode == 2, done.stderr
    assert f"exactly-once needs exactly-once sinks; sink 'out' ({sink}) is not" in done.stderr
    assert not job.checkpoints.exists()
