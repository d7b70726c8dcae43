"""Kafka test helpers: a broker per test module (``scripts/kafka``: Tansu), topics, reading back.

``start_broker()`` / ``stop_broker(dir)`` wrap the project's script; ``produce`` writes
values in order; ``committed_offsets`` sums a group's committed offsets of a topic
(they move when an engine's epoch commits); ``read_topic``
reads every partition of a topic to its end as a ``read_committed`` consumer (or
``read_uncommitted``) would, and returns the records as dicts.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "kafka"


def start_broker() -> tuple[str, Path]:
    where = Path(tempfile.mkdtemp(prefix="ringstream-kafka-"))
    started = subprocess.run(
        [str(SCRIPT), "start", str(where)], capture_output=True, text=True, timeout=300
    )
    assert started.returncode == 0, started.stderr
    return started.stdout.strip(), where


def stop_broker(where: Path) -> None:
    subprocess.run([str(SCRIPT), "stop", str(where)], timeout=60)


def create_topic(broker: str, name: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(10)
    return name


def produce(broker: str, name: str, values: list[bytes], keys: list[bytes] | None = None,
            partitions: int = 0) -> None:  # fmt: skip
    """``values`` in order (round-robin over ``partitions`` when given)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "linger.ms": 5})
    for i, v in enumerate(values):
        where = {"partition": i % partitions} if partitions else {}
        p.produce(name, value=v, key=None if keys is None else keys[i], **where)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(30) == 0


def committed_offsets(broker: str, name: str, group: str) -> int:
    """The sum of ``group``'s committed offsets of ``name`` (0 where none)."""
    from confluent_kafka import Consumer, TopicPartition

    watcher = Consumer({"bootstrap.servers": broker, "group.id": group})
    parts = [TopicPartition(name, p)
             for p in watcher.list_topics(name, timeout=10).topics[name].partitions]  # fmt: skip
    total = sum(max(0, tp.offset) for tp in watcher.committed(parts, timeout=10))
    watcher.close()
    return total


def read_topic(broker: str, name: str, isolation: str = "read_committed") -> list[dict[str, Any]]:
    """``read_once`` until two reads a second apart agree: Tansu makes a committed
    transaction readable a moment after the commit returned (its last stable offset
    moves later), so one read right after a run can stop short."""
    got = read_once(broker, name, isolation)
    for _ in range(30):
        time.sleep(1)
        again = read_once(broker, name, isolation)
        if len(again) == len(got):
            return again
        got = again
    raise AssertionError(f"{name}: what a reader sees kept changing for 30 s")


def read_once(
    broker: str, name: str, isolation: str = "read_committed", timeout: float = 60
) -> list[dict[str, Any]]:
    """Every record of ``name`` up to its end now: value, key, partition, offset,
    timestamp (ms) and headers."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": "ringstream-tests-reader",
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    parts = sorted(c.list_topics(name, timeout=10).topics[name].partitions)
    ends = {p: c.get_watermark_offsets(TopicPartition(name, p), 10, cached=False)[1] for p in parts}
    todo = {p for p in parts if ends[p] > 0}
    c.assign([TopicPartition(name, p, 0) for p in todo])
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while todo:
        assert time.monotonic() < deadline, f"{name}: partitions {todo} not read to the end"
        for m in c.consume(1000, 0.5):
            if m.error() is not None:
                if m.error().code() == m.error()._PARTITION_EOF:
                    todo.discard(m.partition())
                continue
            got.append(
                {
                    "value": m.value(),
                    "key": m.key(),
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "timestamp": m.timestamp()[1],
                    "headers": m.headers() or [],
                }
            )
            if m.offset() + 1 >= ends[m.partition()]:
                todo.discard(m.partition())
    c.close()
    return got
