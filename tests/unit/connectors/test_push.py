"""Push source, subscribe sink and the client, in one process (the accept threads are real)."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.base import ConnectorConfig
from connectors.push import PushSource
from connectors.subscribe import SubscribeSink
from connectors.testing import check_sink, check_source
from engine import connect
from engine.client import LineBuffer, encode, read_line, socket_path, split_to_fit
from engine.errors import ConfigError, ConnectorError, PeerClosedError, SchemaMismatchError
from engine.shm import Ring, segment
from engine.shm.arrow_codec import BatchEncoder

SCHEMA = {"symbol": "string", "price": "float64", "ts": "timestamp"}
ARROW = pa.schema([("symbol", pa.string()), ("price", pa.float64()), ("ts", pa.timestamp("ms"))])


def rows(n: int, start: int = 0) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "symbol": pa.array([f"s{i % 5}" for i in range(start, start + n)]),
            "price": pa.array([float(i) for i in range(start, start + n)]),
            "ts": pa.array(list(range(start, start + n)), pa.timestamp("ms")),
        }
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def source(run_dir: Path) -> Iterator[Any]:
    made: list[PushSource] = []

    def make(**options: Any) -> PushSource:
        src = PushSource()
        src.open(ConnectorConfig("trades", {"dir": str(run_dir), "schema": SCHEMA, **options}))
        made.append(src)
        return src

    yield make
    for s in made:
        s.close()


@pytest.fixture
def sink(run_dir: Path) -> Iterator[Any]:
    made: list[SubscribeSink] = []

    def make(schema: pa.Schema | None = ARROW, **options: Any) -> SubscribeSink:
        k = SubscribeSink()
        k.open(ConnectorConfig("alerts", {"dir": str(run_dir), **options}, schema=schema))
        made.append(k)
        return k

    yield make
    for k in made:
        k.close()


def drain(src: PushSource, until: int, timeout: float = 10.0) -> pa.Table:
    """Poll (as the runtime does) until ``until`` rows came or the source finished."""
    got: list[pa.RecordBatch] = []
    end = time.monotonic() + timeout
    while sum(b.num_rows for b in got) < until and not src.finished():
        assert time.monotonic() < end, f"only {sum(b.num_rows for b in got)} of {until} rows"
        b = src.poll_batch(1000)
        if b is None:
            src.data_ready(0.05)
        else:
            assert b.batch.num_rows <= 1000
            got.append(b.batch)
    return pa.Table.from_batches(got, schema=ARROW)


# -- push source -----------------------------------------------------------------------
def test_push_open_does_not_listen_until_first_poll(source: Any, run_dir: Path) -> None:
    src = source()
    assert src.schema() == ARROW and not src.supports_replay()
    assert not run_dir.exists()
    assert src.poll_batch(10) is None
    assert socket_path(run_dir, "trades", "source").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schema": None}, "sources.trades.schema=None must be a table"),
        ({"schema": {"a": "money"}}, "sources.trades.schema.a: unknown type 'money'"),
        ({"colour": 1}, "unknown option 'colour'"),
        ({"ring_capacity": 100_000}, "sources.trades.ring_capacity: ring capacity=100000 is"),
        ({"ring_capacity": 1024}, "sources.trades.ring_capacity=1024 must be an integer >= 65536"),
        ({"max_clients": 0}, "sources.trades.max_clients=0 must be an integer >= 1"),
    ],
)
def test_push_open_bad_option_config_error_names_key(
    source: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        source(**options)


def test_push_parallelism_above_one_refused(run_dir: Path) -> None:
    with pytest.raises(ConfigError, match="parallelism=2"):
        PushSource().open(ConnectorConfig("trades", {"schema": SCHEMA}, 0, 2))


def test_push_client_rows_arrive_in_order_with_cast_and_reorder(source: Any, run_dir: Path) -> None:
    src = source(end_after_clients=1)
    src.poll_batch(1)
    with connect(run_dir).source("trades") as client:
        assert client.schema == ARROW
        client.push_arrow(rows(1500))
        client.push_pylist([{"symbol": "x", "price": 1.5, "ts": 7}])
        ts = pa.array([8], pa.timestamp("ms"))
        reordered = pa.table({"ts": ts, "price": [2], "symbol": ["y"]})
        client.push_arrow(reordered)  # columns by name; int64 price cast to float64
    table = drain(src, 1502)
    assert src.finished()
    assert table.slice(0, 1500).equals(pa.Table.from_batches([rows(1500)]))
    assert table.slice(1500).to_pylist()[0]["symbol"] == "x"
    assert table.column("price").to_pylist()[-1] == 2.0
    m = src.metrics()
    assert m["clients_total"] == 1 and m["clients_ended"] == 1 and m["rows_pushed"] == 1502


def test_push_client_wrong_columns_schema_mismatch_before_sending(
    source: Any, run_dir: Path
) -> None:
    src = source()
    src.poll_batch(1)
    with connect(run_dir).source("trades") as client:
        with pytest.raises(SchemaMismatchError, match=r"missing columns \['ts'\]"):
            client.push_arrow(pa.table({"symbol": ["a"], "price": [1.0]}))
        with pytest.raises(SchemaMismatchError, match="cannot be cast safely"):
            client.push_arrow(pa.table({"symbol": ["a"], "price": ["dear"], "ts": [1]}))
        assert client.rows_pushed == 0


def test_push_foreign_client_wrong_schema_rejected_pipeline_goes_on(
    source: Any, run_dir: Path
) -> None:
    src = source()
    src.poll_batch(1)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(socket_path(run_dir, "trades", "source")))
    sock.sendall(encode({"hello": 1, "pid": os.getpid(), "role": "push"}))
    reply = read_line(sock, LineBuffer(), 5)
    assert reply is not None
    ring = Ring.attach(reply["ring"])
    writer = ring.writer()
    writer.write_batch(pa.record_batch({"other": [1, 2]}))
    with connect(run_dir).source("trades") as good:
        good.push_arrow(rows(10))
        assert drain(src, 10).num_rows == 10
    assert src.metrics()["clients_rejected"] == 1
    last = read_line(sock, LineBuffer(), 5)
    assert last is not None and "it pushes schema {other: int64}" in last["end"]
    writer.close()
    ring.close()
    sock.close()


def test_push_client_gone_committed_rows_delivered_ring_unlinked(
    source: Any, run_dir: Path
) -> None:
    src = source()
    src.poll_batch(1)
    client = connect(run_dir).source("trades")
    name = client._ring.name
    client.push_arrow(rows(300))
    client._sock.close()  # as a killed process's socket: no end of stream
    table = drain(src, 300)
    assert table.num_rows == 300
    deadline = time.monotonic() + 5
    while src.metrics()["clients_died"] == 0 and time.monotonic() < deadline:
        src.poll_batch(10) or src.data_ready(0.01)
    assert src.metrics()["clients_died"] == 1 and src.metrics()["clients"] == 0
    assert name not in segment.list_segments()
    client._writer.close()
    client._ring.close()


def test_push_max_clients_refuses_one_more_with_reason(source: Any, run_dir: Path) -> None:
    src = source(max_clients=1)
    src.poll_batch(1)
    refused = pytest.raises(ConnectorError, match=r"already has 1 clients \(max_clients=1\)")
    with connect(run_dir).source("trades"), refused:
        connect(run_dir).source("trades")


def test_push_source_closed_next_push_raises_with_reason(source: Any, run_dir: Path) -> None:
    src = source()
    src.poll_batch(1)
    client = connect(run_dir).source("trades")
    src.close()
    assert not socket_path(run_dir, "trades", "source").exists()
    with pytest.raises(ConnectorError, match="the pipeline stopped: the push source closed"):
        client.push_arrow(rows(1))
    assert client.close() is False


def test_push_data_ready_true_on_data_false_on_timeout(source: Any, run_dir: Path) -> None:
    src = source()
    started = time.monotonic()
    assert src.data_ready(0.05) is False
    assert time.monotonic() - started >= 0.04
    with connect(run_dir).source("trades") as client:
        while src.poll_batch(10) is not None or src.data_ready(0.01):
            pass  # the SCHEMA frame
        client.push_arrow(rows(3))
        assert src.data_ready(1.0) is True
        assert drain(src, 3).num_rows == 3


def test_push_client_rings_the_doorbell_only_while_the_source_waits(
    source: Any, run_dir: Path
) -> None:
    """A waiting source sleeps on one pipe; a push rings it then, and costs nothing else."""
    src = source()
    src.poll_batch(1)  # listen
    events = src._endpoint.events

    def rung() -> bool:
        readable = select.select([events], [], [], 0)[0]
        if readable:
            src._endpoint.drain_events()
        return bool(readable)

    with connect(run_dir).source("trades") as client:
        while src.poll_batch(10) is not None or src.data_ready(0.01):
            pass  # the SCHEMA frame; the accept thread's events drained
        rung()
        (reader,) = [c.reader for c in src._clients.current]
        client.push_arrow(rows(2))  # the source is not waiting: no byte, no syscall
        assert not rung()
        assert drain(src, 2).num_rows == 2
        reader.announce_wait()  # as data_ready does before it sleeps
        client.push_arrow(rows(3))
        assert rung()
        reader.end_wait()
        assert drain(src, 3).num_rows == 3


def test_push_stale_socket_replaced_live_one_refused(source: Any, run_dir: Path) -> None:
    run_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(socket_path(run_dir, "trades", "source")))
    stale.close()  # as left by a killed engine
    first = source()
    first.poll_batch(1)
    second = source()
    with pytest.raises(ConnectorError, match="another process already listens"):
        second.poll_batch(1)


def test_push_long_directory_path_works(source: Any, tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    src = source(dir=str(deep), end_after_clients=1)
    src.poll_batch(1)
    with connect(deep).source("trades") as client:
        client.push_arrow(rows(5))
    assert drain(src, 5).num_rows == 5


def test_push_conformance_with_a_real_client(run_dir: Path) -> None:
    def push() -> None:
        with connect(run_dir).source("trades", wait=10) as client:
            for i in range(5):
                client.push_arrow(rows(400, 400 * i))

    pusher = threading.Thread(target=push)
    pusher.start()
    opts = {"dir": str(run_dir), "schema": SCHEMA, "end_after_clients": 1}
    check_source(PushSource, ConnectorConfig("trades", opts), max_records=500)
    pusher.join(10)


# -- subscribe sink --------------------------------------------------------------------
def test_subscribe_receives_batches_after_attach_then_eos(sink: Any, run_dir: Path) -> None:
    k = sink()
    k.write_batch(rows(5))  # before anyone subscribed: nobody sees it
    sub = connect(run_dir).subscribe("alerts", timeout=5)
    assert sub.schema == ARROW
    k.begin_epoch(1)
    k.write_batch(rows(3, 100))
    k.write_batch(rows(2, 200))
    k.close()
    got = pa.Table.from_batches(list(sub))
    assert got.column("price").to_pylist() == [100.0, 101.0, 102.0, 200.0, 201.0]
    assert sub.closed and sub.dropped_rows == 0
    assert not socket_path(run_dir, "alerts", "sink").exists()


def test_subscribe_drop_policy_counts_what_a_full_ring_lost(sink: Any, run_dir: Path) -> None:
    k = sink(policy="drop", ring_capacity=65536)
    sub = connect(run_dir).subscribe("alerts", timeout=5)
    for i in range(200):
        k.write_batch(rows(20, 20 * i))  # nobody reads: the ring fills
    m = k.metrics()
    assert m["dropped_batches"] > 0 and m["subscribers"] == 1
    k.close()
    received = 0
    with pytest.raises(PeerClosedError, match="ring was full"):
        for b in sub:
            received += b.num_rows
    assert sub.dropped_rows == m["dropped_rows"]
    assert received + sub.dropped_rows == 4000


def test_subscribe_block_policy_stuck_subscriber_detached(sink: Any, run_dir: Path) -> None:
    k = sink(policy="block", ring_capacity=65536, block_timeout_ms=50)
    sub = connect(run_dir).subscribe("alerts", timeout=5)
    started = time.monotonic()
    for i in range(200):
        k.write_batch(rows(20, 20 * i))
    assert time.monotonic() - started < 2  # blocked once, for ~50 ms, then went on
    assert k.metrics()["detached_stuck"] == 1 and k.metrics()["subscribers"] == 0
    with pytest.raises(PeerClosedError, match=r"stayed full for 50 ms \(policy block\)"):
        for _ in sub:
            pass


def test_subscribe_row_larger_than_ring_dropped_counted_stream_goes_on(
    sink: Any, run_dir: Path
) -> None:
    k = sink(ring_capacity=65536)
    sub = connect(run_dir).subscribe("alerts", timeout=5)
    huge = pa.record_batch({"symbol": ["x" * 100_000], "price": [1.0]}).append_column(
        "ts", pa.array([1], pa.timestamp("ms"))
    )
    k.write_batch(huge)
    k.write_batch(rows(2))
    assert k.metrics()["dropped_rows"] == 1 and k.metrics()["subscribers"] == 1
    k.close()
    assert [b.num_rows for b in sub] == [2]
    assert sub.dropped_rows == 1


def test_subscribe_closed_subscriber_detached_others_go_on(sink: Any, run_dir: Path) -> None:
    k = sink()
    gone = connect(run_dir).subscribe("alerts", timeout=5)
    stays = connect(run_dir).subscribe("alerts", timeout=5)
    gone.close()
    deadline = time.monotonic() + 5
    while k.metrics()["detached_dead"] == 0 and time.monotonic() < deadline:
        k.write_batch(rows(1))
    assert k.metrics()["subscribers"] == 1
    k.close()
    assert sum(b.num_rows for b in stays) >= 1


def test_subscribe_without_schema_learns_it_from_first_batch(sink: Any, run_dir: Path) -> None:
    k = sink(schema=None)
    with pytest.raises(ConnectorError, match="no running engine publishes sink 'alerts'"):
        connect(run_dir).subscribe("alerts")
    k.write_batch(rows(1))
    with connect(run_dir).subscribe("alerts", timeout=0.05) as sub:
        assert sub.schema == ARROW
        with pytest.raises(TimeoutError, match="no batch within 0.05 s"):
            next(sub)


def test_subscribe_bad_policy_config_error(sink: Any) -> None:
    with pytest.raises(ConfigError, match=r"sinks.alerts.policy='later' must be one of"):
        sink(policy="later")


def test_subscribe_conformance(run_dir: Path) -> None:
    config = ConnectorConfig("alerts", {"dir": str(run_dir)}, schema=ARROW)
    check_sink(SubscribeSink, config, [rows(10, i) for i in range(4)])


# -- client helpers --------------------------------------------------------------------
def test_split_to_fit_pieces_fit_and_rejoin_to_the_batch() -> None:
    batch = rows(10_000)
    pieces = split_to_fit(batch, 16384)
    assert len(pieces) > 1
    assert all(BatchEncoder.size_bound(p) <= 16384 for p in pieces)
    assert pa.Table.from_batches(pieces).equals(pa.Table.from_batches([batch]))


def test_connect_missing_engine_lists_what_the_dir_publishes(source: Any, run_dir: Path) -> None:
    source().poll_batch(1)
    with pytest.raises(ConnectorError) as err:
        connect(run_dir).source("quotes")
    assert "no running engine publishes source 'quotes'" in str(err.value)
    assert str(err.value).endswith("published there: ['trades']")
