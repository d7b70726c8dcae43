"""Push random trades into the running example pipeline (source "trades").

python examples/push_subscribe/push.py --rows 100000 --batch 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from engine import connect


def trades(rng: np.random.Generator, n: int) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "symbol": pa.array(rng.choice(["AAPL", "MSFT", "NVDA", "TSLA"], n)),
            "price": rng.uniform(10, 1000, n).round(2),
            "qty": rng.integers(1, 200, n),
            "ts": pa.array(np.full(n, time.time_ns() // 1_000_000), pa.timestamp("ms")),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=".ringstream/run")
    ap.add_argument("--source", default="trades")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the engine")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with connect(args.dir).source(args.source, wait=args.wait) as src:
        for start in range(0, args.rows, args.batch):
            src.push_arrow(trades(rng, min(args.batch, args.rows - start)))
    print(f"pushed {src.rows_pushed:,} rows to {args.source!r}")


if __name__ == "__main__":
    main()
