"""The coordinator's window to the outside: Prometheus endpoint, run file, what it learned.

``Monitor`` is made once per run. ``start()`` opens the metrics endpoint
(``[metrics]``: on by default, ``127.0.0.1:9464``; a taken port falls back to a
free one) and writes the run file (``engine.runinfo``) that ``python -m engine
status`` reads. While the run goes on the coordinator hands it each attempt's
counters, children and rings (``attempt``), what children report (health,
connector metrics, latency histograms) and each epoch. ``end_attempt()``
carries the counts of an attempt before its segments close (counters never go
back across a restart). ``finish()`` writes how the run ended (state, summary,
the last metrics text) and closes the endpoint.
"""

from __future__ import annotations

import ipaddress
import os
import time
from typing import Any

import msgspec

from engine import control, log, runinfo
from engine.counters import Counters
from engine.pipeline import Pipeline
from engine.progress import EpochStat, Summary
from engine.telemetry import Child, Telemetry

Labels = tuple[str, str, str]


class Monitor:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.telemetry = Telemetry(pipeline.pipeline.name)
        self.exporter: Any = None
        self.started = False
        self.info = runinfo.RunInfo(
            pipeline=pipeline.pipeline.name, pid=os.getpid(), started_unix_s=time.time()
        )

    def start(self) -> None:
        cfg = self.pipeline.metrics
        if cfg.enabled:
            from engine.exporter import Exporter

            self.exporter = Exporter(self.telemetry, cfg.bind, cfg.port)
            self.info.metrics_url = self.exporter.url
            if self.exporter.fallback:
                log.say("metrics", f"metrics: port {cfg.port} is taken; serving on "
                        f"{self.exporter.url} instead", url=self.exporter.url)  # fmt: skip
            else:
                log.say("metrics", f"metrics on {self.exporter.url}", url=self.exporter.url)
            if not _loopback(cfg.bind):
                log.say("metrics", f"warning: metrics bound to {cfg.bind}: reachable from other "
                        "machines ([metrics] bind)", bind=cfg.bind)  # fmt: skip
        runinfo.write(runinfo.directory_of(self.pipeline), self.info)
        self.started = True

    # -- an attempt -----------------------------------------------------------------------------
    def attempt(self, counters: Counters, children: list[Any], rings: list[Any]) -> None:
        """A new attempt's children are up: its counters, rings; every connector healthy."""
        t = self.telemetry
        t.attempt(counters, [Child(labels(c), c.slot, c.pid, c.cpu) for c in children], rings)
        with t.lock:  # every connector's series exist from the start (no absent series)
            for c in children:
                if c.role in ("source", "sink"):
                    t.health[labels(c)] = "healthy"
                    t.connector.setdefault(labels(c), {})

    def on_message(self, child: Any, msg: control.Message) -> None:
        t = self.telemetry
        if isinstance(msg, control.Health):
            with t.lock:
                t.health[labels(child)] = msg.state
        elif isinstance(msg, control.Metrics):
            with t.lock:
                t.connector[labels(child)] = msg.values
                if msg.latency:
                    t.latency[labels(child)] = msg.latency
                t.health.setdefault(labels(child), "healthy")

    def epoch(self, stat: EpochStat) -> None:
        self.telemetry.epoch_done(stat)

    def committed(self, epoch: int | None) -> None:
        self.telemetry.committed = epoch

    def restarted(self) -> None:
        self.telemetry.restarts += 1

    def end_attempt(self) -> None:
        self.telemetry.end_attempt()

    def progress(self) -> float | None:
        """A bounded run's share done (sources that report their size), or None."""
        done = total = 0.0
        with self.telemetry.lock:
            for lb, values in self.telemetry.connector.items():
                if lb[0] == "source" and values.get("connector_progress_total", 0) > 0:
                    done += values.get("connector_progress_done", 0.0)
                    total += values["connector_progress_total"]
        return min(1.0, done / total) if total else None

    # -- the end ----------------------------------------------------------------------------
    def finish(self, summary: Summary | None, error: str | None) -> None:
        if not self.started:
            return
        self.started = False
        state: runinfo.State = "done"
        if error:
            state = "failed"
        elif summary is not None and summary.stopped_by:
            state = "stopped"
        final = self.exporter.text().decode() if self.exporter is not None else None
        self.info = msgspec.structs.replace(
            self.info, state=state, ended_unix_s=time.time(), error=error,
            summary=msgspec.to_builtins(summary) if summary is not None else None,
            final_metrics=final,
        )  # fmt: skip
        runinfo.write(runinfo.directory_of(self.pipeline), self.info)
        if self.exporter is not None:
            self.exporter.close()


def labels(child: Any) -> Labels:
    return (child.role, child.name, str(child.index))


def _loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"
