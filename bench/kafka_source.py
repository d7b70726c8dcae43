"""The Kafka source against a bare confluent-kafka consumer loop on the same topic, in one run.

    python -m bench.kafka_source                     # 3 M records of ~100-byte JSON
    python -m bench.kafka_source --json --out bench/results/kafka-source-2cpu.json

Starts a throwaway broker (``scripts/kafka``: Tansu, in memory), fills a topic of 4
partitions, then, interleaved, median of ``--repeat``:

* **bare loop**: one consumer (its own group) calling ``consume(num_messages=10_000)``
  until it has every record, decoding nothing: the baseline the issue names. Timed
  from its first message. Twice: with the fetch-queue backoff the engine's consumer
  uses (``connectors.kafka.consumer.FETCH_QUEUE_BACKOFF_MS``: same client settings,
  so the ratio is the engine's own cost), and with librdkafka's defaults
  (``bare_loop_defaults``), whose 1 s backoff paces a loop that does not drain its
  queue at once.
* **engine**: ``python -m engine run`` of the Kafka source (JSON, declared schema, one
  instance) -> files sink (Parquet), exactly-once, checkpoints every 200 ms, 1
  worker, until the group's committed offsets (moved only when an epoch commits)
  cover every record. ``engine``: from the first committed offsets to the last (the
  records committed in between, per second: like the bare loop, not counting the
  group join). ``engine_from_start``: every record, from the children being ready,
  which counts the broker's group join (Tansu answers a new group's first join
  after about 3 s).

Why 3 M records: the engine's figure runs from one group commit to another, and
those come with the checkpoints (every 200 ms). With 1 M records it spanned
about 0.8 s, of which the wait for the last checkpoint after the last record was
up to a quarter; the same code measured 0.63x-0.71x there and 0.73x-0.74x at 3 M
(where the engine's rounds agree within 3%).
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cli, machine

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = """
[pipeline]
name = "kafka_bench"
delivery = "exactly-once"
[checkpoint]
interval_ms = 200
dir = "{dir}/checkpoints"
[metrics]
enabled = false
[[sources]]
name = "events"
type = "kafka"
bootstrap = "{broker}"
topics = ["{topic}"]
group = "{group}"
schema = {{ id = "bigint", user = "text", page = "text", amount = "double", ts = "bigint" }}
[[sinks]]
name = "out"
type = "files"
path = "{dir}/out"
format = "parquet"
"""


def fill(broker: str, topic: str, n: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker})
    for f in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        f.result(10)
    p = Producer({"bootstrap.servers": broker, "linger.ms": 20, "batch.size": 1_000_000})
    for i in range(n):
        value = json.dumps({"id": i, "user": f"user-{i % 5000:06d}", "page": f"/p/{i % 97}",
                            "amount": (i % 1000) / 10, "ts": 1_700_000_000_000 + i})  # fmt: skip
        while True:
            try:
                p.produce(topic, value=value.encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 50_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def bare_loop(broker: str, topic: str, n: int, group: str, defaults: bool = False) -> float:
    from confluent_kafka import Consumer

    from connectors.kafka.consumer import FETCH_QUEUE_BACKOFF_MS

    tuned = {} if defaults else {"fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS}
    c = Consumer({"bootstrap.servers": broker, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 6000, **tuned})  # fmt: skip
    c.subscribe([topic])
    got, t = 0, None
    while got < n:
        msgs = c.consume(num_messages=10_000, timeout=0.5)
        if msgs and t is None:
            t = time.perf_counter()
        got += sum(1 for m in msgs if m.error() is None)
    took = time.perf_counter() - (t or time.perf_counter())
    c.close()
    return n / took


def engine(broker: str, topic: str, n: int, group: str, d: Path) -> tuple[float, float]:
    """Records per second from the first committed offsets to the last, and from the
    children being ready (the module docstring)."""
    from confluent_kafka import Consumer, TopicPartition

    d.mkdir(parents=True)
    pipeline = d / "pipeline.toml"
    pipeline.write_text(PIPELINE.format(dir=d, broker=broker, topic=topic, group=group))
    cpus = machine.available_cpus()
    topo = d / "topology.toml"
    # the source alone on the first CPU (with its consumer's threads); the sink (the
    # first connector), the coordinator and the worker on the last
    topo.write_text(f"[topology]\ncoordinator = {cpus[-1]}\nconnectors = [{cpus[-1]}, {cpus[0]}]\n"
                    f"workers = [{cpus[-1]}]\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", str(pipeline), "--topology",
                             str(topo)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    watcher = Consumer({"bootstrap.servers": broker, "group.id": group})
    parts = [TopicPartition(topic, p) for p in range(4)]
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # children ready
            if line.startswith("pinned:"):
                break
        t = time.perf_counter()
        first: tuple[float, int] | None = None
        while (done := sum(max(0, tp.offset) for tp in watcher.committed(parts, timeout=10))) < n:
            if done and first is None:
                first = (time.perf_counter(), done)
            if proc.poll() is not None:
                raise RuntimeError("the engine run ended early")
            time.sleep(0.02)
        end = time.perf_counter()
        since, done = first or (t, 0)  # (all in one epoch: from the start)
        return (n - done) / (end - since), n / (end - t)
    finally:
        watcher.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def main(argv: list[str] | None = None) -> int:
    args = cli.parser("bench.kafka_source", __doc__, records=3_000_000).parse_args(argv)
    where = Path(tempfile.mkdtemp(prefix="ringstream-kafka-bench-"))
    script = ROOT / "scripts" / "kafka"
    broker = subprocess.run([str(script), "start", str(where)], capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    runs: dict[str, list[float]] = {"bare_loop": [], "bare_loop_defaults": [], "engine": [],
                                     "engine_from_start": []}  # fmt: skip
    try:
        fill(broker, "bench", args.records)
        with tempfile.TemporaryDirectory(prefix="rs-kafka-") as tmp:
            for r in range(args.repeat):
                n = args.records
                runs["bare_loop"].append(bare_loop(broker, "bench", n, f"bare{r}"))
                runs["bare_loop_defaults"].append(bare_loop(broker, "bench", n, f"bared{r}",
                                                            defaults=True))  # fmt: skip
                steady, whole = engine(broker, "bench", n, f"engine{r}", Path(tmp) / f"r{r}")
                runs["engine"].append(steady)
                runs["engine_from_start"].append(whole)
                print(f"round {r}: " + ", ".join(f"{k} {v[-1] / 1e3:.0f} K records/s"
                                                 for k, v in runs.items()),
                      file=sys.stderr, flush=True)  # fmt: skip
    finally:
        subprocess.run([str(script), "stop", str(where)], check=False)
    med = {k: statistics.median(v) for k, v in runs.items()}
    result: dict[str, Any] = {
        "cpus": machine.describe({"worker": machine.available_cpus()[-1]}),
        "records": args.records, "record_bytes": "about 100 (JSON)",
        "records_per_s": {k: round(v) for k, v in med.items()},
        "runs_records_per_s": {k: [round(x) for x in v] for k, v in runs.items()},
        "engine_vs_bare_loop": round(med["engine"] / med["bare_loop"], 2),
        "engine_vs_bare_loop_defaults": round(med["engine"] / med["bare_loop_defaults"], 2),
        "engine_from_start_vs_bare_loop_defaults": round(
            med["engine_from_start"] / med["bare_loop_defaults"], 2),
    }  # fmt: skip
    if not cli.emit(result, args):
        c = result["cpus"]
        print(f"machine: {c['count']} cpus ({c['model']}); {args.records:,} records, median of "
              f"{args.repeat}")  # fmt: skip
        for k, v in med.items():
            print(f"{k:18}: {v / 1e3:.0f} K records/s")
        for k in ("engine_vs_bare_loop", "engine_vs_bare_loop_defaults",
                  "engine_from_start_vs_bare_loop_defaults"):  # fmt: skip
            print(f"{k.replace('_', ' ')}: {result[k]}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
