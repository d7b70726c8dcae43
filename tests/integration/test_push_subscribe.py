"""Push clients and subscribers as users run them: their own processes, a real engine.

Every test starts ``python -m engine run`` with a push source -> filter
``price > 0`` -> subscribe sink, and client processes (the script below) that
push rows with ids and subscribe. Row ``id`` has price ``id % 10 - 1``, so the
filter keeps the ids whose last digit is 2..9.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine import connect
from engine.errors import ConnectorError
from engine.shm import segment
from tests.attach_run import ROOT, Run, passing, wait_for


def result(proc: subprocess.Popen[str], out: Path) -> dict[str, Any]:
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.fixture
def run(tmp_path: Path):
    runs: list[Run] = []

    def start(**kw: Any) -> Run:
        runs.append(Run(tmp_path, **kw))
        return runs[-1]

    yield start
    for r in runs:
        r.close()


def test_push_subscribe_one_pusher_subscriber_gets_exactly_the_filtered_rows(run: Any) -> None:
    r = run(end_after=1)
    sub, out = r.subscriber("a")
    pusher = r.client("push", 0, 20_000, 1_000, 0)
    assert pusher.wait(60) == 0, pusher.communicate()[1]
    stdout, _ = r.finish()  # end_after_clients = 1: the pipeline ends by itself
    got = result(sub, out)
    assert got["ids"] == passing(0, 20_000)  # exactly those rows, in the pushed order
    assert got["end"] == "eos" and got["dropped_rows"] == 0
    assert "done: 20,000 events" in stdout


def test_push_two_pushers_at_once_subscriber_gets_both_streams_each_in_order(run: Any) -> None:
    r = run(end_after=2, checkpoint_ms=100)  # epochs: the sink's begin_epoch/pre_commit too
    sub, out = r.subscriber("a")
    pushers = [r.client("push", start, 10_000, 500, 0.001) for start in (0, 1_000_000)]
    for p in pushers:
        assert p.wait(60) == 0, p.communicate()[1]
    r.finish()
    ids = result(sub, out)["ids"]
    assert [i for i in ids if i < 1_000_000] == passing(0, 10_000)
    assert [i for i in ids if i >= 1_000_000] == passing(1_000_000, 10_000)


def test_push_pusher_killed_mid_push_pipeline_goes_on_and_a_new_pusher_attaches(run: Any) -> None:
    r = run()
    sub, out = r.subscriber("a")
    doomed = r.client("push", 0, 10_000_000, 100, 0.001)
    assert doomed.stdout is not None and doomed.stdout.readline() == "pushed\n"
    time.sleep(0.3)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    time.sleep(0.2)
    fresh = r.client("push", 50_000_000, 5_000, 500, 0)
    assert fresh.wait(60) == 0, fresh.communicate()[1]
    expected_new = passing(50_000_000, 5_000)
    wait_for(lambda: r.last_id(out) == expected_new[-1], "the new pusher's rows", sub)
    r.engine.send_signal(signal.SIGTERM)
    stdout, stderr = r.finish()
    assert "stopped by SIGTERM, drained" in stdout
    assert f"client pid {doomed.pid} died" in stderr
    got = result(sub, out)
    assert got["end"] == "eos"
    old = [i for i in got["ids"] if i < 50_000_000]
    assert old == passing(0, old[-1] + 1)  # what it committed before dying: a whole prefix
    assert [i for i in got["ids"] if i >= 50_000_000] == expected_new


def test_push_subscribe_engine_killed_clients_raise_peer_died(run: Any) -> None:
    r = run()
    sub, out = r.subscriber("a")
    pusher = r.client("push", 0, 10_000_000, 100, 0.001)
    wait_for(lambda: r.last_id(out) > 0, "the first rows", sub)
    r.engine.kill()
    r.engine.wait(10)
    _, err = pusher.communicate(timeout=30)
    assert pusher.returncode == 1
    assert "PeerDiedError: push to source 'trades'" in err and "died" in err
    got = result(sub, out)
    assert got["end"].startswith("PeerDiedError") and "sink process died" in got["end"]
    assert got["ids"] == passing(0, got["ids"][-1] + 1)
    children = r.children()
    wait_for(lambda: not any(psutil.pid_exists(p) for p in children), "the children to die")
    segment.sweep_stale()  # what the next run would do: the coordinator could not unlink


def test_subscribe_drop_policy_slow_subscriber_loses_counted_batches_pipeline_goes_on(
    run: Any,
) -> None:
    r = run(end_after=1, sink='policy = "drop"\nring_capacity = 131072')
    live, live_out = r.subscriber("live")
    stuck, stuck_out = r.subscriber("stuck", stall=True)
    killed, _ = r.subscriber("killed")
    killed.kill()
    killed.communicate(timeout=10)
    pusher = r.client("push", 0, 60_000, 1_000, 0.005)
    assert pusher.wait(60) == 0, pusher.communicate()[1]
    _, stderr = r.finish()
    (r.tmp / "resume-stuck").touch()
    expected = passing(0, 60_000)
    got_live, got_stuck = result(live, live_out), result(stuck, stuck_out)
    assert len(got_live["ids"]) + got_live["dropped_rows"] == len(expected)
    assert set(got_live["ids"]) <= set(expected)
    assert got_stuck["dropped_rows"] > 0
    assert len(got_stuck["ids"]) + got_stuck["dropped_rows"] == len(expected)
    assert f"subscriber pid {killed.pid} detached" in stderr
    assert "for slow subscribers (policy drop)" in stderr


def test_subscribe_block_policy_stuck_subscriber_detached_after_timeout(run: Any) -> None:
    r = run(end_after=1, sink='policy = "block"\nblock_timeout_ms = 300\nring_capacity = 131072')
    live, live_out = r.subscriber("live")
    stuck, stuck_out = r.subscriber("stuck", stall=True)
    killed, _ = r.subscriber("killed")
    killed.kill()
    killed.communicate(timeout=10)
    pusher = r.client("push", 0, 60_000, 1_000, 0)
    assert pusher.wait(60) == 0, pusher.communicate()[1]
    _, stderr = r.finish()
    (r.tmp / "resume-stuck").touch()
    got_live, got_stuck = result(live, live_out), result(stuck, stuck_out)
    expected = passing(0, 60_000)
    assert got_live["ids"] == expected and got_live["end"] == "eos"  # block: nothing dropped
    assert got_stuck["end"].startswith("PeerClosedError")
    assert "stayed full for 300 ms (policy block)" in got_stuck["end"]
    assert got_stuck["ids"] == expected[: len(got_stuck["ids"])]  # what it got: a prefix
    assert 0 < len(got_stuck["ids"]) < len(expected)
    assert f"subscriber pid {stuck.pid} detached" in stderr
    assert f"subscriber pid {killed.pid} detached" in stderr


def test_connect_no_engine_clear_error_naming_dir_and_source(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError) as err:
        connect(tmp_path / "nowhere").source("trades")
    assert str(err.value) == (
        f"no running engine publishes source 'trades' in {tmp_path / 'nowhere'} (is the "
        "pipeline running with a [[sources]] of type \"push\" named 'trades'?)"
    )
    with pytest.raises(ConnectorError, match=r"no running engine publishes sink 'alerts'"):
        connect(tmp_path).subscribe("alerts", wait=0.1)
    assert os.listdir(tmp_path) == []


def test_example_push_subscribe_runs_as_documented(tmp_path: Path) -> None:
    example = ROOT / "examples" / "push_subscribe"
    run_dir = str(tmp_path / "run")
    topology = tmp_path / "topology.toml"
    topology.write_text("[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [1]\n")
    env = {
        **os.environ,
        "RINGSTREAM_SOURCES__0__DIR": f'"{run_dir}"',
        "RINGSTREAM_SINKS__0__DIR": f'"{run_dir}"',
        "RINGSTREAM_SOURCES__0__END_AFTER_CLIENTS": "1",
    }
    cmd = [sys.executable, "-m", "engine", "run", str(example / "pipeline.toml")]
    engine = subprocess.Popen(
        [*cmd, "--topology", str(topology)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    script = [sys.executable, "-u", str(example / "subscribe.py"), "--dir", run_dir]
    sub = subprocess.Popen(script, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None and sub.stdout.readline().startswith("subscribed")
        push = [sys.executable, str(example / "push.py"), "--dir", run_dir, "--rows", "20000"]
        pushed = subprocess.run(push, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert pushed.stdout.strip() == "pushed 20,000 rows to 'trades'", pushed.stderr
        stdout, stderr = engine.communicate(timeout=60)
        assert engine.returncode == 0, stderr
        rows = re.search(r"done: 20,000 events .*; ([\d,]+) output rows", stdout)
        assert rows is not None, stdout
        tail = sub.communicate(timeout=30)[0].splitlines()[-1]
        assert tail == f"end of stream: {rows[1]} rows; dropped for us: 0 rows"
    finally:
        for proc in (sub, engine):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
