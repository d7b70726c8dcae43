"""Watching a real run from outside: the Prometheus endpoint, ``status``, JSON logs.

One long test drives a pipeline whose source a test steers through files
(``tests.controlled``): it scrapes the coordinator's endpoint as Prometheus
would (parsed with ``prometheus_client``'s own parser), makes the source
report lag, fail (health degraded → unhealthy → healthy) and crash (a restart
from the checkpoint; counters must not go back), asks ``python -m engine
status --json`` during and after the run, and reads every log line as JSON.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import runinfo
from tests.engine_run import ROOT, engine

Samples = dict[str, list[tuple[dict[str, str], float]]]
PROCESS_LABELS = {"pipeline", "role", "name", "instance"}
REQUIRED = [  # families every run exposes (sample names, as a scraper sees them)
    "ringstream_rows_in_total", "ringstream_rows_out_total", "ringstream_bytes_in_total",
    "ringstream_bytes_out_total", "ringstream_batches_out_total",
    "ringstream_blocked_seconds_total", "ringstream_watermark_seconds",
    "ringstream_watermark_lag_seconds", "ringstream_late_rows_total",
    "ringstream_null_time_rows_total", "ringstream_out_of_range_rows_total",
    "ringstream_dead_letter_rows_total", "ringstream_ring_occupancy_bytes",
    "ringstream_ring_capacity_bytes", "ringstream_checkpoint_duration_seconds_bucket",
    "ringstream_checkpoint_alignment_seconds_bucket", "ringstream_checkpoint_state_bytes_bucket",
    "ringstream_last_committed_epoch", "ringstream_restarts_total",
    "ringstream_connector_health", "ringstream_connector_errors_total",
    "ringstream_connector_retries_total", "ringstream_connector_poll_seconds_bucket",
    "ringstream_connector_write_seconds_bucket", "ringstream_process_cpu_seconds_total",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return parse(r.read().decode())


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    hits = [
        v for lb, v in samples.get(metric, []) if all(lb.get(k) == x for k, x in labels.items())
    ]
    assert len(hits) <= 1, (metric, labels, hits)
    return hits[0] if hits else None


def wait_until(what: str, check: Callable[[], object], proc: subprocess.Popen, timeout=60.0):  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        assert proc.poll() is None, f"the run ended (code {proc.returncode}) while waiting: {what}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(target: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = engine("status", str(target), "--json", "--interval", "0.3")
    return r.returncode, json.loads(r.stdout)


def write_pipeline(tmp_path: Path, port: int) -> Path:
    control = tmp_path / "control"
    control.mkdir()
    path = tmp_path / "watched.toml"
    path.write_text(f"""
[pipeline]
name = "watched"
delivery = "exactly-once"

[checkpoint]
dir = "{tmp_path / "ck"}"
interval_ms = 300
max_restarts = 3
restart_backoff_ms = 100

[metrics]
port = {port}

[[sources]]
name = "steered"
type = "tests.controlled:ControlledSource"
event_time = "ts"
max_out_of_orderness_ms = 0
control = "{control}"
health_failures = 3
retry = {{ max_retries = 100000, base_ms = 5, cap_ms = 20 }}

[[query.steps]]
op = "window"
key = ["key"]
window = {{ type = "tumbling", size_ms = 200 }}
aggregates = ["count"]

[[sinks]]
name = "out"
type = "files"
path = "{tmp_path / "out"}"
format = "parquet"
""")
    return path


def test_a_run_watched_through_metrics_status_and_json_logs(tmp_path: Path) -> None:
    port = free_port()
    pipeline = write_pipeline(tmp_path, port)
    control = tmp_path / "control"
    stderr_path, stdout_path = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with stderr_path.open("w") as err, stdout_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", str(pipeline), "--log-format", "json"],
            cwd=ROOT, stdout=out, stderr=err, text=True,
        )  # fmt: skip
    try:
        info = wait_until("the run file", lambda: runinfo.read(tmp_path / "ck"), proc)
        url = info.metrics_url
        assert url == f"http://127.0.0.1:{port}/metrics"
        first = wait_until(
            "committed epochs and rows through every stage",
            lambda: (s := scrape(url)).get("ringstream_last_committed_epoch")
            and (value(s, "ringstream_rows_in_total", role="sink") or 0) > 0
            and s,
            proc,
        )
        for name in REQUIRED:
            assert name in first, f"{name} missing from the scrape"
        for lb, _ in first["ringstream_rows_out_total"]:
            assert set(lb) >= PROCESS_LABELS and lb["pipeline"] == "watched", lb
        roles = {lb["role"] for lb, _ in first["ringstream_rows_out_total"]}
        assert roles == {"source", "worker", "sink"}
        rings = {(lb["from"], lb["to"]) for lb, _ in first["ringstream_ring_capacity_bytes"]}
        assert rings == {("source steered 0", "worker 0"), ("worker 0", "sink out")}
        # the watermark follows the wall clock (event time = now): lag is small and positive
        lag = value(first, "ringstream_watermark_lag_seconds", role="worker")
        assert lag is not None and -1.0 < lag < 30.0
        # counters grow, label sets stay the same
        time.sleep(1.0)
        second = scrape(url)
        before = value(first, "ringstream_rows_out_total", role="source")
        after = value(second, "ringstream_rows_out_total", role="source")
        assert before is not None and after is not None and after > before
        for name in ("ringstream_rows_out_total", "ringstream_rows_in_total"):
            assert sorted(map(str, (lb for lb, _ in first[name]))) == sorted(
                map(str, (lb for lb, _ in second[name]))
            )
        # a lag the connector reports appears as a gauge, in its unit
        (control / "lag").write_text("12345")
        wait_until(
            "the connector's lag",
            lambda: value(scrape(url), "ringstream_connector_lag", role="source",
                          unit="messages") == 12345.0,  # fmt: skip
            proc,
        )
        # status --json while running
        code, doc = status(pipeline)
        assert code == 0 and doc["running"] is True and doc["pipeline"] == "watched"
        by_role = {p["role"]: p for p in doc["processes"]}
        assert set(by_role) == {"source", "worker", "sink"}
        assert all(p["pid"] > 0 for p in doc["processes"])
        assert by_role["source"]["rows_out_per_s"] > 0
        assert doc["last_committed_epoch"] >= 1 and doc["recent_epochs"]
        assert any(c["lag"].get("messages") == 12345.0 for c in doc["connectors"])
        # health: failing polls make the source unhealthy; when they stop it is healthy again
        (control / "fail").touch()
        health = {"role": "source", "name": "steered"}
        wait_until(
            "unhealthy",
            lambda: value(scrape(url), "ringstream_connector_health", **health) == 2.0,
            proc,
        )
        (control / "fail").unlink()
        wait_until(
            "healthy again",
            lambda: value(scrape(url), "ringstream_connector_health", **health) == 0.0,
            proc,
        )
        s = wait_until(  # the counts come with the next metrics report (every second)
            "retries and errors counted",
            lambda: (s := scrape(url))
            and (value(s, "ringstream_connector_retries_total", **health) or 0) >= 3
            and s,
            proc,
        )
        assert (value(s, "ringstream_connector_errors_total", **health) or 0) >= 3
        # a crash restarts the run from its checkpoint; counters never go back
        rows_before = value(scrape(url), "ringstream_rows_out_total", role="source") or 0.0
        (control / "crash").touch()
        s = wait_until(
            "a restart",
            lambda: (s := scrape(url)) and value(s, "ringstream_restarts_total") == 1.0 and s,
            proc,
        )
        assert (value(s, "ringstream_rows_out_total", role="source") or 0) >= rows_before
        # only /metrics, read-only
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url.replace("/metrics", "/"), timeout=5)
        assert e.value.code == 404
        e.value.close()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)
        assert e.value.code == 405
        e.value.close()
        (control / "end").touch()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # every line is one JSON object with time, level, role, pid and an event
    lines = stderr_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records:
        assert {"time", "level", "role", "pid", "msg", "event"} <= set(r), r
    events = {r["event"] for r in records}
    assert {"start", "metrics", "pinned", "progress", "health", "epoch", "restart"} <= events
    assert {r["role"] for r in records} >= {"coordinator"}
    healths = [r["state"] for r in records if r["event"] == "health"]
    assert healths[:3] == ["degraded", "unhealthy", "healthy"], healths  # then the crash
    summary = [json.loads(line) for line in stdout_path.read_text().splitlines()]
    assert len(summary) == 1 and summary[0]["event"] == "summary"
    assert summary[0]["restarts"] == 1 and summary[0]["events"] > 0
    # after the run: status says how it ended and keeps the last figures
    code, doc = status(tmp_path / "ck")
    assert code == 1 and doc["running"] is False and doc["state"] == "done"
    final = doc["final"]
    assert final["restarts"] == 1
    assert {p["role"] for p in final["processes"]} == {"source", "worker", "sink"}
    assert not _listening(port), "the endpoint must close with the run"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_status_when_nothing_runs(tmp_path: Path) -> None:
    code, doc = status(tmp_path)
    assert code == 1 and doc["running"] is False
    assert "no run has been started" in doc["message"]
    r = engine("status", str(tmp_path / "nope"))
    assert r.returncode == 2 and "neither a pipeline file nor a checkpoint directory" in r.stderr
    # a run killed with SIGKILL leaves its file saying "running": status tells it apart
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runinfo.write(tmp_path, runinfo.RunInfo(pipeline="p", pid=dead.pid, started_unix_s=0.0,
                                            metrics_url="http://127.0.0.1:1/metrics"))  # fmt: skip
    code, doc = status(tmp_path)
    assert code == 1 and doc["state"] == "gone" and "SIGKILL" in doc["message"]
    r = engine("status", str(tmp_path))  # the terminal view, not a TTY here
    assert r.returncode == 1 and "not running" in r.stdout


def test_port_taken_bad_bind_and_metrics_off(tmp_path: Path) -> None:
    from tests.engine_run import pipeline_file

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = pipeline_file(tmp_path, 300_000, tmp_path / "out")
        path.write_text(path.read_text() + f"\n[metrics]\nport = {port}\n")
        r = engine("run", str(path))
        assert r.returncode == 0, r.stderr
        assert f"port {port} is taken" in r.stderr
        info = runinfo.read(Path(f"{tmp_path / 'out'}.checkpoints"))
        assert info is not None and info.state == "done"
        assert info.metrics_url and f":{port}/" not in info.metrics_url
        assert info.final_metrics and "ringstream_rows_out_total" in info.final_metrics
        served = set(parse(info.final_metrics)) | set(  # samples, and families without any
            re.findall(r"^# TYPE (\S+)", info.final_metrics, flags=re.MULTILINE)
        )
        for example in (ROOT / "examples" / "observability").iterdir():  # dashboards, alerts
            for used in set(re.findall(r"ringstream_[a-z_]+", example.read_text())):
                assert used in served or used == "ringstream", f"{example.name}: {used} not served"
    bad = tmp_path / "bad.toml"
    bad.write_text(path.read_text().replace(f"port = {port}", 'bind = "203.0.113.7"'))
    r = engine("run", str(bad))
    assert r.returncode == 2
    assert "metrics.bind = '203.0.113.7'" in r.stderr and "cannot serve metrics" in r.stderr
    off = tmp_path / "off.toml"
    text = path.read_text().replace(f"port = {port}", "enabled = false")
    off.write_text(text.replace(str(tmp_path / "out"), str(tmp_path / "off")))
    r = engine("run", str(off))
    assert r.returncode == 0 and "metrics" not in r.stderr, r.stderr
    info = runinfo.read(Path(f"{tmp_path / 'off'}.checkpoints"))
    assert info is not None and info.state == "done" and info.metrics_url is None
