"""``python -m engine status``: what a running pipeline is doing, live or as one JSON snapshot.

    python -m engine status PIPELINE.toml        # live view, refreshed every second
    python -m engine status CHECKPOINT_DIR --json # one snapshot, for scripts

The pipeline is found by its run file (``engine.runinfo``, in its checkpoint
directory): the coordinator's pid and the URL of its metrics endpoint. The
snapshot is built from two scrapes of that endpoint (``--interval`` apart, for
rates), parsed with ``prometheus_client``'s parser: per process its role, pid,
CPU, connector health and rates; the rings; the watermark (as UTC, and how far
behind the wall clock); the last epochs and their durations; connector lag and
progress; restarts; dropped rows by reason. When no run is going on it says so
(and, if a run ended there, how it ended, with its summary and last figures).

The live view is drawn with ``rich`` (tables refreshed in place): a well-kept
terminal library instead of hand-written escape codes.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

from engine import runinfo
from engine.errors import ConfigError

HEALTH = {0: "healthy", 1: "degraded", 2: "unhealthy"}


def locate(target: str) -> Path:
    """Where the run file of ``target`` is: for a pipeline file, its checkpoint directory
    (``runinfo.directory_of``); for a directory, the directory itself."""
    p = Path(target)
    if p.is_dir():
        return p
    if p.is_file():
        from engine import pipeline

        return runinfo.directory_of(pipeline.load(p))
    raise ConfigError(f"{target}: neither a pipeline file nor a checkpoint directory")


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (our own endpoint)
        return r.read().decode()


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text -> sample name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return out


def _key(labels: dict[str, str]) -> tuple[str, str, str]:
    return (labels.get("role", ""), labels.get("name", ""), labels.get("instance", ""))


def snapshot(first: str, second: str | None = None, seconds: float = 1.0) -> dict[str, Any]:
    """A structured view of one scrape (rates from a second one ``seconds`` later)."""
    a = parse(first)
    b = parse(second) if second is not None else a

    def by_key(samples: dict[str, list], name: str) -> dict[tuple[str, str, str], float]:
        return {_key(lb): v for lb, v in samples.get(name, [])}

    procs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for labels, _ in b.get("ringstream_process_info", []):
        k = _key(labels)
        procs[k] = {"role": k[0], "name": k[1], "instance": int(k[2] or 0),
                    "pid": int(labels["pid"]), "cpu": int(labels["cpu"])}  # fmt: skip
    for metric in ("rows_in", "rows_out", "bytes_in", "bytes_out"):
        now, then = by_key(b, f"ringstream_{metric}_total"), by_key(a, f"ringstream_{metric}_total")
        for k, v in now.items():
            p = procs.setdefault(k, {"role": k[0], "name": k[1], "instance": int(k[2] or 0)})
            p[metric] = int(v)
            if second is not None and seconds > 0:
                p[f"{metric}_per_s"] = round((v - then.get(k, v)) / seconds, 1)
    cpu_now, cpu_then = by_key(b, "ringstream_process_cpu_seconds_total"), by_key(
        a, "ringstream_process_cpu_seconds_total"
    )
    health = by_key(b, "ringstream_connector_health")
    for k, p in procs.items():
        if second is not None and k in cpu_now and seconds > 0:
            p["cpu_percent"] = round(100 * (cpu_now[k] - cpu_then.get(k, cpu_now[k])) / seconds, 1)
        if k in health:
            p["health"] = HEALTH.get(int(health[k]), "unknown")
    marks = [v for _, v in b.get("ringstream_watermark_seconds", [])]
    wm = min(marks) if marks else None
    rings = [
        {"from": lb["from"], "to": lb["to"], "occupancy_bytes": int(v)}
        for lb, v in b.get("ringstream_ring_occupancy_bytes", [])
    ]
    caps = {(lb["from"], lb["to"]): v for lb, v in b.get("ringstream_ring_capacity_bytes", [])}
    for r in rings:
        cap = caps.get((r["from"], r["to"]), 0)
        r["capacity_bytes"] = int(cap)
        r["fill"] = round(r["occupancy_bytes"] / cap, 4) if cap else 0
    connectors = []
    lags: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for lb, v in b.get("ringstream_connector_lag", []):
        lags[_key(lb)][lb["unit"]] = v
    progress = by_key(b, "ringstream_source_progress_ratio")
    errors = by_key(b, "ringstream_connector_errors_total")
    retries = by_key(b, "ringstream_connector_retries_total")
    for k, h in sorted(health.items()):
        connectors.append({
            "role": k[0], "name": k[1], "instance": int(k[2] or 0), "health": HEALTH.get(int(h)),
            "errors": int(errors.get(k, 0)), "retries": int(retries.get(k, 0)),
            "lag": lags.get(k, {}), "progress": progress.get(k),
        })  # fmt: skip
    dropped = {
        reason: int(sum(v for _, v in b.get(f"ringstream_{reason}_total", [])))
        for reason in ("late_rows", "null_time_rows", "out_of_range_rows", "dead_letter_rows")
    }
    last = b.get("ringstream_last_committed_epoch", [])
    recent = sorted(
        ({"epoch": int(lb["epoch"]), "duration_s": round(v, 4)}
         for lb, v in b.get("ringstream_epoch_duration_seconds", [])),
        key=lambda e: e["epoch"],
    )  # fmt: skip
    restarts = b.get("ringstream_restarts_total", [])
    return {
        "processes": sorted(procs.values(), key=lambda p: (p["role"], p["name"], p["instance"])),
        "rings": rings,
        "watermark": None if wm is None else {
            "utc": _utc(wm), "unix_s": wm, "lag_s": round(time.time() - wm, 3)},
        "last_committed_epoch": int(last[0][1]) if last else None,
        "recent_epochs": recent,
        "connectors": connectors,
        "restarts": int(restarts[0][1]) if restarts else 0,
        "dropped": dropped,
    }  # fmt: skip


def _utc(seconds: float) -> str:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def report(directory: Path, interval: float) -> tuple[int, dict[str, Any]]:
    """(exit code, the JSON document ``status --json`` prints)."""
    info = runinfo.read(directory)
    if info is None:
        why = f"no run has been started in {directory} (no {runinfo.NAME})"
        return 1, {"running": False, "checkpoint_dir": str(directory), "message": why}
    doc: dict[str, Any] = {"pipeline": info.pipeline, "checkpoint_dir": str(directory),
                           "pid": info.pid, "started": _utc(info.started_unix_s)}  # fmt: skip
    alive = info.state == "running" and _alive(info.pid)
    if not alive:
        doc["running"] = False
        if info.state == "running":
            doc["state"] = "gone"
            doc["message"] = (
                f"the run (pid {info.pid}) is not running: it ended without saying how "
                "(killed with SIGKILL?); the next run recovers from its last checkpoint"
            )
        else:
            doc.update(state=info.state, ended=_utc(info.ended_unix_s or 0), summary=info.summary)
            doc["message"] = f"not running: the last run {info.state} at {doc['ended']}"
            if info.error:
                doc["error"] = info.error
            if info.final_metrics:
                doc["final"] = snapshot(info.final_metrics)
        return 1, doc
    if info.metrics_url is None:
        doc.update(running=True, message=(
            f"running (pid {info.pid}), but its metrics endpoint is off "
            "([metrics] enabled = false): nothing more to show"))  # fmt: skip
        return 0, doc
    doc.update(running=True, metrics_url=info.metrics_url)
    try:
        first = scrape(info.metrics_url)
        time.sleep(interval)
        second = scrape(info.metrics_url)
    except (urllib.error.URLError, OSError) as exc:
        doc.update(running=False, message=f"the run (pid {info.pid}) did not answer: {exc}")
        return 1, doc
    doc.update(snapshot(first, second, interval))
    return 0, doc


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def live(directory: Path, interval: float) -> int:
    """The refreshing terminal view; returns when the run ends or on Ctrl-C."""
    from rich.console import Console, Group
    from rich.live import Live

    console = Console()
    code, doc = report(directory, min(interval, 0.5))
    if not doc.get("running") or "metrics_url" not in doc:
        console.print(render(doc))
        return code
    try:
        with Live(Group(render(doc)), console=console, refresh_per_second=4) as view:
            while doc.get("running"):
                code, doc = report(directory, interval)
                view.update(Group(render(doc)))
    except KeyboardInterrupt:
        return 0
    return 0


def render(doc: dict[str, Any]) -> Any:
    """The rich renderable of a status document."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(f"pipeline {doc.get('pipeline', '?')!r}  ", style="bold")
    head.append(doc.get("message") or f"running, pid {doc.get('pid')}, since {doc.get('started')}")
    parts: list[Any] = [head]
    view = doc if "processes" in doc else doc.get("final")
    if not view:
        if doc.get("summary"):
            parts.append(Text(json.dumps(doc["summary"], indent=1)))
        return Group(*parts)
    procs = Table(title="processes", expand=False)
    for col in ("role", "name", "inst", "pid", "cpu", "cpu %", "health", "in/s", "out/s"):
        right = col in ("pid", "cpu", "cpu %", "in/s", "out/s")
        procs.add_column(col, justify="right" if right else "left")
    for p in view["processes"]:
        procs.add_row(
            p["role"], p["name"], str(p["instance"]), str(p.get("pid", "")), str(p.get("cpu", "")),
            _num(p.get("cpu_percent")), p.get("health", ""), _num(p.get("rows_in_per_s")),
            _num(p.get("rows_out_per_s")),
        )  # fmt: skip
    parts.append(procs)
    wm = view.get("watermark")
    epochs = ", ".join(f"{e['epoch']} ({e['duration_s'] * 1000:.0f} ms)"
                       for e in view["recent_epochs"][-5:]) or "-"  # fmt: skip
    parts.append(Text(
        f"watermark {wm['utc'] if wm else '-'}"
        + (f" ({wm['lag_s']:.1f} s behind)" if wm else "")
        + f" | last committed epoch {view['last_committed_epoch']} | recent epochs {epochs}"
        + f" | restarts {view['restarts']}"
    ))  # fmt: skip
    if view["rings"]:
        rings = Table(title="rings")
        for col in ("from", "to", "fill"):
            rings.add_column(col)
        for r in sorted(view["rings"], key=lambda r: -r["fill"])[:12]:
            rings.add_row(r["from"], r["to"], f"{r['fill']:.0%}")
        parts.append(rings)
    if view["connectors"]:
        conns = Table(title="connectors")
        for col in ("role", "name", "inst", "health", "errors", "retries", "lag", "progress"):
            conns.add_column(col)
        for c in view["connectors"]:
            lag = ", ".join(f"{v:,.0f} {u}" for u, v in c["lag"].items()) or "-"
            done = "-" if c["progress"] is None else f"{c['progress']:.0%}"
            conns.add_row(c["role"], c["name"], str(c["instance"]), c["health"] or "",
                          str(c["errors"]), str(c["retries"]), lag, done)  # fmt: skip
        parts.append(conns)
    dropped = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in view["dropped"].items() if v)
    if dropped:
        parts.append(Text(f"dropped: {dropped}"))
    return Group(*parts)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f} M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f} K"
    return f"{v:,.1f}" if v != int(v) else f"{int(v):,}"


def main(target: str, as_json: bool, interval: float) -> int:
    directory = locate(target)
    if as_json:
        code, doc = report(directory, interval)
        sys.stdout.write(json.dumps(doc, indent=1, default=str) + "\n")
        return code
    return live(directory, interval)
