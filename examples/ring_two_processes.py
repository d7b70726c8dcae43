"""Two processes, one ring: a producer sends Arrow batches, a consumer sums them zero-copy.

    python examples/ring_two_processes.py
"""

from __future__ import annotations

import multiprocess as mp
import numpy as np
import pyarrow as pa

from engine.shm import Ring


def produce(name: str, batches: int) -> None:
    ring = Ring.attach(name)
    writer = ring.writer()
    rng = np.random.default_rng(0)
    for i in range(batches):
        rows = 10_000
        batch = pa.record_batch(
            {
                "ts": np.arange(i * rows, (i + 1) * rows, dtype=np.int64),
                "key": rng.integers(0, 100, rows, dtype=np.int64),
                "value": rng.random(rows),
            }
        )
        writer.write_batch(batch)  # serialised straight into shared memory
        if i % 10 == 9:
            writer.write_watermark(int(batch.column(0)[-1].as_py()))
    writer.write_eos()
    writer.close()
    ring.close()


def main() -> None:
    ctx = mp.get_context("spawn")
    with Ring.create(1 << 22) as ring:  # 4 MiB; the creator owns and unlinks it
        producer = ctx.Process(target=produce, args=(ring.name, 100))
        producer.start()
        reader = ring.reader()
        rows, total = 0, 0.0
        for batch in reader.batches():  # zero-copy: valid until the next iteration
            rows += batch.num_rows
            total += float(np.sum(batch.column("value").to_numpy()))
        reader.close()
        producer.join()
    print(f"received {rows:,} rows through ring {ring.name}; sum(value) = {total:,.3f}")


if __name__ == "__main__":
    main()
