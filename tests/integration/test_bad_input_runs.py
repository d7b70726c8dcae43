"""Bad input through ``python -m engine run``: named and failed, or dead-lettered and counted.

Seen before: an exactly-once pipeline over a 300,000-row CSV with ``abc`` in an int
column at row 150,002 exited 0, "done", with 174,172 rows missing. Now ``on_error =
"fail"`` stops it with exit 1 naming the file, line, column and value (and commits
nothing past the last good checkpoint), and ``on_error = "dead_letter"`` commits
every other row and the bad one to a dead-letter sink: committed + dead-lettered
rows = input rows, also after kill -9.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from connectors.files.committed import read_committed
from tests.engine_run import ROOT, topology_file, wait_for_pinned_line

ROWS = 300_000
BAD_ROW = 150_002  # 1-based data row: line 150,003 of the file


def write_csv(path: Path, rows: int = ROWS, bad: dict[int, str] | None = None) -> None:
    bad = bad or {}
    with open(path, "w") as f:
        f.write("id,sym,qty\n")
        for i in range(rows):
            f.write(f"{i},s{i % 13},{bad.get(i + 1, str(i % 1000))}\n")


def pipeline(tmp_path: Path, on_error: str, follow: bool = False, interval: int = 100) -> Path:
    dead = (
        f'\n[[sinks]]\nname = "bad"\ntype = "files"\ninput = "dead_letter"\nformat = "jsonl"\n'
        f'path = "{tmp_path / "bad"}"\n'
        if on_error == "dead_letter"
        else ""
    )
    p = tmp_path / "p.toml"
    p.write_text(f"""
[pipeline]
name = "bad_input"
delivery = "exactly-once"
[checkpoint]
dir = "{tmp_path / "ckpt"}"
interval_ms = {interval}
restart_backoff_ms = 0
max_restarts = 20
[[sources]]
name = "trades"
type = "files"
path = "{tmp_path / "in"}"
follow = {str(follow).lower()}
schema = {{ id = "int64", sym = "string", qty = "int64" }}
batch_rows = 20_000
on_error = "{on_error}"
[[sinks]]
name = "out"
type = "files"
path = "{tmp_path / "out"}"
{dead}""")
    return p


def run(tmp_path: Path, p: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "run", str(p), "--topology",
         str(topology_file(tmp_path, [1]))],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False,
    )  # fmt: skip


def test_bad_value_fails_the_run_naming_it_and_commits_only_good_epochs(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "trades.csv", bad={BAD_ROW: "abc"})
    done = run(tmp_path, pipeline(tmp_path, "fail"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"trades.csv line {BAD_ROW + 1} column 'qty': value 'abc'" in done.stderr
    assert 'on_error = "dead_letter"' in done.stderr  # it says how to go on
    assert "restart" not in done.stderr  # a data error is permanent: no replay loop
    out = read_committed(tmp_path / "out") if (tmp_path / "out").exists() else pa.table({})
    ids = out.column("id").to_pylist() if out.num_rows else []
    assert ids == list(range(len(ids))) and len(ids) < BAD_ROW  # a prefix, nothing past it


def test_bad_value_dead_lettered_every_row_accounted_for(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "trades.csv", bad={BAD_ROW: "abc", 7: "7.5"})
    done = run(tmp_path, pipeline(tmp_path, "dead_letter"))
    assert done.returncode == 0, done.stderr
    assert "2 unreadable records sent to a dead-letter output" in done.stdout
    out = read_committed(tmp_path / "out")
    bad = read_committed(tmp_path / "bad")
    assert out.num_rows + bad.num_rows == ROWS
    assert sorted(bad.column("line").to_pylist()) == [8, BAD_ROW + 1]
    row = {r["line"]: r for r in bad.to_pylist()}[BAD_ROW + 1]
    assert (row["source"], row["column"], row["value"]) == ("trades", "qty", "abc")
    assert row["raw"] == f"{BAD_ROW - 1},s{(BAD_ROW - 1) % 13},abc\n"
    assert row["location"].endswith("trades.csv")
    assert sorted(out.column("id").to_pylist()) == [
        i for i in range(ROWS) if i not in (6, BAD_ROW - 1)
    ]


@pytest.mark.slow
def test_dead_letters_exactly_once_under_random_kill_9(tmp_path: Path) -> None:
    seed = int(os.environ.get("FAULT_TEST_SEED", random.randrange(1 << 30)))
    print(f"FAULT_TEST_SEED={seed}")
    rng = random.Random(seed)
    (tmp_path / "in").mkdir()
    rows = 3 * ROWS  # long enough a run (about 1 s) for several kills to land in it
    bad = {rng.randrange(1, rows // 3): "x" for _ in range(50)}
    for k in range(3):  # three files, each with its own bad rows
        write_csv(tmp_path / "in" / f"part-{k}.csv", rows // 3, bad)
    p = pipeline(tmp_path, "dead_letter", interval=50)
    topo = str(topology_file(tmp_path, [1]))
    kills = 0
    for attempt in range(10):  # kill -9 at random times (3 kills), then let a run finish
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", str(p), "--topology", topo],
            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        if kills < 3 and rng.random() < 0.3:  # while it starts: any process of its tree
            time.sleep(rng.uniform(0.0, 0.6))  # (the fork server, a child being forked)
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(True)]
                os.kill(rng.choice(tree), signal.SIGKILL)
                kills += 1
        while kills < 3:  # a killed child is restarted by its coordinator: kill again
            try:  # kill once the children run (a run that finds its work done starts none)
                children = list(wait_for_pinned_line(proc).values())
            except AssertionError:
                break
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is not None:
                break
            victim = rng.choice([proc.pid, *children])  # the coordinator, or one child
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
                kills += 1
            if victim == proc.pid:
                break
        stdout, stderr = proc.communicate(timeout=120)
        if proc.returncode == 0 and (kills >= 3 or attempt >= 6):
            break
    else:
        raise AssertionError(f"the run never finished: {stderr}")
    print(f"{kills} kill(s) in {attempt + 1} runs")
    assert kills >= 1
    assert re.search(r"done|already complete", stdout), stderr
    out = read_committed(tmp_path / "out")
    dead = read_committed(tmp_path / "bad")
    n_bad = 3 * len(bad)
    assert dead.num_rows == n_bad, f"{dead.num_rows} dead letters, expected {n_bad}"
    assert out.num_rows == rows - n_bad
    keys = list(
        zip(dead.column("location").to_pylist(), dead.column("line").to_pylist(), strict=True)
    )
    assert len(set(keys)) == n_bad  # each bad record once


def test_follow_mode_bad_file_fails_the_run_naming_it(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "a.csv", 1000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(pipeline(tmp_path, "fail", follow=True)),
         "--topology", str(topology_file(tmp_path, [1]))],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(2.0)
    tmp = tmp_path / "in" / ".b.csv"
    write_csv(tmp, 1000, bad={500: "many"})
    os.replace(tmp, tmp_path / "in" / "b.csv")  # appears complete, as follow mode expects
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stdout + stderr
    assert "b.csv line 501 column 'qty': value 'many'" in stderr
