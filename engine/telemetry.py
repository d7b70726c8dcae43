"""What a running pipeline exposes as Prometheus metrics, read at scrape time.

``Telemetry`` is the coordinator's record of the run for the exporter: the
counters segment and rings of the current attempt (shared memory the children
write; nothing is added to the data path), what the control messages brought
(connector health, metrics, latency buckets; epoch statistics) and, so that
counters never go backwards, the totals of earlier attempts (a restart starts
children with fresh counters). ``TelemetryCollector.collect()`` turns it into
metric families under one lock (a restart closes segments a scrape must not
read).

Names follow Prometheus conventions (base units, ``_total`` counters,
``_seconds``, ``_bytes``); every family has the label ``pipeline``, and
per-process families ``role``, ``name`` (the source or sink; empty for a
worker) and ``instance``:

=========================================  =====================================
``ringstream_rows_in_total``                rows a source read, a worker or sink received
``ringstream_rows_out_total``               rows a source or worker sent on (after a
                                            source's own steps: filters)
``ringstream_batches_{in,out}_total``       the same, in batches
``ringstream_bytes_{in,out}_total``         the same, in bytes (Arrow buffers)
``ringstream_blocked_seconds_total``        time spent waiting for room in a full ring
``ringstream_watermark_seconds``            event-time watermark (Unix seconds)
``ringstream_watermark_lag_seconds``        wall clock minus the watermark
``ringstream_late_rows_total``              rows dropped behind the watermark
``ringstream_null_time_rows_total``         rows dropped: a null event time or join key
``ringstream_out_of_range_rows_total``      rows dropped: an event time out of range
``ringstream_dead_letter_rows_total``       records a source sent to its dead-letter output
``ringstream_process_cpu_seconds_total``    CPU time of each process
``ringstream_process_info``                 pid and CPU of each process (labels)
``ringstream_ring_occupancy_bytes``         bytes in a ring not yet read (``from``, ``to``)
``ringstream_ring_capacity_bytes``          its capacity
``ringstream_checkpoint_duration_seconds``  histogram: barrier sent to manifest written
``ringstream_checkpoint_alignment_seconds`` histogram: barrier alignment in the workers
``ringstream_checkpoint_state_bytes``       histogram: state written per checkpoint
``ringstream_last_committed_epoch``         the last epoch every sink confirmed
``ringstream_restarts_total``               recoveries from a checkpoint
``ringstream_connector_health``             0 healthy, 1 degraded, 2 unhealthy
``ringstream_connector_errors_total``       failed connector calls
``ringstream_connector_retries_total``      retries of transient failures
``ringstream_connector_poll_seconds``       histogram: a source's ``poll_batch`` time
``ringstream_connector_write_seconds``      histogram: a sink's ``write_batch`` time
``ringstream_connector_lag``                what a connector reports as ``lag_<unit>`` (``unit``)
``ringstream_connector_value``              every other number it reports (``key``)
``ringstream_source_progress_ratio``        a bounded source's share done (0..1)
=========================================  =====================================
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from engine.counters import NO_WATERMARK, Counters
from engine.progress import EpochStat
from ring1.health import STATE_CODES
from ring1.metrics import BOUNDS_S

PROCESS_COUNTERS = {  # counter field -> (metric, help, scale)
    "rows_in": ("rows_in", "Rows a source read, or a worker or sink received.", 1.0),
    "rows_out": ("rows_out", "Rows a source or worker sent on.", 1.0),
    "batches_in": ("batches_in", "Batches a source read, or a worker or sink received.", 1.0),
    "batches_out": ("batches_out", "Batches a source or worker sent on.", 1.0),
    "bytes_in": ("bytes_in", "Bytes (Arrow buffers) a source read or a sink received.", 1.0),
    "bytes_out": ("bytes_out", "Bytes (Arrow buffers) a source sent on.", 1.0),
    "blocked_ns": ("blocked_seconds", "Time spent waiting for room in a full ring.", 1e-9),
    "late_rows": ("late_rows", "Rows dropped behind the watermark.", 1.0),
    "null_time_rows": ("null_time_rows", "Rows dropped: a null event time or join key.", 1.0),
    "out_of_range_rows": ("out_of_range_rows", "Rows dropped: event time out of range.", 1.0),
    "dead_letter_rows": ("dead_letter_rows", "Records sent to a dead-letter output.", 1.0),
}
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BYTES_BUCKETS = tuple(float(1 << k) for k in range(10, 34, 2))  # 1 KiB .. 8 GiB
Labels = tuple[str, str, str]  # role, name, instance
PROCESS_LABELS = ("pipeline", "role", "name", "instance")
_G, _C, _H = GaugeMetricFamily, CounterMetricFamily, HistogramMetricFamily
CARRIED = ("errors", "retries", "records", "bytes", "polls")  # connector counts across attempts


class _Hist:
    """Cumulative histogram state for one family (fixed buckets)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = next((k for k, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[i] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


@dataclass
class Child:
    labels: Labels
    slot: int
    pid: int
    cpu: int


@dataclass
class Telemetry:
    pipeline: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    counters: Counters | None = None
    children: list[Child] = field(default_factory=list)
    rings: list[tuple[str, str, Any]] = field(default_factory=list)  # (from, to, Ring)
    carried: dict[tuple[Labels, str], float] = field(default_factory=dict)
    connector: dict[Labels, dict[str, float]] = field(default_factory=dict)
    latency: dict[Labels, list[int]] = field(default_factory=dict)
    latency_carried: dict[Labels, list[int]] = field(default_factory=dict)  # earlier attempts
    health: dict[Labels, str] = field(default_factory=dict)
    checkpoint_duration: _Hist = field(default_factory=lambda: _Hist(DURATION_BUCKETS))
    checkpoint_alignment: _Hist = field(default_factory=lambda: _Hist(DURATION_BUCKETS))
    checkpoint_state: _Hist = field(default_factory=lambda: _Hist(BYTES_BUCKETS))
    recent_epochs: list[tuple[int, float]] = field(default_factory=list)  # (epoch, seconds)
    committed: int | None = None
    restarts: int = 0

    # -- the coordinator's side --------------------------------------------------------------
    def attempt(self, counters: Counters, children: list[Child], rings: list) -> None:  # type: ignore[type-arg]
        with self.lock:
            self.counters, self.children, self.rings = counters, children, rings

    def end_attempt(self) -> None:
        """Before the attempt's segments close: carry its counts so counters never go back."""
        with self.lock:
            if self.counters is not None:
                for c in self.children:
                    for fld in PROCESS_COUNTERS:
                        key = (c.labels, fld)
                        value = float(self.counters.get(c.slot, fld))
                        self.carried[key] = self.carried.get(key, 0.0) + value
            for labels, values in self.connector.items():
                for k in CARRIED:  # counts move to ``carried``; gauges (lag, progress) stay
                    if k in values:
                        key = (labels, f"connector:{k}")
                        self.carried[key] = self.carried.get(key, 0.0) + values.pop(k)
            for labels, counts in self.latency.items():
                self.latency_carried[labels] = _add(self.latency_carried.get(labels, []), counts)
            self.latency = {}
            self.counters, self.children, self.rings = None, [], []

    def epoch_done(self, stat: EpochStat) -> None:
        with self.lock:
            self.checkpoint_duration.observe(stat.duration_ms / 1000)
            self.checkpoint_alignment.observe(stat.alignment_ms / 1000)
            self.checkpoint_state.observe(float(stat.state_bytes))
            self.recent_epochs = [*self.recent_epochs[-9:], (stat.epoch, stat.duration_ms / 1000)]

    # -- read at scrape time -------------------------------------------------------------------
    def value(self, c: Child, fld: str) -> float:
        assert self.counters is not None
        return self.carried.get((c.labels, fld), 0.0) + float(self.counters.get(c.slot, fld))


class TelemetryCollector:
    """A ``prometheus_client`` collector over one ``Telemetry``."""

    def __init__(self, t: Telemetry) -> None:
        self.t = t

    def collect(self) -> Iterator[Metric]:
        t = self.t
        with t.lock:
            yield from self._processes()
            yield from self._rings()
            yield from self._checkpoints()
            yield from self._connectors()

    def _labels(self, c: Labels) -> list[str]:
        return [self.t.pipeline, *c]

    def _processes(self) -> Iterator[Metric]:
        t = self.t
        live = t.counters is not None
        current = {c.labels for c in t.children} if live else set()
        for fld, (metric, doc, scale) in PROCESS_COUNTERS.items():
            fam = _family(_C, metric, doc)
            if live:
                for c in t.children:
                    fam.add_metric(self._labels(c.labels), t.value(c, fld) * scale)
            for (labels, key), value in t.carried.items():
                if key == fld and labels not in current:  # ended in an earlier attempt
                    fam.add_metric(self._labels(labels), value * scale)
            yield fam
        wm = _family(_G, "watermark_seconds", "Event-time watermark.")
        lag = _family(_G, "watermark_lag_seconds", "Wall clock minus the watermark.")
        cpu = _family(_C, "process_cpu_seconds_total", "CPU time of each process.")
        info = _family(_G, "process_info", "Pid and CPU of a process (value 1).", "pid", "cpu")
        now = time.time()
        for c in t.children if live else []:
            assert t.counters is not None
            mark = t.counters.get(c.slot, "watermark")
            if mark != NO_WATERMARK:
                wm.add_metric(self._labels(c.labels), mark / 1000)
                lag.add_metric(self._labels(c.labels), now - mark / 1000)
            info.add_metric([*self._labels(c.labels), str(c.pid), str(c.cpu)], 1.0)
            try:
                times = psutil.Process(c.pid).cpu_times()
                cpu.add_metric(self._labels(c.labels), times.user + times.system)
            except psutil.Error:
                pass
        yield from (wm, lag, cpu, info)

    def _rings(self) -> Iterator[Metric]:
        labels = ["pipeline", "from", "to"]
        occ = GaugeMetricFamily(
            "ringstream_ring_occupancy_bytes", "Bytes in a ring not yet read.", labels=labels
        )
        cap = GaugeMetricFamily(
            "ringstream_ring_capacity_bytes", "Capacity of a ring.", labels=labels
        )
        for src, dst, ring in self.t.rings:
            stats = ring.stats()
            occ.add_metric([self.t.pipeline, src, dst], float(stats["occupancy"]))
            cap.add_metric([self.t.pipeline, src, dst], float(stats["capacity"]))
        yield from (occ, cap)

    def _checkpoints(self) -> Iterator[Metric]:
        t, p = self.t, [self.t.pipeline]
        for name, hist, doc in (
            ("checkpoint_duration_seconds", t.checkpoint_duration, "Barrier sent to manifest."),
            ("checkpoint_alignment_seconds", t.checkpoint_alignment, "Barrier alignment."),
            ("checkpoint_state_bytes", t.checkpoint_state, "State written per checkpoint."),
        ):
            fam = HistogramMetricFamily(f"ringstream_{name}", doc, labels=["pipeline"])
            fam.add_metric(p, hist.buckets(), sum_value=hist.sum)
            yield fam
        last = GaugeMetricFamily(
            "ringstream_last_committed_epoch", "Last epoch every sink confirmed.",
            labels=["pipeline"],
        )  # fmt: skip
        if t.committed is not None:
            last.add_metric(p, float(t.committed))
        yield last
        recent = GaugeMetricFamily(
            "ringstream_epoch_duration_seconds", "Duration of the last epochs.",
            labels=["pipeline", "epoch"],
        )  # fmt: skip
        for epoch, seconds in t.recent_epochs:
            recent.add_metric([*p, str(epoch)], seconds)
        yield recent
        yield _counter("ringstream_restarts", "Recoveries from a checkpoint.", p, t.restarts)

    def _connectors(self) -> Iterator[Metric]:
        t = self.t
        health = _family(_G, "connector_health", "0 healthy, 1 degraded, 2 unhealthy.")
        errors = _family(_C, "connector_errors", "Failed connector calls.")
        retries = _family(_C, "connector_retries", "Retries of transient failures.")
        lag = _family(_G, "connector_lag", "What a connector reports as lag (unit).", "unit")
        progress = _family(_G, "source_progress_ratio", "A bounded source's share done.")
        other = _family(_G, "connector_value", "Any other number a connector reports.", "key")
        poll = _family(_H, "connector_poll_seconds", "A source's poll_batch time.")
        write = _family(_H, "connector_write_seconds", "A sink's write_batch time.")
        for labels in sorted(set(t.connector) | set(t.health)):
            values = t.connector.get(labels, {})
            lv = self._labels(labels)
            health.add_metric(lv, float(STATE_CODES.get(t.health.get(labels, "healthy"), 0)))
            for fam, key in ((errors, "errors"), (retries, "retries")):
                carried = t.carried.get((labels, f"connector:{key}"), 0.0)
                fam.add_metric(lv, carried + values.get(key, 0.0))
            for key, value in values.items():
                if not key.startswith("connector_"):
                    continue
                own = key.removeprefix("connector_")
                if own.startswith("lag"):
                    lag.add_metric([*lv, own.removeprefix("lag").lstrip("_") or "items"], value)
                elif own == "progress_total" and value > 0:
                    done = values.get("connector_progress_done", 0.0)
                    progress.add_metric(lv, min(1.0, done / value))
                elif own != "progress_done":
                    other.add_metric([*lv, own], value)
            counts = _add(t.latency.get(labels, []), t.latency_carried.get(labels, []))
            if labels[0] in ("source", "sink"):
                counts = counts or [0] * len(BOUNDS_S)
                (poll if labels[0] == "source" else write).add_metric(
                    lv, _pow2_buckets(counts), sum_value=_pow2_sum(counts)
                )
        yield from (health, errors, retries, lag, progress, other, poll, write)


def _family(kind: type, name: str, doc: str, *extra: str) -> Any:
    """A family labelled per process (``pipeline role name instance``, then ``extra``)."""
    return kind(f"ringstream_{name}", doc, labels=[*PROCESS_LABELS, *extra])


def _counter(name: str, doc: str, labels: list[str], value: float) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=["pipeline"])
    fam.add_metric(labels, float(value))
    return fam


def _add(a: list[int], b: list[int]) -> list[int]:
    """Bucket counts added position by position (the lists may differ in length)."""
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]


def _pow2_buckets(counts: list[int]) -> list[tuple[str, float]]:
    out, total = [], 0
    for bound, n in zip(BOUNDS_S, counts, strict=False):
        total += n
        out.append((repr(float(bound)), float(total)))
    out.append(("+Inf", float(sum(counts))))
    return out


def _pow2_sum(counts: list[int]) -> float:
    """An estimate of the sum (each observation at its bucket's upper bound)."""
    return float(sum(float(b) * n for b, n in zip(BOUNDS_S, counts, strict=False)))
