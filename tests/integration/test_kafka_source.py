"""The Kafka source against a real Kafka-protocol broker (``scripts/kafka``: Tansu).

The contract's conformance, decoding (JSON with a declared or inferred schema, raw;
bad records named by topic, partition and offset), offsets committed to the group
only for committed epochs; then engine runs: Kafka -> files sink exactly once under
kill -9 of each process kind, and two engine instances sharing a
consumer group, one killed, the survivor taking over its partitions, or one joining
mid-run under load, the partitions split between them exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connectors.base import ConnectorConfig
from connectors.files.sink import read_committed
from connectors.kafka.source import KafkaSource
from connectors.testing.conformance import check_source
from engine.errors import ConfigError
from engine.shm.segment import sweep_stale
from tests.fault.test_exactly_once import (
    TOPOLOGY,
    EngineRun,
    Job,
    fault_seed,
    kill_child,
    wait_gone,
)
from tests.kafka import committed_offsets, create_topic, produce, start_broker, stop_broker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    address, where = start_broker()
    yield address
    stop_broker(where)


topic = create_topic


def events(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"id": i, "user": f"u{i % 37}", "amount": i % 100}).encode()
            for i in range(start, start + n)]  # fmt: skip


def drain(src: KafkaSource, rows: int, timeout: float = 20) -> tuple[pa.Table, list]:  # type: ignore[type-arg]
    got, bad = [], []
    deadline = time.monotonic() + timeout
    while sum(b.num_rows for b in got) + len(bad) < rows and time.monotonic() < deadline:
        b = src.poll_batch(1_000)
        if b is None:
            src.data_ready(0.05)
            continue
        got.append(b.batch)
        bad += b.bad
    return pa.Table.from_batches(got, schema=src.schema()), bad


def test_conformance(broker: str) -> None:
    """One partition: the contract compares a replay row for row, in order."""
    name = topic(broker, "conf", 1)
    produce(broker, name, events(3_000))
    check_source(KafkaSource, ConnectorConfig("k", {"bootstrap": broker, "topics": [name],
                                                    "format": "raw"}),
                 max_records=500, max_rows=3_000)  # fmt: skip


def test_json_declared_inferred_and_bad_records_named(broker: str) -> None:
    name = topic(broker, "decode", 2)
    produce(broker, name, [*events(10), b"not json", b'{"id": "x"}', *events(5, 10)],
            keys=[b"k"] * 17)  # fmt: skip
    src = KafkaSource()
    src.open(ConnectorConfig("k", {"bootstrap": broker, "topics": [name], "key_format": "text",
                                   "schema": {"id": "bigint", "user": "text",
                                              "amount": "int"}}))  # fmt: skip
    rows, bad = drain(src, 17)
    src.close()
    assert sorted(rows.column("id").to_pylist()) == list(range(15))
    assert rows.schema.field("amount").type == pa.int32()
    assert set(rows.column("_key").to_pylist()) == {"k"}
    assert sorted(b.raw for b in bad) == [b"not json", b'{"id": "x"}']
    assert all(b.location.startswith("decode/") and b.line is not None for b in bad)
    inferred = KafkaSource()
    inferred.open(ConnectorConfig("k", {"bootstrap": broker, "topics": [name]}))
    assert inferred.schema().names[:3] == ["id", "user", "amount"]
    inferred.close()
    with pytest.raises(ConfigError, match="topic 'nope' does not exist"):
        KafkaSource().open(ConnectorConfig("k", {"bootstrap": broker, "topics": ["nope"],
                                                 "format": "raw"}))  # fmt: skip


def read_all(broker: str, label: str, n: int) -> tuple[KafkaSource, str]:
    """A source in group ``g_<label>`` that has returned all ``n`` records of a new topic."""
    name = topic(broker, label, 1)
    produce(broker, name, events(n))
    src = KafkaSource()
    src.open(ConnectorConfig("k", {"bootstrap": broker, "topics": [name], "format": "raw",
                                   "group": f"g_{label}"}))  # fmt: skip
    rows, _ = drain(src, n)
    assert rows.num_rows == n
    return src, name


def test_offsets_reach_the_group_only_when_the_epoch_commits(broker: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    src, name = read_all(broker, "commits", 100)
    src.position_recorded(3, src.checkpoint())
    watcher = Consumer({"bootstrap.servers": broker, "group.id": "g_commits"})

    def committed() -> int:
        return watcher.committed([TopicPartition(name, 0)], timeout=10)[0].offset

    assert committed() < 0
    src.notify_committed(3)  # the consumer's thread commits them (the source does not wait)
    deadline = time.monotonic() + 10
    while committed() != 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert committed() == 100
    src.position_recorded(4, src.checkpoint())
    src.notify_committed(4)
    src.close()  # commits still queued are made before the consumer closes
    assert committed() == 100
    watcher.close()


def test_offsets_queued_when_the_source_closes_still_reach_the_group(broker: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    src, name = read_all(broker, "close", 50)
    src.position_recorded(1, src.checkpoint())
    src.notify_committed(1)
    src.close()  # at once: the commit may still be queued
    watcher = Consumer({"bootstrap.servers": broker, "group.id": "g_close"})
    try:
        assert watcher.committed([TopicPartition(name, 0)], timeout=10)[0].offset == 50
    finally:
        watcher.close()


# --- engine runs -----------------------------------------------------------------------------


def kafka_job(dir: Path, broker: str, name: str, parallelism: int = 2,
              group: str | None = None) -> Job:  # fmt: skip
    """Kafka (``parallelism`` instances, assigned partitions or ``group``) -> files, a
    pass-through, exactly-once, a checkpoint every 200 ms."""
    dir.mkdir(parents=True, exist_ok=True)
    grouping = f'group = "{group}"' if group else ""
    pipeline = dir / "pipeline.toml"
    pipeline.write_text(f"""
[pipeline]
name = "kafka_{dir.name}"
delivery = "exactly-once"
[checkpoint]
interval_ms = 200
dir = "{dir / "checkpoints"}"
max_restarts = 20
restart_backoff_ms = 50
[metrics]
enabled = false
[[sources]]
name = "events"
type = "kafka"
bootstrap = "{broker}"
topics = ["{name}"]
{grouping}
parallelism = {parallelism}
schema = {{ id = "bigint", user = "text", amount = "bigint" }}
batch_max_wait_ms = 20

[[sinks]]
name = "out"
type = "files"
path = "{dir / "out"}"
format = "parquet"
""")
    topology = dir / "topology.toml"
    topology.write_text(TOPOLOGY)
    return Job(dir, pipeline, topology, dir / "out", dir / "checkpoints")


@pytest.mark.slow
def test_kafka_exactly_once_under_kills(tmp_path: Path, broker: str) -> None:
    """60,000 records in 4 partitions, read by 2 source instances; each process kind killed
    once at a random time; then the run is drained: every record is in the output once."""
    import random

    seed = fault_seed()
    rng = random.Random(seed)
    name = topic(broker, f"kills_{seed % 100000}", 4)
    n = 60_000
    produce(broker, name, events(n), partitions=4)
    job = kafka_job(tmp_path, broker, name)
    kinds = ["source", "worker", "sink"]
    rng.shuffle(kinds)
    with EngineRun(job) as run:
        attempt = 1
        for kind in kinds:
            attempt = kill_child(run, kind, rng.uniform(0.2, 1.5), attempt)[1] + 1
        run.wait_attempt(attempt)
        _drain_when_caught_up(run, broker, name, "ringstream_events", n)
    ids = Counter(read_committed(job.out).column("id").to_pylist())
    assert set(ids) == set(range(n)), f"seed {seed}, killed {kinds}: records lost"
    assert max(ids.values()) == 1, f"seed {seed}, killed {kinds}: records twice"


def _drain_when_caught_up(run: EngineRun, broker: str, name: str, group: str, n: int) -> None:
    """Wait until the group's committed offsets cover all ``n`` records, then SIGINT."""
    _wait_caught_up([run], broker, name, group, n)
    _stop(run)


def _wait_caught_up(runs: list[EngineRun], broker: str, name: str, group: str, n: int) -> None:
    """Wait until the group's committed offsets cover all ``n`` records (every run alive)."""
    deadline = time.monotonic() + 120
    while committed_offsets(broker, name, group) < n:
        for run in runs:
            assert run.proc.poll() is None, run.stderr[-3000:]
            assert time.monotonic() < deadline, run.stderr[-3000:]
        time.sleep(0.2)


def _stop(run: EngineRun) -> None:
    run.proc.send_signal(signal.SIGINT)
    assert run.wait(120) == 0, run.stderr[-3000:]
    assert not wait_gone(run.pids())


@pytest.mark.slow
def test_two_instances_share_a_group_and_the_survivor_takes_over(
    tmp_path: Path, broker: str
) -> None:
    """Two engine instances (each its own checkpoint directory and output) in one consumer
    group split 4 partitions; one is killed with kill -9; the other takes its partitions
    from the group's committed offsets. Pass-through: every record is in the combined
    output at least once, and duplicates are only records of the killed instance's epoch
    that committed but whose offsets never reached the group (none when that window was
    missed)."""
    name = topic(broker, "shared", 4)
    first, second = 20_000, 20_000
    produce(broker, name, events(first), partitions=4)
    a = kafka_job(tmp_path / "a", broker, name, parallelism=1, group="shared_g")
    b = kafka_job(tmp_path / "b", broker, name, parallelism=1, group="shared_g")
    with EngineRun(a) as run_a, EngineRun(b) as run_b:
        time.sleep(8)  # both joined: the group split the partitions
        os.kill(run_a.proc.pid, signal.SIGKILL)
        run_a.wait(60)
        assert not wait_gone(run_a.pids())
        sweep_stale()  # a's rings, as a's next start would remove them
        produce(broker, name, events(second, first), partitions=4)
        _drain_when_caught_up(run_b, broker, name, "shared_g", first + second)
    from_a = _committed_rows(a)  # None: killed before its first commit (a slow start)
    ids = Counter((from_a.column("id").to_pylist() if from_a is not None else [])
                  + read_committed(b.out).column("id").to_pylist())  # fmt: skip
    assert set(ids) == set(range(first + second)), "a record is missing"
    duplicated = [i for i, c in ids.items() if c > 1]
    assert len(duplicated) <= first // 2, len(duplicated)  # only what instance a read
    b_ids = pc.unique(read_committed(b.out).column("_partition")).to_pylist()
    assert sorted(b_ids) == [0, 1, 2, 3], "the survivor did not take every partition"


class Producing:
    """A producer thread: ``batch`` records (``events``, ids counting up) round-robin over
    ``partitions`` every ``every_s``, until ``stop()``, which returns how many it produced
    (all acknowledged)."""

    def __init__(self, broker: str, name: str, partitions: int, batch: int = 200,
                 every_s: float = 0.02) -> None:  # fmt: skip
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": broker, "enable.idempotence": True,
                                  "linger.ms": 5})  # fmt: skip
        self.name, self.partitions, self.batch, self.every_s = name, partitions, batch, every_s
        self.sent = 0
        self.failure: BaseException | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                for v in events(self.batch, self.sent):
                    self.producer.produce(self.name, value=v,
                                          partition=self.sent % self.partitions)  # fmt: skip
                    self.sent += 1
                self.producer.poll(0)
                time.sleep(self.every_s)
        except BaseException as exc:  # raised by stop()
            self.failure = exc

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join(30)
        assert self.failure is None, self.failure
        assert self.producer.flush(30) == 0
        return self.sent


def _committed_rows(job: Job) -> pa.Table | None:
    """The instance's committed output; None while it has committed no row."""
    got = read_committed(job.out) if job.out.exists() else None
    return got if got is not None and got.num_rows else None


def _wait_for_rows(job: Job, run: EngineRun, timeout: float = 60) -> pa.Table:
    """The instance's committed output once it has rows (the run must stay alive)."""
    deadline = time.monotonic() + timeout
    while True:
        got = _committed_rows(job)
        if got is not None:
            return got
        assert run.proc.poll() is None, run.stderr[-3000:]
        assert time.monotonic() < deadline, f"no rows from {job.dir.name}: {run.stderr[-3000:]}"
        time.sleep(0.2)


@pytest.mark.slow
def test_an_instance_joining_the_group_mid_run_takes_partitions_exactly_once(
    tmp_path: Path, broker: str
) -> None:
    """Instance a reads a 4-partition topic alone while a producer keeps producing; instance
    b (the same pipeline and group, its own checkpoints and output) starts mid-run. The
    group rebalances: a holds its revoked partitions until an epoch covering what it read
    has committed and its offsets are in the group, and b (and a) go on from there. Both
    end up with records; once production stops and the group's offsets cover everything,
    the two outputs together hold every record exactly once."""
    name = topic(broker, "joining", 4)
    a = kafka_job(tmp_path / "a", broker, name, parallelism=1, group="joining_g")
    b = kafka_job(tmp_path / "b", broker, name, parallelism=1, group="joining_g")
    producing = Producing(broker, name, 4)
    try:
        with EngineRun(a) as run_a:
            _wait_for_rows(a, run_a)  # a alone, reading every partition
            with EngineRun(b) as run_b:
                _wait_for_rows(b, run_b)  # the group rebalanced: b owns partitions
                # a committed what it had read before the rebalance went through: what it
                # commits from now on it read after, from the partitions it kept
                then = read_committed(a.out).num_rows
                deadline = time.monotonic() + 60
                while read_committed(a.out).num_rows <= then:
                    assert run_a.proc.poll() is None, run_a.stderr[-3000:]
                    assert time.monotonic() < deadline, run_a.stderr[-3000:]
                    time.sleep(0.2)
                n = producing.stop()
                _wait_caught_up([run_a, run_b], broker, name, "joining_g", n)
                _stop(run_a)
                _stop(run_b)
    finally:
        producing.stopping.set()
    out_a, out_b = read_committed(a.out), read_committed(b.out)
    before, after = out_a.slice(0, then), out_a.slice(then)  # (files in commit order)
    assert set(pc.unique(before.column("_partition")).to_pylist()) == {0, 1, 2, 3}
    a_parts = set(pc.unique(after.column("_partition")).to_pylist())
    b_parts = set(pc.unique(out_b.column("_partition")).to_pylist())
    assert a_parts and b_parts and not a_parts & b_parts, (a_parts, b_parts)
    ids = Counter(out_a.column("id").to_pylist() + out_b.column("id").to_pylist())
    assert set(ids) == set(range(n)), f"{n - len(ids)} records missing of {n}"
    twice = [i for i, c in ids.items() if c > 1]
    assert not twice, f"{len(twice)} records twice, e.g. {sorted(twice)[:5]}"


def test_json_decoder_takes_pretty_printed_values_and_tombstones() -> None:
    from connectors.kafka.decode import Decoder

    d = Decoder("json", pa.schema([("a", pa.int64()), ("b", pa.string())]), "sources.k")
    batch, bad = d.decode([b'{"a": 1,\n "b": "x"}', b'{"a": 2}', None, b"nope"])
    assert batch.to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": None},
                                 {"a": None, "b": None}]  # fmt: skip
    assert bad == [(3, "not a JSON object")]
