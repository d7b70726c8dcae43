"""``python -m engine``: the ringstream command line.

Subcommands so far: ``topology`` (detect this machine and print a proposed
topology file). The coordinator's ``run`` and ``validate`` come with the
runtime (DESIGN.md §7).
"""

from __future__ import annotations

import argparse
import sys

from engine import topology
from engine.errors import RingstreamError


def _cmd_topology(args: argparse.Namespace) -> int:
    machine = topology.detect(args.sys_root)
    proposed, notes = topology.propose(machine, args.workers)
    sys.stdout.write(topology.to_toml(proposed, machine, notes))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine", description="ringstream engine")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("topology", help="detect this machine and print a topology file")
    t.add_argument(
        "--workers", type=int, help="number of Ring 0 workers (default: one per free physical core)"
    )
    t.add_argument("--sys-root", default="/sys", help=argparse.SUPPRESS)
    t.set_defaults(fn=_cmd_topology)
    args = ap.parse_args(argv)
    try:
        return int(args.fn(args))
    except RingstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
