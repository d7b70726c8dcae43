"""The Kafka sink's records sent early (``connectors.kafka.produce.Early``), against a real
broker (``scripts/kafka``: Tansu).

Sending early is for brokers that hide an aborted transaction from ``read_committed``
readers (Kafka): ``aborted = "hidden"`` here, as the probe finds on Kafka. Tansu
shows aborted records, so these tests check what it can show: every row of a run
without a crash lands once; each epoch's transaction holds that epoch alone, begun
once the earlier one committed; what a rollback, a stale transaction or a lost
producer leaves is sent again at the commit from the spool. (The default, the
probe, finds Tansu shows them: the other Kafka tests then send at commit only,
and ``test_the_probe_keeps_early_sending_off_where_aborted_records_show`` checks it.)
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from engine.errors import TransientError
from tests.integration.test_kafka_sink import rows, sink, values
from tests.kafka import create_topic, read_topic, start_broker, stop_broker


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    address, where = start_broker()
    yield address
    stop_broker(where)


def ids(broker: str, topic: str) -> Counter[int]:
    return Counter(v["id"] for v in values(broker, topic))


def test_each_epoch_goes_early_into_its_own_transaction_once_the_last_committed(
    broker: str,
) -> None:
    t = create_topic(broker, "early_order", 3)
    s = sink(broker, t, pipeline="early", key="user", aborted="hidden")
    s.begin_epoch(1)
    s.write_batch(rows(0, 300))
    assert (s.early.epoch, s.early.sent) == (1, 300)  # sent as written
    c1 = s.pre_commit(1)
    s.begin_epoch(2)
    s.write_batch(rows(300, 200))  # epoch 1 is not committed: epoch 2 waits in memory
    assert s.early.epoch == 1 and [b.num_rows for b in s.early.backlog[2]] == [200]
    s.commit_epoch(1, c1)
    assert (s.early.epoch, s.early.sent, s.early.backlog) == (2, 200, {})
    s.write_batch(rows(500, 100))
    c2 = s.pre_commit(2)
    s.commit_epoch(2, c2)
    assert s.early.epoch is None and s.metrics()["rows_committed"] == 600
    s.commit_epoch(2, c2)  # again (a retried Commit): the marker says it is in
    s.close()
    got = ids(broker, t)
    assert set(got) == set(range(600)) and max(got.values()) == 1


def test_a_pipeline_with_early_sending_writes_every_row_once(tmp_path, broker: str) -> None:  # type: ignore[no-untyped-def]
    """``python -m engine run``: Parquet -> Kafka sink (``aborted = "hidden"``), exactly-once,
    epochs every 50 ms: the epochs overlap (one pre-committed while the last commits), so
    an epoch's records wait in memory while the ring they came from is written
    over (a 256 KB ring): every record keeps the key of its own row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.engine_run import engine

    t = create_topic(broker, "early_engine", 4)
    (tmp_path / "in").mkdir()
    n = 200_000
    pq.write_table(
        pa.table({"id": range(n), "user": [f"u{i % 11}" for i in range(n)],
                  "amount": [i / 8 for i in range(n)]}),  # fmt: skip
        tmp_path / "in" / "rows.parquet",
        row_group_size=5_000,
    )
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f"""
[pipeline]
name = "early_engine"
delivery = "exactly-once"
[checkpoint]
interval_ms = 50
dir = "{tmp_path}/ck"
[[sources]]
name = "rows"
type = "files"
path = "{tmp_path}/in"
format = "parquet"
batch_rows = 5000
[[sinks]]
name = "out"
type = "kafka"
bootstrap = "{broker}"
topic = "{t}"
key = "user"
aborted = "hidden"
""")
    topology = tmp_path / "topology.toml"
    topology.write_text("[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [0]\n"
                        "[rings]\ncapacity = 262144\n")  # fmt: skip
    done = engine("run", str(pipeline), "--topology", str(topology))
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_topic(broker, t)
    got = Counter(json.loads(r["value"])["id"] for r in records)
    assert set(got) == set(range(n)) and max(got.values()) == 1
    wrong = [r for r in records if r["key"] != json.loads(r["value"])["user"].encode()]
    assert not wrong, f"{len(wrong)} records with another row's key, e.g. {wrong[:2]}"


def test_a_rollback_aborts_the_early_transaction_and_the_next_epoch_starts_clean(
    broker: str,
) -> None:
    t = create_topic(broker, "early_rollback", 2)
    s = sink(broker, t, pipeline="early_rb", aborted="hidden")
    s.begin_epoch(1)
    s.write_batch(rows(0, 100))
    assert s.early.epoch == 1
    s.rollback_epoch(1)  # the engine replays epoch 1's input
    assert s.early.epoch is None and not s.early.stopped and not s.early.backlog
    s.begin_epoch(1)
    s.write_batch(rows(1000, 50))
    assert (s.early.epoch, s.early.sent) == (1, 50)  # a new transaction, this epoch's rows
    s.commit_epoch(1, s.pre_commit(1))
    assert s.metrics()["rows_committed"] == 50
    s.close()
    assert set(range(1000, 1050)) <= set(ids(broker, t))  # (Tansu also shows the aborted 100)


def test_a_stale_early_transaction_is_given_up_and_the_epoch_sent_from_the_spool(
    broker: str,
) -> None:
    t = create_topic(broker, "early_stale", 1)
    s = sink(broker, t, pipeline="early_stale", aborted="hidden", transaction_timeout_ms=1000)
    s.begin_epoch(1)
    s.write_batch(rows(0, 100))
    time.sleep(0.6)  # past half the transaction timeout: given up, not risked
    s.write_batch(rows(100, 100))
    assert s.early.epoch is None and 1 in s.early.stopped
    s.commit_epoch(1, s.pre_commit(1))
    assert s.metrics()["rows_committed"] == 200  # every row, from the spool
    s.close()
    assert set(range(200)) <= set(ids(broker, t))


def test_the_probe_keeps_early_sending_off_where_aborted_records_show(broker: str) -> None:
    """Tansu shows aborted records: an epoch rolled back after an early send would stay
    readable, so the probe (the default) turns early sending off; the rows go at the commit."""
    t = create_topic(broker, "early_probe", 1)
    s = sink(broker, t, pipeline="early_probe")
    s.begin_epoch(1)
    s.write_batch(rows(0, 100))
    assert s.tagged is True and s.early.epoch is None and 1 in s.early.stopped
    c = s.pre_commit(1)
    assert json.loads(json.dumps(c))["rows"] == 100
    s.commit_epoch(1, c)
    s.close()
    got = ids(broker, t)
    assert set(got) == set(range(100)) and max(got.values()) == 1


def test_records_held_behind_an_empty_epoch_go_first(broker: str) -> None:
    """Epoch 1 writes nothing; epoch 2's first rows wait behind its committable, then
    more come after its commit: the transaction holds epoch 2's rows in their order
    (found by review: the held rows were skipped, the later ones sent twice)."""
    t = create_topic(broker, "early_empty", 1)
    s = sink(broker, t, pipeline="early_empty", aborted="hidden")
    s.begin_epoch(1)
    c1 = s.pre_commit(1)
    s.begin_epoch(2)
    s.write_batch(rows(0, 100))  # held: epoch 1 is not committed
    s.commit_epoch(1, c1)  # nothing to send: epoch 2 begins with what it held
    assert (s.early.epoch, s.early.sent, s.early.backlog) == (2, 100, {})
    s.write_batch(rows(100, 100))
    s.commit_epoch(2, s.pre_commit(2))
    s.close()
    got = ids(broker, t)
    assert set(got) == set(range(200)) and max(got.values()) == 1


def test_a_commit_retried_after_a_lost_answer_lets_the_next_epoch_begin(broker: str) -> None:
    """``commit_transaction`` commits but its answer is lost; the guard's retry finds the
    marker and sends nothing; epoch 2's held rows still go first."""
    from confluent_kafka import KafkaError, KafkaException

    t = create_topic(broker, "early_retry", 1)
    s = sink(broker, t, pipeline="early_retry", aborted="hidden")
    s.begin_epoch(1)
    s.write_batch(rows(0, 100))
    c1 = s.pre_commit(1)
    s.begin_epoch(2)
    s.write_batch(rows(100, 100))  # held
    real = s.producer

    class LostAnswer:  # the broker commits; the client hears a timeout
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(real, name)

        def commit_transaction(self, *a):  # type: ignore[no-untyped-def]
            real.commit_transaction(*a)
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    s.producer = LostAnswer()
    with pytest.raises(TransientError):
        s.commit_epoch(1, c1)
    s.commit_epoch(1, c1)  # the retry: the marker says it is in
    s.write_batch(rows(200, 100))
    s.commit_epoch(2, s.pre_commit(2))
    s.close()
    got = ids(broker, t)
    assert set(got) == set(range(300)) and max(got.values()) == 1


def test_a_stale_transaction_whose_abort_fails_is_committed_by_a_fresh_producer(
    broker: str,
) -> None:
    """An early transaction the broker aborted under the producer (past its timeout: the
    producer is fenced, every call fails for good): the commit starts a fresh producer
    instead of failing the run (found by review)."""
    from confluent_kafka import KafkaError, KafkaException

    t = create_topic(broker, "early_dead", 1)
    s = sink(broker, t, pipeline="early_dead", aborted="hidden")
    s.begin_epoch(1)
    s.write_batch(rows(0, 100))
    c1 = s.pre_commit(1)
    s.early.began -= 3600  # older than half the transaction timeout
    real = s.producer
    fenced = KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    class Dead:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(real, name)

        def abort_transaction(self, *a):  # type: ignore[no-untyped-def]
            raise fenced

        def begin_transaction(self, *a):  # type: ignore[no-untyped-def]
            raise fenced

    s.producer = Dead()
    s.commit_epoch(1, c1)
    assert s.metrics()["rows_committed"] == 100 and not isinstance(s.producer, Dead)
    s.close()
    assert set(range(100)) <= set(ids(broker, t))  # (Tansu also shows the aborted ones)
