"""A real engine with a push source and a subscribe sink, and client processes, for tests.

``Run(tmp_path)`` starts ``python -m engine run`` with a push source -> filter
``price > 0`` -> subscribe sink, and ``Run.client(...)`` client processes (the
script ``CLIENT``) that push rows with ids and subscribe. Row ``id`` has price
``id % 10 - 1``, so the filter keeps the ids whose last digit is 2..9.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from engine.shm import segment

ROOT = Path(__file__).resolve().parents[1]

CLIENT = r"""
import json, os, sys, time
import pyarrow as pa
from engine import connect
from engine.errors import PeerGoneError

def rows(start, n):
    ids = pa.array(range(start, start + n), pa.int64())
    return pa.record_batch({"id": ids, "price": pa.array([i % 10 - 1.0 for i in ids.to_pylist()]),
                            "sym": pa.array([f"s{i % 7}" for i in ids.to_pylist()])})

mode, run_dir = sys.argv[1], sys.argv[2]
if mode == "push":                      # push START COUNT BATCH PAUSE_S
    start, count, batch = (int(a) for a in sys.argv[3:6])
    pause = float(sys.argv[6])
    with connect(run_dir).source("trades", wait=30) as src:
        for off in range(0, count, batch):
            src.push_arrow(rows(start + off, min(batch, count - off)))
            print("pushed", flush=True)
            time.sleep(pause)
elif mode == "sub":                     # sub OUT [STALL_FLAG]
    out, flag = sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None
    ids, end = [], "eos"
    sub = connect(run_dir).subscribe("alerts", wait=30)
    def progress():
        with open(out + ".tmp", "w") as f:
            f.write(f"{len(ids)} {ids[-1] if ids else -1}")
        os.replace(out + ".tmp", out + ".progress")
    progress()
    while flag and not os.path.exists(flag):
        time.sleep(0.02)
    try:
        for b in sub:
            ids.extend(b.column("id").to_pylist())
            progress()
    except PeerGoneError as exc:
        end = f"{type(exc).__name__}: {exc}"
    with open(out, "w") as f:
        json.dump({"ids": ids, "end": end, "dropped_rows": sub.dropped_rows}, f)
"""


def passing(start: int, count: int) -> list[int]:
    return [i for i in range(start, start + count) if i % 10 >= 2]


class Run:
    """One engine run in ``tmp_path`` plus the client processes of one test."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        end_after: int = 0,
        sink: str = "",
        checkpoint_ms: int = 0,
        umask: int | None = None,
    ) -> None:
        self.tmp = tmp_path
        self.dir = tmp_path / "run"
        self.script = tmp_path / "client.py"
        self.script.write_text(CLIENT)
        pipeline = tmp_path / "pipeline.toml"
        pipeline.write_text(f"""
[pipeline]
name = "push_subscribe_test"
[checkpoint]
interval_ms = {checkpoint_ms}
dir = "{tmp_path / "ckpt"}"
[[sources]]
name = "trades"
type = "connectors.push:PushSource"
dir = "{self.dir}"
schema = {{ id = "int64", price = "float64", sym = "string" }}
end_after_clients = {end_after}
batch_max_wait_ms = 5
[[query.steps]]
op = "filter"
where = "price > 0"
[[sinks]]
name = "alerts"
type = "connectors.subscribe:SubscribeSink"
dir = "{self.dir}"
{sink}
""")
        topology = tmp_path / "topology.toml"
        topology.write_text(
            "[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [1]\n"
            "[rings]\ncapacity = 4194304\n"
        )
        self.segments_before = set(segment.list_segments())
        self.out = open(tmp_path / "engine.out", "w")  # noqa: SIM115
        self.err = open(tmp_path / "engine.err", "w")  # noqa: SIM115
        self.engine = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", str(pipeline), "--topology", str(topology)],
            cwd=ROOT,
            stdout=self.out,
            stderr=self.err,
            text=True,
            preexec_fn=None if umask is None else (lambda: os.umask(umask)),
        )
        self.clients: list[subprocess.Popen[str]] = []

    def client(self, *args: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(self.script), args[0], str(self.dir), *map(str, args[1:])],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.clients.append(proc)
        return proc

    def subscriber(self, tag: str, stall: bool = False) -> tuple[subprocess.Popen[str], Path]:
        out = self.tmp / f"sub-{tag}.json"
        args = [str(self.tmp / f"resume-{tag}")] if stall else []
        proc = self.client("sub", out, *args)
        wait_for(lambda: Path(f"{out}.progress").exists(), f"subscriber {tag} to attach", proc)
        return proc, out

    def last_id(self, out: Path) -> int:
        """The id of the last row subscriber ``out`` received so far (-1: none)."""
        try:
            return int(Path(f"{out}.progress").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return -1

    def children(self) -> list[int]:
        """The pids of the engine's children, from its "pinned:" line."""
        text = (self.tmp / "engine.err").read_text()
        line = next((x for x in text.splitlines() if x.startswith("pinned: ")), "")
        return [int(p) for p in re.findall(r"pid (\d+)", line)]

    def finish(self, timeout: float = 30) -> tuple[str, str]:
        """Wait for the engine to exit (0); check that it left no process or socket."""
        rc = self.engine.wait(timeout)
        self.out.close()
        self.err.close()
        stdout = (self.tmp / "engine.out").read_text()
        stderr = (self.tmp / "engine.err").read_text()
        assert rc == 0, stderr
        children = self.children()
        assert children and not [
            p
            for p in children
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        assert list(self.dir.glob("*.sock")) == []
        return stdout, stderr

    def close(self) -> None:
        """Stop what still runs; no segment of this engine's processes may be left."""
        for proc in [*self.clients, self.engine]:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        if not self.out.closed:
            self.out.close()
            self.err.close()
        ours = {self.engine.pid, *self.children()}  # other test runs may share /dev/shm
        new = set(segment.list_segments()) - self.segments_before
        assert [n for n in new if segment.owner_pid(n) in ours] == []


def wait_for(
    cond: Callable[[], bool],
    what: str,
    proc: subprocess.Popen[str] | None = None,
    timeout: float = 40,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"waiting for {what}: the process exited: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
