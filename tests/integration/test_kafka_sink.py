"""The Kafka sink against a real Kafka-protocol broker (``scripts/kafka``: Tansu).

The sink contract's conformance (a re-commit by a fresh instance reads the epoch back
from the spool file the committable names); values written by the sink read back by the Kafka source
as the same rows; formats, keys, partitions, timestamps; refusals; a producer
killed in the middle of an epoch's transaction, whose epoch the next process
commits without a record missing or twice; then Kafka -> engine -> Kafka, a
pass-through and a windowed aggregate, under kill -9 of every process kind and at
every named fault point, the output read as a ``read_committed`` consumer reads it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.base import ConnectorConfig
from connectors.kafka.sink import KafkaSink
from connectors.testing.conformance import check_sink
from engine.errors import ConfigError, ConnectorError, CorruptCheckpointError, DataError
from tests.fault.test_exactly_once import TOPOLOGY, EngineRun, Job, fault_seed, wait_gone
from tests.kafka import (
    committed_offsets,
    create_topic,
    produce,
    read_topic,
    start_broker,
    stop_broker,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = pa.schema([("id", pa.int64()), ("user", pa.string()), ("amount", pa.float64())])


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    address, where = start_broker()
    yield address
    stop_broker(where)


def rows(start: int, n: int) -> pa.RecordBatch:
    ids = list(range(start, start + n))
    return pa.RecordBatch.from_pydict(
        {"id": ids, "user": [f"u{i % 7}" for i in ids], "amount": [i / 4 for i in ids]}, SCHEMA
    )


def sink(broker: str, topic: str, schema: pa.Schema = SCHEMA, pipeline: str = "t", **options):  # type: ignore[no-untyped-def]
    s = KafkaSink()
    s.open(
        ConnectorConfig(
            "out",
            {"bootstrap": broker, "topic": topic, **options},
            schema=schema,
            pipeline=pipeline,
        )
    )
    return s


def one_epoch(s: KafkaSink, epoch: int, *batches: pa.RecordBatch) -> None:
    s.begin_epoch(epoch)
    for b in batches:
        s.write_batch(b)
    s.commit_epoch(epoch, s.pre_commit(epoch))


def values(broker: str, topic: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(r["value"]) for r in read_topic(broker, topic)]


def test_conformance(broker: str) -> None:
    name = create_topic(broker, "conformance", 3)
    config = ConnectorConfig(
        "out",
        {"bootstrap": broker, "topic": name, "key": "user"},
        schema=SCHEMA,
        pipeline="conformance",
    )
    check_sink(
        KafkaSink,
        config,
        [rows(i * 100, 100) for i in range(6)],
        read_back=lambda s: values(broker, name),
    )


def test_values_read_back_by_the_kafka_source_as_the_same_rows(broker: str) -> None:
    from connectors.kafka.source import KafkaSource
    from tests.integration.test_kafka_source import drain

    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("price", pa.decimal128(10, 2)),
            ("at", pa.timestamp("ms", "UTC")),
            ("day", pa.date32()),
            ("ok", pa.bool_()),
            ("score", pa.float64()),
        ]
    )
    at = dt.datetime(2026, 12, 4, 13, 5, 7, 123000, tzinfo=dt.UTC)
    batch = pa.RecordBatch.from_pydict(
        {
            "id": [1, 2, 3],
            "name": ['say "hi"\n', "ünïcode ✓", None],
            "price": [Decimal("12.34"), Decimal("-0.01"), None],
            "at": [at, at + dt.timedelta(milliseconds=1), None],
            "day": [dt.date(2026, 1, 2), None, dt.date(1970, 1, 1)],
            "ok": [True, False, None],
            "score": [1.5, -2.25e300, None],
        },
        schema,
    )
    name = create_topic(broker, "round_trip", 2)
    s = sink(broker, name, schema, key="name", timestamp="at")
    one_epoch(s, 1, batch)
    s.close()
    src = KafkaSource()
    src.open(
        ConnectorConfig(
            "in",
            {
                "bootstrap": broker,
                "topics": [name],
                "key_format": "text",
                "schema": {
                    "id": "bigint",
                    "name": "text",
                    "price": "decimal(10, 2)",
                    "at": "timestamp[ms, tz=UTC]",
                    "day": "date",
                    "ok": "boolean",
                    "score": "double",
                },
            },
        )
    )
    got, bad = drain(src, 3)
    src.close()
    assert not bad
    got = got.sort_by("id")
    assert got.select(schema.names).to_pylist() == pa.Table.from_batches([batch]).to_pylist()
    assert got.column("_key").to_pylist() == ['say "hi"\n', "ünïcode ✓", None]
    stamps = got.column("_timestamp").to_pylist()
    assert stamps[:2] == [at, at + dt.timedelta(milliseconds=1)]


def upper(batch: pa.RecordBatch) -> list[bytes]:
    """A custom encoder (``format = "tests.integration.test_kafka_sink:upper"``)."""
    return [u.upper().encode() for u in batch.column("user").to_pylist()]


def test_formats_keys_partitions_and_headers(broker: str) -> None:
    t = create_topic(broker, "formats_text", 4)
    one_epoch(
        sink(
            broker,
            t,
            columns=["user"],
            format="text",
            partition="p",
            schema=SCHEMA.append(pa.field("p", pa.int32())),
        ),
        1,
        rows(0, 8).append_column("p", pa.array([i % 4 for i in range(8)], pa.int32())),
    )
    got = read_topic(broker, t)
    assert sorted((r["partition"], r["value"]) for r in got) == sorted(
        (i % 4, f"u{i % 7}".encode()) for i in range(8)
    )
    assert all(h[0] == "ringstream.epoch" and h[1] == b"t.out:1" for r in got for h in r["headers"])

    t = create_topic(broker, "formats_custom", 3)
    one_epoch(
        sink(broker, t, format="tests.integration.test_kafka_sink:upper", key="id"), 1, rows(0, 50)
    )
    got = read_topic(broker, t)
    assert sorted(r["value"] for r in got) == sorted(f"U{i % 7}".encode() for i in range(50))
    by_key = {}
    for r in got:  # a key always lands in one partition
        assert by_key.setdefault(r["key"], r["partition"]) == r["partition"]
    assert len({r["partition"] for r in got}) > 1

    raw = pa.schema(
        [
            ("value", pa.binary()),
            ("_key", pa.binary()),
            ("_headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))),
        ]
    )
    t = create_topic(broker, "formats_raw", 1)
    b = pa.RecordBatch.from_pydict(
        {
            "value": [b"\x00\xff", b""],
            "_key": [b"k", None],
            "_headers": [[{"key": "h", "value": b"1"}], None],
        },
        raw,
    )
    one_epoch(sink(broker, t, raw, format="raw"), 1, b)
    got = sorted(read_topic(broker, t), key=lambda r: r["offset"])
    assert [(r["value"], r["key"]) for r in got] == [(b"\x00\xff", b"k"), (b"", None)]
    assert got[0]["headers"][0] == ("h", b"1")


def test_refusals_name_the_option_and_the_row(broker: str) -> None:
    t = create_topic(broker, "refusals", 2)
    with pytest.raises(ConfigError, match="'missing_topic' does not exist"):
        sink(broker, "missing_topic")
    with pytest.raises(ConfigError, match=r"columns: the stream has no column 'nope'"):
        sink(broker, t, columns=["nope"])
    with pytest.raises(ConfigError, match="format 'text' writes one column"):
        sink(broker, t, format="text")
    with pytest.raises(ConfigError, match="'amount' is double; format 'text' needs text"):
        sink(broker, t, format="text", columns=["amount"])
    with pytest.raises(ConfigError, match="partition: column 'user' is string, not an integer"):
        sink(broker, t, partition="user")
    s = sink(broker, t, partition="id")
    s.begin_epoch(1)
    with pytest.raises(DataError, match=r"row 2 has partition 2; the topic has 2 \(0..1\)"):
        s.write_batch(rows(0, 5))
    s.close()
    s = sink(broker, t)
    s.begin_epoch(1)
    s.write_batch(rows(0, 3))
    huge = pa.RecordBatch.from_pydict({"id": [3, 4], "user": ["u", "x" * (9 << 20)],
                                       "amount": [0.0, 1.0]}, SCHEMA)  # fmt: skip
    with pytest.raises(DataError, match=r"row 4 of the epoch encodes to a record of 9,437,"):
        s.write_batch(huge)
    s.close()
    created = sink(broker, "made_by_the_sink", create=True, partitions=5)
    assert created.partitions == 5
    created.close()


CRASH = """
import json, sys
import pyarrow as pa
from connectors.base import ConnectorConfig
from connectors.kafka.sink import KafkaSink
from tests.integration.test_kafka_sink import SCHEMA, rows
s = KafkaSink()
s.open(ConnectorConfig("out", {"bootstrap": sys.argv[1], "topic": sys.argv[2], "key": "user"},
                       schema=SCHEMA, pipeline="crash", durable_dir=sys.argv[4]))
s.begin_epoch(1)
for i in range(20):
    s.write_batch(rows(i * 1000, 1000))
c = s.pre_commit(1)
open(sys.argv[3], "w").write(json.dumps(c))
s.commit_epoch(1, c)   # killed half-way through (RINGSTREAM_FAULT)
"""


def test_a_producer_killed_mid_transaction_loses_and_doubles_nothing(
    broker: str, tmp_path: Path
) -> None:
    """Epoch 1's transaction is killed after half its records reached the broker; a fresh
    sink commits epoch 1 from the committable alone: every row once; a second re-commit
    (the marker says done) sends nothing."""
    t = create_topic(broker, "mid_transaction", 3)
    env = {
        **os.environ,
        "RINGSTREAM_FAULT": "kafka_sink.mid_transaction@1",
        "RINGSTREAM_FAULT_MARKS": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", CRASH, broker, t, str(tmp_path / "c.json"), str(tmp_path / "sp")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    committable = json.loads((tmp_path / "c.json").read_text())
    assert committable["spool"]["path"] == str(tmp_path / "sp" / f"epoch-{1:020d}.arrow")
    assert committable["spool"]["records"] == 20_000
    for _ in range(2):
        s = sink(broker, t, pipeline="crash", key="user")
        s.commit_epoch(1, committable)
        s.close()
        ids = Counter(v["id"] for v in values(broker, t))
        assert set(ids) == set(range(20_000)) and max(ids.values()) == 1


def test_two_pipelines_write_one_topic_without_fencing_each_other(broker: str) -> None:
    t = create_topic(broker, "two_pipelines", 2)
    a, b = sink(broker, t, pipeline="a"), sink(broker, t, pipeline="b")
    for epoch in (1, 2):
        for s, start in ((a, 0), (b, 10_000)):
            one_epoch(s, epoch, rows(start + epoch * 100, 100))
    a.close()
    b.close()
    assert sorted(v["id"] for v in values(broker, t)) == sorted(
        [i + e * 100 for e in (1, 2) for i in range(100)]
        + [10_000 + i + e * 100 for e in (1, 2) for i in range(100)]
    )


def test_a_committable_from_before_the_spool_is_read_back_from_the_staging_topic(
    broker: str,
) -> None:
    """The sink used to stage an epoch's records in its staging topic (Arrow IPC chunks
    keyed by the epoch) and name their offsets in the committable. A manifest written
    then and re-committed by this version still commits every row once."""
    import pyarrow.ipc as ipc
    from confluent_kafka import Producer

    from connectors.kafka.encode import RECORDS

    t = create_topic(broker, "old_committable", 2)
    s = sink(broker, t, pipeline="old")
    records = s.encoder.encode(rows(0, 500), 0)
    offsets: list[int] = []
    p = Producer({"bootstrap.servers": broker, "enable.idempotence": True})
    for chunk in (records.slice(0, 200), records.slice(200)):
        out = pa.BufferOutputStream()
        with ipc.new_stream(out, RECORDS) as w:
            w.write_batch(chunk)
        p.produce(s.staging.topic, out.getvalue().to_pybytes(), b"7", partition=0,
                  on_delivery=lambda e, m: offsets.append(m.offset()))  # fmt: skip
    assert p.flush(30) == 0 and len(offsets) == 2
    old = {"epoch": 7, "id": s.id, "rows": 500, "starts": s._ends(),
           "staging": [s.staging.topic, 0, min(offsets), max(offsets) + 1]}  # fmt: skip
    for _ in range(2):  # the second time, the marker says it is in
        s.commit_epoch(7, old)
    s.close()
    assert sorted(v["id"] for v in values(broker, t)) == list(range(500))


def test_an_epoch_pre_committed_before_the_last_commit_carries_it(broker: str) -> None:
    """Epoch 2 is pre-committed before ``Commit(1)`` reached the sink (the coordinator
    opens epoch 2 once manifest 1 is written). A crash then a restart from manifest 2
    commits epoch 1 first, from epoch 2's committable alone: every row once."""
    t = create_topic(broker, "two_pending", 2)
    s = sink(broker, t, pipeline="pending")
    s.begin_epoch(1)
    s.write_batch(rows(0, 300))
    first = s.pre_commit(1)
    s.begin_epoch(2)
    s.write_batch(rows(300, 200))
    second = s.pre_commit(2)
    assert second is not None and [e["epoch"] for e in second["earlier"]] == [1]
    assert first is not None and "earlier" not in first
    for _ in range(2):  # the restarted process, twice: the markers make it idempotent
        fresh = sink(broker, t, pipeline="pending")
        fresh.commit_epoch(2, second)
        fresh.close()
    assert sorted(v["id"] for v in values(broker, t)) == list(range(500))
    s.close()


def test_a_damaged_spool_file_stops_the_commit_naming_it(broker: str) -> None:
    """A spool file a manifest names, cut short: the re-commit refuses it as a damaged
    checkpoint (permanent, not retried) before a record is sent."""
    t = create_topic(broker, "damaged_spool", 1)
    s = sink(broker, t, pipeline="damaged")
    s.begin_epoch(1)
    s.write_batch(rows(0, 2000))
    c = s.pre_commit(1)
    assert c is not None
    path = Path(c["spool"]["path"])
    os.truncate(path, path.stat().st_size // 2)
    fresh = sink(broker, t, pipeline="damaged")  # aborts what ``s`` sent early
    shown = read_topic(broker, t)  # (Tansu shows aborted records; Kafka would not)
    with pytest.raises(CorruptCheckpointError, match=f"epoch 1's staged records {path}"):
        fresh.commit_epoch(1, c)
    fresh.close()
    s.close()
    assert read_topic(broker, t) == shown


def test_a_restarted_sink_fences_its_zombie(broker: str) -> None:
    """A sink process thought dead but still running (a zombie) and its restarted
    successor share the transactional id. The successor commits the zombie's staged
    epoch (its producer fences the zombie's); the zombie's re-commit of that epoch
    sends nothing (the marker), its next epoch fails saying it was fenced, and every
    committed row is in the topic once."""
    t = create_topic(broker, "zombie", 2)
    zombie = sink(broker, t, pipeline="z")
    one_epoch(zombie, 1, rows(0, 100))  # the zombie's producer is live
    zombie.begin_epoch(2)
    zombie.write_batch(rows(100, 100))
    staged = zombie.pre_commit(2)
    successor = sink(broker, t, pipeline="z")
    successor.commit_epoch(2, staged)  # recovery: fences the zombie, commits epoch 2
    zombie.commit_epoch(2, staged)  # the marker says epoch 2 is in: nothing is sent
    with pytest.raises(ConnectorError, match="fenced"):
        one_epoch(zombie, 3, rows(1_000, 100))  # what only the zombie saw: never visible
    one_epoch(successor, 3, rows(200, 100))
    successor.close()
    zombie.close()
    ids = Counter(v["id"] for v in values(broker, t))
    assert set(ids) == set(range(300)) and max(ids.values()) == 1


# -- Kafka -> engine -> Kafka ------------------------------------------------------------------
INPUT_ROWS = 40_000


def events(n: int) -> list[bytes]:
    """Event time: 1 ms apart, so 40,000 events span 40 one-second windows."""
    return [
        json.dumps({"id": i, "user": f"u{i % 13}", "amount": i % 100, "ms": i}).encode()
        for i in range(n)
    ]


def fill(broker: str, name: str, n: int, partitions: int) -> None:
    create_topic(broker, name, partitions)
    produce(broker, name, events(n), partitions=partitions)


@contextlib.contextmanager
def fill_paced(broker: str, name: str, n: int, partitions: int, seconds: float) -> Iterator[None]:
    """The ``n`` events written in 40 parts over ``seconds`` by a thread, while the body
    runs (and waited for when it ends): every epoch of the run's first seconds has rows.
    (Written at once, they were all read before the first barrier on a fast machine.)"""
    import threading

    create_topic(broker, name, partitions)
    values, parts = events(n), 40
    failed: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(parts):
                produce(broker, name, values[i * n // parts : (i + 1) * n // parts],
                        partitions=partitions)  # fmt: skip
                time.sleep(seconds / parts)
        except BaseException as exc:  # seen by the test below
            failed.append(exc)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    try:
        yield
    finally:
        t.join(120)
    assert not failed and not t.is_alive(), f"the paced writer failed: {failed}"


def kafka_to_kafka(dir: Path, broker: str, src: str, out: str, query: str) -> Job:
    dir.mkdir(parents=True, exist_ok=True)
    pipeline = dir / "pipeline.toml"
    pipeline.write_text(f"""
[pipeline]
name = "k2k_{dir.name}"
delivery = "exactly-once"
[checkpoint]
interval_ms = 150
dir = "{dir / "checkpoints"}"
max_restarts = 20
restart_backoff_ms = 50
[metrics]
enabled = false
[[sources]]
name = "events"
type = "kafka"
bootstrap = "{broker}"
topics = ["{src}"]
parallelism = 2
schema = {{ id = "bigint", user = "text", amount = "bigint", ms = "bigint" }}
event_time = "ms"
batch_max_rows = 2000
batch_max_wait_ms = 20
{query}
[[sinks]]
name = "out"
type = "kafka"
bootstrap = "{broker}"
topic = "{out}"
create = true
partitions = 3
key = "user"
""")
    topology = dir / "topology.toml"
    topology.write_text(TOPOLOGY)
    return Job(dir, pipeline, topology, dir, dir / "checkpoints")


WINDOW = """
[[query.steps]]
op = "window"
key = ["user"]
window = { type = "tumbling", size_ms = 1000 }
aggregates = ["count", "sum(amount)"]
"""


def expected_windows() -> Counter:  # type: ignore[type-arg]
    got: Counter = Counter()  # type: ignore[type-arg]
    for e in map(json.loads, events(INPUT_ROWS)):
        if e["ms"] >= INPUT_ROWS - 1000:
            continue  # the last second: its window stays open (the source only stopped)
        got[(e["ms"] - e["ms"] % 1000, e["user"], "count")] += 1
        got[(e["ms"] - e["ms"] % 1000, e["user"], "sum")] += e["amount"]
    return got


def windows_of(out: list[dict]) -> Counter:  # type: ignore[type-arg]
    got: Counter = Counter()  # type: ignore[type-arg]
    for v in out:
        start = v["window_start"]
        ms = (
            int(dt.datetime.fromisoformat(start).timestamp() * 1000)
            if isinstance(start, str)
            else start
        )
        got[(ms, v["user"], "count")] += v["count"]
        got[(ms, v["user"], "sum")] += v["sum_amount"]
    return got


def run_to_end(
    job: Job,
    env: dict[str, str],
    kill: list[str],
    seed: int,
    broker: str,
    src: str,
    until: Callable[[], bool] = lambda: True,
) -> str:
    """Run ``job``, killing with SIGKILL one process of each kind in ``kill`` (one per
    attempt; ``coordinator`` is the ``python -m engine run`` process itself, which is
    then started again, as a supervisor would); a coordinator killed by a fault point
    is started again too. Once the source's group offsets cover the input (and
    ``until()``), SIGINT. Returns every start's stderr."""
    import random
    import signal

    rng, logs, kill = random.Random(seed), [], list(kill)
    deadline = time.monotonic() + 240
    while True:
        assert time.monotonic() < deadline, "".join(logs)[-4000:]
        with EngineRun(job, env) as run:
            attempt = 0
            while kill:
                attempt += 1
                children = run.wait_attempt(attempt)
                if children is None:
                    break  # the coordinator died (a fault point): start it again
                time.sleep(rng.uniform(0.3, 1.5))
                if run.proc.poll() is not None:
                    break
                kind = kill.pop(0)
                if kind == "coordinator":
                    os.kill(run.proc.pid, signal.SIGKILL)
                    run.proc.wait(30)  # gone before anything below asks whether it runs
                    break
                label = next(label for label in children if label.startswith(kind))
                with contextlib.suppress(ProcessLookupError):  # it failed on its own
                    os.kill(children[label], signal.SIGKILL)
            run.wait_attempt(attempt or 1)  # started (SIGINT while importing is a crash)
            while run.proc.poll() is None and (
                committed_offsets(broker, src, "ringstream_events") < INPUT_ROWS or not until()
            ):
                assert time.monotonic() < deadline, run.stderr[-4000:]
                time.sleep(0.2)
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGINT)
                assert run.wait(120) == 0, run.stderr[-3000:]
                assert not wait_gone(run.pids())
                logs.append(run.stderr)
                return "".join(logs)
            rc = run.wait(60)
            logs.append(run.stderr)
            assert rc == -signal.SIGKILL, run.stderr[-3000:]  # only a kill stops it
            assert not wait_gone(run.pids())
            from engine.shm.segment import sweep_stale

            sweep_stale()  # the dead run's rings, as its next start would remove them


@pytest.mark.slow
@pytest.mark.parametrize("query", ["pass_through", "window"])
def test_kafka_to_kafka_exactly_once_under_kills(tmp_path: Path, broker: str, query: str) -> None:
    """Every process kind killed once, at random times, in random order; then the
    coordinator. The topic read ``read_committed`` holds every input row once
    (pass-through), or exactly the windows computed from the input."""
    import random

    seed = fault_seed()
    src, out = f"k2k_in_{query}_{seed % 10**6}", f"k2k_out_{query}_{seed % 10**6}"
    fill(broker, src, INPUT_ROWS, 4)
    job = kafka_to_kafka(tmp_path / query, broker, src, out, WINDOW if query == "window" else "")
    kinds = ["source", "worker", "sink"]
    random.Random(seed).shuffle(kinds)
    print(run_to_end(job, {}, [*kinds, "coordinator"], seed, broker, src))
    check_output(broker, out, query, f"seed {seed}, killed {kinds}")
    check_spool_emptied(job)


def check_spool_emptied(job: Job) -> None:
    """The sink spooled under the checkpoint directory, and a run that ended committed
    left no epoch's records there (the dead processes' files included)."""
    spool = job.checkpoints / "connectors" / "sink-out-0"
    assert spool.is_dir(), f"no spool in {job.checkpoints}"
    assert sorted(p.name for p in spool.iterdir()) == []


def check_output(broker: str, out: str, query: str, what: str) -> None:
    got = values(broker, out)
    if query == "window":
        assert windows_of(got) == expected_windows(), f"{what}: {len(got)} records, e.g. {got[:2]}"
        keys = Counter((v["window_start"], v["user"]) for v in got)
        assert max(keys.values()) == 1, f"{what}: a window written twice"
    else:
        ids = Counter(v["id"] for v in got)
        assert set(ids) == set(range(INPUT_ROWS)), f"{what}: rows lost"
        assert max(ids.values()) == 1, f"{what}: rows written twice"


@pytest.mark.slow
def test_kafka_to_kafka_at_every_fault_point(tmp_path: Path, broker: str) -> None:
    """One run killed at each named point of the epoch protocol in turn, the Kafka sink's
    own (half an epoch's transaction sent) among them: the output is exact."""
    src, out = "faults_in", "faults_out"
    job = kafka_to_kafka(tmp_path / "faults", broker, src, out, "")
    points = [
        "kafka_sink.mid_transaction@2",
        "coordinator.after_manifest@4",
        "sink.after_pre_commit@6",
        "sink.after_commit@8",
        "coordinator.before_manifest@10",
        "source.after_checkpoint@12",
    ]
    env = {"RINGSTREAM_FAULT": ",".join(points), "RINGSTREAM_FAULT_MARKS": str(tmp_path)}
    fired = lambda: len([p for p in tmp_path.iterdir() if "@" in p.name]) == len(points)  # noqa: E731
    with fill_paced(broker, src, INPUT_ROWS, 4, seconds=3.0):  # epoch 2 must have rows
        run_to_end(job, env, [], 0, broker, src, until=fired)
    fired = sorted(p.name for p in tmp_path.iterdir() if "@" in p.name)
    assert "kafka_sink.mid_transaction@2" in fired and "coordinator.after_manifest@4" in fired
    check_output(broker, out, "pass_through", f"fired {fired}")
    check_spool_emptied(job)


@pytest.mark.slow
def test_example_kafka_runs_as_its_readme_says(tmp_path: Path, broker: str) -> None:
    """examples/kafka/README.md: produce.toml, then pipeline.toml until the group has
    committed every event, then Ctrl-C; totals holds every closed window once (all but
    the last second's), equal to the windows computed from the generator's events."""
    import signal

    from connectors.generator import generate

    example = ROOT / "examples" / "kafka"
    env = {
        **os.environ,
        "RINGSTREAM_SOURCES__0__BOOTSTRAP": broker,
        "RINGSTREAM_SINKS__0__BOOTSTRAP": broker,
    }
    run = [sys.executable, "-m", "engine", "run"]
    done = subprocess.run(
        [*run, str(example / "produce.toml")],
        cwd=tmp_path,
        env={**os.environ, "RINGSTREAM_SINKS__0__BOOTSTRAP": broker},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen(
        [*run, str(example / "pipeline.toml")],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while committed_offsets(broker, "events", "kafka_example") < 200_000:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the example did not read every event"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    events = generate(7, 0, 200_000, 50, 10_000)
    want: Counter = Counter()  # type: ignore[type-arg]
    for ts, key in zip(
        events.column("ts").to_pylist(), events.column("key").to_pylist(), strict=True
    ):
        if ts < 19_000:  # the last second's windows stay open when the run stops
            want[(ts - ts % 1000, key)] += 1
    shown = subprocess.run(
        [sys.executable, str(example / "read.py"), broker, "totals"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = [json.loads(line) for line in shown.stdout.splitlines()]
    starts = {(r["window_start"], r["key"]) for r in got}
    assert len(starts) == len(got) == len(want), "a window missing or written twice"
    counts = Counter({(_ms(r["window_start"]), r["key"]): r["count"] for r in got})
    assert counts == want


def _ms(v: object) -> int:
    return int(dt.datetime.fromisoformat(v).timestamp() * 1000) if isinstance(v, str) else v  # type: ignore[return-value,arg-type]
