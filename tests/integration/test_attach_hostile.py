"""Hostile and careless clients of push and subscribe: each is refused alone; the engine goes on.

A malformed batch (string offsets pointing outside its data), a flood of silent
connections, one subscriber too many, another user's umask: real engine, real
client processes, real sockets and rings.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import connect
from engine.attach.protocol import encode, socket_path
from engine.errors import ConnectorError
from tests.attach_run import ROOT, Run, passing, wait_for

HOSTILE = r"""
import json, os, socket, sys
import pyarrow as pa
from engine.attach.protocol import LineBuffer, encode, read_line, schema_from_text, socket_path
from engine.shm import FrameKind, Ring

run_dir = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(str(socket_path(run_dir, "trades", "source")))
sock.sendall(encode({"hello": 1, "pid": os.getpid(), "role": "push"}))
lines = LineBuffer()
welcome = read_line(sock, lines, 10)
ring = Ring.attach(welcome["ring"])
writer = ring.writer()
schema = schema_from_text(welcome["schema"])
writer.write_schema(schema)
sock.sendall(encode({"attached": True}))
# a valid batch, then its strings' last offset made to point 1 GB past their 3 bytes of data
batch = pa.RecordBatch.from_arrays(
    [pa.array([1, 2, 3], pa.int64()), pa.array([5.0, 5.0, 5.0]), pa.array(["a", "b", "c"])],
    schema=schema,
)
payload = bytearray(batch.serialize().to_pybytes())
good = pa.array([0, 1, 2, 3], pa.int32()).buffers()[1].to_pybytes()
at = payload.index(good)
payload[at : at + 16] = pa.array([0, 1, 2, 1 << 30], pa.int32()).buffers()[1].to_pybytes()
writer.put(FrameKind.DATA, bytes(payload))
word = read_line(sock, lines, 20)
print(json.dumps(word), flush=True)
"""


@pytest.fixture
def run(tmp_path: Path):
    runs: list[Run] = []

    def start(**kw) -> Run:  # type: ignore[no-untyped-def]
        r = Run(tmp_path, **kw)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.close()


def test_push_malformed_batch_rejects_only_that_client_and_the_pipeline_goes_on(
    run, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    r = run(end_after=1)
    sub, out = r.subscriber("a")
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE)
    hostile = subprocess.run(
        [sys.executable, str(script), str(r.dir)], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert hostile.returncode == 0, hostile.stderr
    word = json.loads(hostile.stdout.strip().splitlines()[-1])
    assert "malformed" in word["end"] and "batch 1" in word["end"], word
    good = r.client("push", 0, 1000, 100, 0)  # the engine still serves everyone else
    assert good.wait(60) == 0, good.communicate()
    stdout, stderr = r.finish()
    got = json.loads(out.read_text()) if sub.wait(30) == 0 else {}
    assert got["ids"] == passing(0, 1000)
    assert "client pid" in stderr and "rejected" in stderr and "malformed" in stderr


def test_attach_directory_and_sockets_are_owner_only_whatever_the_umask(run) -> None:  # type: ignore[no-untyped-def]
    r = run(end_after=1, umask=0)
    sub, out = r.subscriber("a")
    source = socket_path(r.dir, "trades", "source")
    wait_for(source.exists, "the push source to listen")
    assert stat.S_IMODE(os.stat(r.dir).st_mode) == 0o700
    for sock in (source, socket_path(r.dir, "alerts", "sink")):
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600, sock
    done = r.client("push", 0, 10, 10, 0)
    assert done.wait(60) == 0
    r.finish()


def test_subscribe_refuses_more_subscribers_than_max_clients(run) -> None:  # type: ignore[no-untyped-def]
    r = run(end_after=1, sink="max_clients = 2")
    r.subscriber("a")
    r.subscriber("b")
    with pytest.raises(ConnectorError, match=r"already has 2 subscribers \(max_clients=2\)"):
        connect(r.dir).subscribe("alerts", wait=30)
    done = r.client("push", 0, 10, 10, 0)
    assert done.wait(60) == 0
    r.finish()


def test_silent_connections_do_not_delay_a_real_subscriber(run) -> None:  # type: ignore[no-untyped-def]
    r = run(end_after=1)
    path = socket_path(r.dir, "alerts", "sink")
    wait_for(path.exists, "the subscribe sink to listen", r.engine)
    idle = []
    for _ in range(15):  # connect and say nothing: each used to hold the accept loop 1 s
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(path))
        idle.append(s)
    started = time.monotonic()
    sub = connect(r.dir).subscribe("alerts", wait=10)
    took = time.monotonic() - started
    assert took < 5.0, f"a subscriber waited {took:.1f} s behind silent connections"
    for s in idle:  # the engine hangs up on them after its hello timeout
        s.settimeout(5)
        assert b"no hello" in s.recv(4096)
        s.close()
    sub.close()
    garbage = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    garbage.connect(str(path))
    garbage.sendall(encode({"hello": 99, "role": "nope"}))
    garbage.settimeout(5)
    assert b"expected a 'subscribe' hello" in garbage.recv(4096)
    garbage.close()
    done = r.client("push", 0, 10, 10, 0)
    assert done.wait(60) == 0
    r.finish()
