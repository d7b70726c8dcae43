"""The Kafka sink against a bare idempotent producer, and Kafka -> engine -> Kafka latency.

    python -m bench.kafka_sink                       # 1 M records of ~100-byte JSON
    python -m bench.kafka_sink --json --out bench/results/kafka-sink-2cpu.json

Starts a throwaway broker (``scripts/kafka``: Tansu, in memory). Throughput,
interleaved, median of ``--repeat``:

* **bare producer**: one confluent-kafka producer with ``enable.idempotence`` and
  ``acks=all`` producing the same ~100-byte JSON values (built beforehand, with
  their keys) to a topic of 4 partitions, then ``flush``: the baseline the issue
  names (no encoding, no transaction).
* **sink alone**: ``KafkaSink`` in this process, fed the rows as Arrow batches of
  65,536: encoding, staging, the epoch's transaction; 8 epochs.
* **sink alone, untagged**: the same with ``aborted = "hidden"``, the path the sink
  takes on a broker that hides aborted transactions (Kafka): no per-record epoch
  header, and each epoch's records sent as they are written
  (``connectors.kafka.produce.Early``). Tansu shows aborted records, so there the
  sink's probe picks the other path: tagged records, sent at the commit.
* **engine**: ``python -m engine run`` of a Parquet file (the same rows) -> Kafka
  sink, exactly-once, a checkpoint every 200 ms, 1 worker: the engine's own
  figure (children ready to the last child done, the last epoch's commit
  included). The committed topic is checked to hold every row once.
* **engine, untagged**: the same run with ``aborted = "hidden"`` (the path on Kafka).

Latency: a producer writes ``--rate`` records/s (each carrying its send time) for
``--seconds`` to a topic of 1 partition; the engine runs Kafka source ->
pass-through -> Kafka sink (exactly-once, checkpoints every ``--interval-ms``); a
``read_committed`` consumer records receive time minus send time: p50, p99, max.
Exactly-once output becomes visible only when the epoch commits, so the
checkpoint interval bounds the latency from below. The producer sends each record
at once (``linger.ms = 0``), so each is a record batch of its own: Tansu stops
answering fetches of a partition past about 10,700 record batches (a bare consumer
stalls there too), so the default run is 10 s at 1,000 records/s on a fresh broker,
and a run in which records never arrived says how many.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import cli, engine_runs, machine

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "kafka"
THROUGHPUT = """
[pipeline]
name = "kafka_sink_bench"
delivery = "exactly-once"
[checkpoint]
interval_ms = 200
[metrics]
enabled = false
[[sources]]
name = "rows"
type = "files"
path = "{input}"
format = "parquet"
[[sinks]]
name = "out"
type = "kafka"
bootstrap = "{broker}"
topic = "{topic}"
key = "user"
id = "{topic}"
aborted = "{aborted}"
"""
LATENCY = """
[pipeline]
name = "kafka_latency_bench"
delivery = "exactly-once"
[checkpoint]
interval_ms = {interval}
dir = "{dir}/checkpoints"
[metrics]
enabled = false
[[sources]]
name = "events"
type = "kafka"
bootstrap = "{broker}"
topics = ["lat_in"]
schema = {{ id = "bigint", sent_ns = "bigint", pad = "text" }}
batch_max_wait_ms = 1
config = {{ "fetch.wait.max.ms" = 5 }}   # the broker answers a fetch at once (default 500 ms)
[[sinks]]
name = "out"
type = "kafka"
bootstrap = "{broker}"
topic = "lat_out"
"""


def rows(n: int) -> Any:
    import pyarrow as pa

    i = np.arange(n)
    return pa.table(
        {
            "id": i,
            "user": pa.array([f"user-{k:06d}" for k in i % 5000]),
            "page": pa.array([f"/p/{k}" for k in i % 97]),
            "amount": (i % 1000) / 10,
            "ts": 1_700_000_000_000 + i,
        }
    )


def topic(broker: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(10)


def bare_producer(broker: str, name: str, values: list[bytes], keys: list[bytes]) -> float:
    from confluent_kafka import Producer

    topic(broker, name, 4)
    p = Producer(
        {
            "bootstrap.servers": broker,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    t = time.perf_counter()
    for v, k in zip(values, keys, strict=True):
        while True:
            try:
                p.produce(name, v, k)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0
    return len(values) / (time.perf_counter() - t)


def sink_alone(broker: str, name: str, table: Any, tagged: bool | None = None) -> float:
    from connectors.base import ConnectorConfig
    from connectors.kafka.sink import KafkaSink

    topic(broker, name, 4)
    s = KafkaSink()
    s.open(
        ConnectorConfig(
            "out",
            {"bootstrap": broker, "topic": name, "key": "user"},
            schema=table.schema,
            pipeline=name,
        )
    )
    s.rollback_epoch(1)
    s.tagged = tagged  # None: probe the broker (Tansu: tagged); False: as on Kafka
    batches = table.to_batches(max_chunksize=65_536)
    per = -(-len(batches) // 8)
    t = time.perf_counter()
    for e in range(8):
        s.begin_epoch(e + 1)
        for b in batches[e * per : (e + 1) * per]:
            s.write_batch(b)
        s.commit_epoch(e + 1, s.pre_commit(e + 1))
    took = time.perf_counter() - t
    s.close()
    return table.num_rows / took


def committed_count(broker: str, name: str) -> int:
    """Records a ``read_committed`` consumer reads (offsets also count commit markers)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": "count",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    parts = list(c.list_topics(name, timeout=10).topics[name].partitions)
    c.assign([TopicPartition(name, p, 0) for p in parts])
    total, ended, deadline = 0, set(), time.monotonic() + 120
    while len(ended) < len(parts) and time.monotonic() < deadline:
        for m in c.consume(10_000, 0.5):
            if m.error() is None:
                total += 1
            elif m.error().code() == m.error()._PARTITION_EOF:
                ended.add(m.partition())
    c.close()
    return total


def engine(broker: str, name: str, parquet: Path, tmp: Path, n: int, aborted: str) -> float:
    topic(broker, name, 4)
    pipeline = tmp / f"{name}.toml"
    pipeline.write_text(
        THROUGHPUT.format(input=parquet, broker=broker, topic=name, aborted=aborted)
    )
    r = engine_runs.run_engine(pipeline, [machine.available_cpus()[-1]])
    deadline = time.monotonic() + 60  # the broker may settle the last commit a moment later
    while (got := committed_count(broker, name)) != n and time.monotonic() < deadline:
        time.sleep(1)
    assert got == n, f"the engine's topic {name} holds {got} records, not {n}"
    return r["events_per_s"]


def latency(broker: str, rate: float, seconds: float, interval_ms: int, tmp: Path) -> dict:
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic(broker, "lat_in", 1)
    topic(broker, "lat_out", 1)
    d = tmp / "latency"
    d.mkdir()
    pipeline = d / "pipeline.toml"
    pipeline.write_text(LATENCY.format(dir=d, broker=broker, interval=interval_ms))
    cpus = machine.available_cpus()
    topo = d / "topology.toml"
    topo.write_text(
        f"[topology]\ncoordinator = {cpus[0]}\nconnectors = [{cpus[0]}]\nworkers = [{cpus[-1]}]\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(pipeline), "--topology", str(topo)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("pinned:"):
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    c = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": "lat",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 5,
        }
    )
    c.assign([TopicPartition("lat_out", 0, 0)])
    n = int(rate * seconds)
    lat: list[float] = []

    def send() -> None:
        p = Producer({"bootstrap.servers": broker, "linger.ms": 0, "enable.idempotence": True})
        start = time.perf_counter()
        for i in range(n):
            wait = start + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            p.produce(
                "lat_in", json.dumps({"id": i, "sent_ns": time.time_ns(), "pad": "x" * 60}).encode()
            )
            p.poll(0)
        p.flush(30)

    time.sleep(3)  # the source's consumer is reading
    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + seconds + 60
    while len(lat) < n and time.monotonic() < deadline:
        for m in c.consume(1000, 0.1):
            if m.error() is None:
                now = time.time_ns()
                lat.append((now - json.loads(m.value())["sent_ns"]) / 1e6)
    sender.join()
    c.close()
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    a = np.array(lat)
    return {
        "rate_per_s": rate,
        "records": n,
        "received": len(lat),
        "interval_ms": interval_ms,
        "latency_ms": {
            "p50": round(float(np.percentile(a, 50)), 1),
            "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("bench.kafka_sink", __doc__, records=1_000_000)
    ap.add_argument("--rate", type=float, default=1000.0, help="latency: records per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="latency: how long")
    ap.add_argument("--interval-ms", type=int, default=100, help="latency: checkpoint interval")
    args = ap.parse_args(argv)
    import pyarrow.parquet as pq

    where = Path(tempfile.mkdtemp(prefix="ringstream-kafka-bench-"))
    broker = subprocess.run(
        [str(SCRIPT), "start", str(where)], capture_output=True, text=True, check=True
    ).stdout.strip()
    runs: dict[str, list[float]] = {
        "bare_producer": [],
        "sink_alone": [],
        "sink_alone_untagged": [],
        "engine": [],
        "engine_untagged": [],
    }
    try:
        table = rows(args.records)
        values = [json.dumps(r, separators=(",", ":")).encode() for r in table.to_pylist()]
        keys = [u.encode() for u in table.column("user").to_pylist()]
        with tempfile.TemporaryDirectory(prefix="rs-kafka-sink-") as tmp:
            parquet = Path(tmp) / "in" / "rows.parquet"
            parquet.parent.mkdir()
            pq.write_table(table, parquet)
            for r in range(args.repeat):
                runs["bare_producer"].append(bare_producer(broker, f"bare{r}", values, keys))
                runs["sink_alone"].append(sink_alone(broker, f"alone{r}", table))
                runs["sink_alone_untagged"].append(
                    sink_alone(broker, f"untagged{r}", table, tagged=False)
                )
                runs["engine"].append(
                    engine(broker, f"engine{r}", parquet.parent, Path(tmp), args.records, "probe")
                )
                runs["engine_untagged"].append(
                    engine(broker, f"engineu{r}", parquet.parent, Path(tmp), args.records, "hidden")
                )
                print(
                    f"round {r}: "
                    + ", ".join(f"{k} {v[-1] / 1e3:.0f} K records/s" for k, v in runs.items()),
                    file=sys.stderr,
                    flush=True,
                )
            lat = latency(broker, args.rate, args.seconds, args.interval_ms, Path(tmp))
    finally:
        subprocess.run([str(SCRIPT), "stop", str(where)], check=False)
    med = {k: statistics.median(v) for k, v in runs.items()}
    result: dict[str, Any] = {
        "cpus": machine.describe({"worker": machine.available_cpus()[-1]}),
        "records": args.records,
        "record_bytes": round(sum(map(len, values)) / len(values)),
        "records_per_s": {k: round(v) for k, v in med.items()},
        "runs_records_per_s": {k: [round(x) for x in v] for k, v in runs.items()},
        "engine_vs_bare_producer": round(med["engine"] / med["bare_producer"], 2),
        "engine_untagged_vs_bare_producer": round(
            med["engine_untagged"] / med["bare_producer"], 2
        ),
        "sink_alone_untagged_vs_bare_producer": round(
            med["sink_alone_untagged"] / med["bare_producer"], 2
        ),
        "sink_alone_vs_bare_producer": round(med["sink_alone"] / med["bare_producer"], 2),
        "latency": lat,
    }
    if not cli.emit(result, args):
        c = result["cpus"]
        print(
            f"machine: {c['count']} cpus ({c['model']}); {args.records:,} records of "
            f"{result['record_bytes']} bytes, median of {args.repeat}"
        )
        for k, v in med.items():
            print(f"{k:13}: {v / 1e3:.0f} K records/s")
        print(f"engine vs bare producer: {result['engine_vs_bare_producer']}x; untagged (the "
              f"path on Kafka): {result['engine_untagged_vs_bare_producer']}x")  # fmt: skip
        print(
            f"latency at {lat['rate_per_s']:.0f} records/s, checkpoints every "
            f"{lat['interval_ms']} ms: {lat['latency_ms']}"
        )
        if lat["received"] < lat["records"]:
            print(f"WARNING: only {lat['received']:,} of {lat['records']:,} records arrived "
                  "(the percentiles are of those)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
