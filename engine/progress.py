"""What a run tells a person: the progress line every second, and the summary at the end.

``Progress`` reads the shared-memory counters of every child (never the data
path) and formats one line: events in and their rate, rows out, the
watermark as a UTC time, how full the rings are, time the sources spent
blocked on full rings, the last committed epoch, and — when a bounded source
reports its size — percent done and time left. ``Summary`` is what
``Coordinator.run`` returns; ``Summary.text()`` is the ``done:`` line
``python -m engine run`` prints, with every dropped row counted and named
(late, null time, out of range, dead-lettered) and rows per sink.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from engine.counters import NO_WATERMARK, Counters
from engine.pipeline import Pipeline


@dataclass
class EpochStat:
    epoch: int
    duration_ms: float
    alignment_ms: float
    state_bytes: int


@dataclass
class Summary:
    events: int
    output_rows: int
    elapsed_s: float
    output: str
    late_rows: int = 0
    null_time_rows: int = 0
    out_of_range_rows: int = 0
    dead_letter_rows: int = 0
    sink_rows: dict[str, int] = field(default_factory=dict)
    stopped_by: str | None = None
    pinning: list[str] = field(default_factory=list)
    restarts: int = 0
    restored_epoch: int | None = None
    last_epoch: int | None = None
    epochs: list[EpochStat] = field(default_factory=list)
    already_complete: bool = False
    cpu_s: dict[str, float] = field(default_factory=dict)  # role -> CPU seconds of its processes
    worker_rows: list[int] = field(default_factory=list)  # rows each worker received (skew)
    max_rss_bytes: dict[str, int] = field(default_factory=dict)  # role -> largest peak RSS

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, earlier: Summary) -> None:
        """Fold in the counts of an earlier attempt of the same run (before a restart)."""
        self.events += earlier.events
        self.output_rows += earlier.output_rows
        self.elapsed_s += earlier.elapsed_s
        for name in ("late_rows", "null_time_rows", "out_of_range_rows", "dead_letter_rows"):
            setattr(self, name, getattr(self, name) + getattr(earlier, name))
        for sink, rows in earlier.sink_rows.items():
            self.sink_rows[sink] = self.sink_rows.get(sink, 0) + rows
        for role, seconds in earlier.cpu_s.items():
            self.cpu_s[role] = self.cpu_s.get(role, 0.0) + seconds
        if len(earlier.worker_rows) == len(self.worker_rows):
            self.worker_rows = [a + b for a, b in zip(self.worker_rows, earlier.worker_rows,
                                                      strict=True)]  # fmt: skip

    def dropped(self) -> list[str]:
        """One phrase per kind of row that did not reach the main output, counted."""
        kinds = (
            (self.late_rows, "late rows dropped (behind the watermark)"),
            (self.null_time_rows, "rows with a null event time or join key dropped"),
            (self.out_of_range_rows, "rows with an event time out of range dropped"),
            (self.dead_letter_rows, "unreadable records sent to a dead-letter output"),
        )
        return [f"{n:,} {what}" for n, what in kinds if n]

    def text(self) -> str:
        """The ``done:`` line of ``python -m engine run``."""
        if self.already_complete:
            return f"done: already complete at epoch {self.last_epoch}; nothing to do"
        stopped = f" (stopped by {self.stopped_by}, drained)" if self.stopped_by else ""
        sinks = ", ".join(f"{rows:,} to {name}" for name, rows in self.sink_rows.items())
        extra = "".join(f"; {d}" for d in self.dropped())
        if self.restarts:
            extra += f"; recovered {self.restarts} time(s)"
        if self.last_epoch is not None:
            extra += f"; last committed epoch {self.last_epoch}"
        return (
            f"done{stopped}: {self.events:,} events in {self.elapsed_s:.2f} s "
            f"({rate(self.events_per_s)} events/s); {self.output_rows:,} output rows "
            f"to {self.output}" + (f" ({sinks})" if len(self.sink_rows) > 1 else "") + extra
        )


def rate(per_s: float) -> str:
    """A rate a person can read: ``12.3 M``, ``45.6 K``, ``7``."""
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M"
    if per_s >= 1e4:
        return f"{per_s / 1e3:.1f} K"
    return f"{per_s:,.0f}"


def utc(ms: int) -> str:
    """An event time in ms as a UTC time (``2024-05-01 10:00:03.120``), or the raw number."""
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def outputs(pipeline: Pipeline) -> str:
    """Where the main output goes, for the summary: the sinks' paths (or names)."""
    main = [k for k in pipeline.sinks if k.input == "main"] or pipeline.sinks
    return ", ".join(str(k.options.get("path", k.name)) for k in main)


class Progress:
    """The counters of one attempt, read for the progress line and the summary."""

    def __init__(self, counters: Counters, slots: dict[str, list[int]], rings: list) -> None:  # type: ignore[type-arg]
        self.counters = counters
        self.slots = slots  # role -> counter slots of its children
        self.rings = rings

    @classmethod
    def of(cls, counters: Counters, children: list, rings: list) -> Progress:  # type: ignore[type-arg]
        """For the children of one attempt (anything with ``role`` and ``slot``)."""
        slots: dict[str, list[int]] = {}
        for c in children:
            slots.setdefault(c.role, []).append(c.slot)
        return cls(counters, slots, rings)

    def summary(
        self, pipeline: Pipeline, elapsed: float, sinks: dict[str, int], committed: int | None
    ) -> Summary:
        """The summary of this attempt; ``sinks``: sink name -> its counter slot."""
        rows = {name: self.counters.get(slot, "rows_in") for name, slot in sinks.items()}
        main = [k.name for k in pipeline.sinks if k.input == "main"]
        return Summary(
            events=self.sum("source", "rows_in"),
            output_rows=sum(rows.get(k, 0) for k in main),
            elapsed_s=elapsed,
            output=outputs(pipeline),
            late_rows=self.dropped("late_rows"),
            null_time_rows=self.dropped("null_time_rows"),
            out_of_range_rows=self.dropped("out_of_range_rows"),
            dead_letter_rows=self.sum("source", "dead_letter_rows"),
            sink_rows=rows,
            last_epoch=committed,
            cpu_s={role: self.sum(role, "cpu_ns") / 1e9 for role in self.slots},
            worker_rows=[self.counters.get(s, "rows_in") for s in self.slots.get("worker", [])],
            max_rss_bytes={role: max(self.counters.get(s, "max_rss_bytes") for s in slots)
                           for role, slots in self.slots.items()},  # fmt: skip
        )

    def sum(self, role: str, name: str) -> int:
        return sum(self.counters.get(s, name) for s in self.slots.get(role, []))

    def dropped(self, name: str) -> int:
        """Rows the operators dropped: the workers', and the final stage's in the sinks."""
        return self.sum("worker", name) + self.sum("sink", name)

    def watermark(self) -> int | None:
        marks = [self.counters.get(s, "watermark") for s in self.slots.get("worker", [])]
        marks = [m for m in marks if m != NO_WATERMARK]
        return min(marks) if marks else None

    def line(
        self,
        elapsed: float,
        events: int,
        rate_per_s: float,
        committed: int | None,
        share: float | None = None,
    ) -> str:
        """The progress line; ``share``: how much of a bounded input is done (0..1), if known."""
        wm = self.watermark()
        occupancy = max((r.stats()["occupancy"] / r.capacity for r in self.rings), default=0.0)
        blocked = self.sum("source", "blocked_ns") / 1e9
        ckpt = f" | epoch {committed} committed" if committed is not None else ""
        done = ""
        if share is not None and share > 0:
            left = elapsed * (1 - share) / share
            done = f", {share:.0%} done, ~{left:.0f} s left" if share < 1 else ", 100% done"
        return (
            f"[{elapsed:6.1f}s] in {events:,} events ({rate(rate_per_s)}/s{done}) | "
            f"out {self.sum('sink', 'rows_in'):,} rows | "
            f"watermark {utc(wm) if wm is not None else '-'} | "
            f"rings max {occupancy:.0%} full | sources blocked {blocked:.1f}s{ckpt}"
        )
