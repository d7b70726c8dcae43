"""Print what the example pipeline's sink "alerts" writes, as it writes it.

python examples/push_subscribe/subscribe.py
"""

from __future__ import annotations

import argparse

from engine import connect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=".ringstream/run")
    ap.add_argument("--sink", default="alerts")
    ap.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the engine")
    args = ap.parse_args()
    rows = 0
    with connect(args.dir).subscribe(args.sink, wait=args.wait) as sub:
        print(f"subscribed to {args.sink!r}: {sub.schema.names}", flush=True)
        for batch in sub:
            rows += batch.num_rows
            top = batch.sort_by([("price", "descending")]).slice(0, 1).to_pylist()
            print(f"{batch.num_rows:6,} rows (total {rows:,}); largest: {top}", flush=True)
    print(f"end of stream: {rows:,} rows; dropped for us: {sub.dropped_rows:,} rows")


if __name__ == "__main__":
    main()
