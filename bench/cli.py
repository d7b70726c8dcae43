"""What every benchmark's command line shares: ``--json``, ``--out``, ``--repeat``, output.

``parser(prog, doc, **defaults)`` makes the argument parser (``--events``/``--rows``
when a default is given); ``emit(result, args)`` writes ``--out`` and prints the JSON
object with ``--json``, returning True then (the caller prints its table otherwise).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def parser(prog: str, doc: str | None, repeat: int = 3, **counts: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    for name, default in counts.items():
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--repeat", type=int, default=repeat, help="runs per variant (the median)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--out", help="also write the JSON object to this file")
    return ap


def emit(result: dict[str, Any], args: argparse.Namespace) -> bool:
    """Write ``--out``; print the JSON with ``--json`` (True: nothing more to print)."""
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
    return bool(args.json)
