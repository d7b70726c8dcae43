"""``python -m engine``: the ringstream command line.

    python -m engine run PIPELINE.toml [--topology TOPOLOGY.toml] [--oversubscribe]
    python -m engine validate PIPELINE.toml [--topology TOPOLOGY.toml] [--oversubscribe]
    python -m engine topology [--workers N]

Exit codes: 0 done (also after a drain on SIGINT/SIGTERM), 1 the run failed
(a child died or raised), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import os
import sys

from engine import pipeline as pipeline_mod
from engine import topology
from engine.errors import ConfigError, RingstreamError


def _available() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _load(args: argparse.Namespace) -> tuple[pipeline_mod.Pipeline, topology.Topology]:
    pipeline = pipeline_mod.load(args.pipeline)
    if args.topology:
        topo = topology.load(args.topology)
    else:
        topo, notes = topology.propose(topology.detect())
        for note in notes:
            print(f"topology: {note}", file=sys.stderr)
    topo, warnings = topology.check(topo, _available(), args.oversubscribe)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return pipeline, topo


def _cmd_validate(args: argparse.Namespace) -> int:
    p, t = _load(args)
    s = p.source
    print(
        f"ok: pipeline {p.pipeline.name!r}: source {s.name!r} (generator, "
        f"parallelism {s.parallelism}) -> tumbling {p.query.window.size_ms} ms window by "
        f"{p.query.key!r} {p.query.aggregates} -> sink {p.sink.name!r} ({p.sink.path}); "
        f"coordinator on CPU {t.coordinator}, connectors on {t.connectors}, "
        f"{len(t.workers)} worker(s) on {t.workers}, rings of {t.ring_capacity} bytes"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.coordinator import Coordinator

    p, t = _load(args)
    print(
        f"running {p.pipeline.name!r} with {len(t.workers)} worker(s) on CPUs {t.workers} "
        f"({os.cpu_count()} CPUs on this machine)",
        file=sys.stderr,
    )
    summary = Coordinator(p, t, out=None if args.quiet else sys.stderr).run()
    stopped = f" (stopped by {summary.stopped_by}, drained)" if summary.stopped_by else ""
    print(
        f"done{stopped}: {summary.events:,} events in {summary.elapsed_s:.2f} s "
        f"({summary.events_per_s / 1e6:.2f} M events/s); {summary.output_rows:,} output rows "
        f"in {os.path.abspath(summary.output)}"
        + (f"; {summary.late_rows:,} late rows dropped" if summary.late_rows else "")
    )
    return 0


def _cmd_topology(args: argparse.Namespace) -> int:
    machine = topology.detect(args.sys_root)
    proposed, notes = topology.propose(machine, args.workers)
    sys.stdout.write(topology.to_toml(proposed, machine, notes))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine", description="ringstream engine")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("run", _cmd_run, "run a pipeline until it ends (or SIGINT/SIGTERM: drain and stop)"),
        ("validate", _cmd_validate, "check a pipeline and topology without running"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("pipeline", help="pipeline file (TOML)")
        cmd.add_argument("--topology", help="topology file (default: detect this machine)")
        cmd.add_argument(
            "--oversubscribe",
            action="store_true",
            help="map CPUs this machine lacks onto available ones, with a warning",
        )
        if name == "run":
            cmd.add_argument("--quiet", action="store_true", help="no progress lines")
        cmd.set_defaults(fn=fn)
    t = sub.add_parser("topology", help="detect this machine and print a topology file")
    t.add_argument(
        "--workers", type=int, help="number of Ring 0 workers (default: one per free physical core)"
    )
    t.add_argument("--sys-root", default="/sys", help=argparse.SUPPRESS)
    t.set_defaults(fn=_cmd_topology)
    args = ap.parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RingstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
