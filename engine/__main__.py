"""``python -m engine``: the ringstream command line.

    python -m engine run PIPELINE.toml [--workers N | --topology TOPOLOGY.toml] [--oversubscribe]
                                       [--log-format human|json] [--quiet]
    python -m engine validate PIPELINE.toml [--workers N | --topology TOPOLOGY.toml]
    python -m engine topology [--workers N]
    python -m engine checkpoints DIR     # exit 1 if the newest manifest is not valid
    python -m engine connectors
    python -m engine status PIPELINE.toml|CHECKPOINT_DIR [--json] [--interval S]

Exit codes: 0 done (also after a drain on SIGINT/SIGTERM), 1 the run failed
(a child died or raised; ``status``: nothing is running), 2 bad configuration.
Everything ``run`` says goes through ``engine.log`` (``--log-format json``: one
JSON object per line, on stderr, and the summary on stdout).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TextIO

from engine import log, topology
from engine import pipeline as pipeline_mod
from engine.errors import ConfigError, RingstreamError


def _available() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from engine.plan import Plan

    pipeline = pipeline_mod.load(args.pipeline)
    if args.topology:
        topo = topology.load(args.topology)
        if args.workers is not None and args.workers != len(topo.workers):
            log.say("warning", f"warning: --workers {args.workers} ignored: {args.topology} "
                    f"places {len(topo.workers)} worker(s)", workers=len(topo.workers))  # fmt: skip
    else:
        topo, notes = topology.propose(topology.detect(), args.workers)
        for note in notes:
            log.say("topology", f"topology: {note}", note=note)
    topo, warnings = topology.check(topo, _available(), args.oversubscribe)
    for w in warnings:
        log.say("warning", f"warning: {w}", warning=w)
    try:
        plan = Plan.build(pipeline, len(topo.workers))
        plan.check_rings(topo.ring_capacity)
    except ConfigError as exc:
        raise ConfigError(f"{args.pipeline}: {exc}") from None
    return pipeline, topo, plan


def _cmd_validate(args: argparse.Namespace) -> int:
    _p, t, plan = _load(args)
    print(
        f"ok: {plan.describe()}; coordinator on CPU {t.coordinator}, connectors on "
        f"{t.connectors}, {len(t.workers)} worker(s) on {t.workers}, rings of "
        f"{t.ring_capacity} bytes"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.supervisor import start_forkserver

    start_forkserver()  # its imports (pyarrow, the runners) overlap the planning below
    from engine.coordinator import Coordinator, StopSignals

    signals = StopSignals().install()  # from here on, Ctrl-C or SIGTERM means: drain
    try:
        p, t, plan = _load(args)
        log.say(
            "start",
            f"running {p.pipeline.name!r} with {len(t.workers)} worker(s) on CPUs {t.workers} "
            f"({os.cpu_count()} CPUs on this machine)",
            pipeline=p.pipeline.name, workers=len(t.workers), worker_cpus=t.workers,
            coordinator_cpu=t.coordinator, connector_cpus=t.connectors, cpus=os.cpu_count(),
        )  # fmt: skip
        coordinator = Coordinator(
            p, t, out=None if args.quiet else sys.stderr, plan=plan, signals=signals
        )
        summary = coordinator.run()
    finally:
        signals.restore()
    import msgspec

    log.result("summary", summary.text(), **msgspec.to_builtins(summary))
    return 0


def _say(text: str, stream: TextIO) -> None:
    """Print; a reader that went away (``| head``, a killed ``tee``) is not an error."""
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # no second error when Python flushes at exit
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _cmd_checkpoints(args: argparse.Namespace) -> int:
    from engine.checkpoint.report import format_listing, verify
    from engine.checkpoint.store import CheckpointStore

    if not os.path.isdir(args.dir):
        raise ConfigError(f"{args.dir}: no such checkpoint directory")
    store = CheckpointStore(args.dir)
    print(format_listing(store))
    return verify(store)


def _cmd_connectors(args: argparse.Namespace) -> int:
    from connectors import registry

    for kind in ("source", "sink"):
        for name, target in sorted(registry.available(kind).items()):
            print(f"{kind:6} {name:24} {target}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from engine import status

    if args.interval <= 0:
        raise ConfigError(f"--interval {args.interval}: must be a positive number of seconds")
    return status.main(args.target, args.json, args.interval)


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
            "--workers", type=int, metavar="N",
            help="Ring 0 workers (default: one per free physical core); the proposed topology "
            "for N workers, as `topology --workers N` prints it (a --topology file wins)",
        )  # fmt: skip
        cmd.add_argument(
            "--oversubscribe",
            action="store_true",
            help="map CPUs this machine lacks onto available ones, with a warning",
        )
        if name == "run":
            cmd.add_argument("--quiet", action="store_true", help="no progress lines")
            cmd.add_argument(
                "--log-format", choices=log.FORMATS, default="human",
                help="human lines (default) or one JSON object per line",
            )  # fmt: skip
        cmd.set_defaults(fn=fn)
    c = sub.add_parser("checkpoints", help="list and verify the manifests in a checkpoint dir")
    c.add_argument("dir", help="the pipeline's checkpoint directory (checkpoint.dir)")
    c.set_defaults(fn=_cmd_checkpoints)
    k = sub.add_parser("connectors", help="list connector types (built in and registered)")
    k.set_defaults(fn=_cmd_connectors)
    s = sub.add_parser("status", help="watch a running pipeline (or see how the last run ended)")
    s.add_argument("target", help="the pipeline file, or its checkpoint directory")
    s.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")
    s.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (and for rates)"
    )
    s.set_defaults(fn=_cmd_status)
    t = sub.add_parser("topology", help="detect this machine and print a topology file")
    t.add_argument(
        "--workers", type=int, help="number of Ring 0 workers (default: one per free physical core)"
    )
    t.add_argument("--sys-root", default="/sys", help=argparse.SUPPRESS)
    t.set_defaults(fn=_cmd_topology)
    args = ap.parse_args(argv)
    log.setup(getattr(args, "log_format", "human"))
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        log.say("failure", f"error: {exc}", logging.ERROR, error=str(exc), exit_code=2)
        return 2
    except RingstreamError as exc:
        log.say("failure", f"error: {exc}", logging.ERROR, error=str(exc), exit_code=1)
        return 1
    except BrokenPipeError:  # our reader went away while we wrote: nothing to say it to
        return 0
    except KeyboardInterrupt:  # Ctrl-C outside a run (a run drains instead)
        _say("interrupted", sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
