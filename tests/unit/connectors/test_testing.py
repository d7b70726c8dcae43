"""Testing helpers: scripted source markers, collecting sink epochs, conformance checks."""

from __future__ import annotations

import json
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.base import (
    ConnectorConfig,
    Sink,
    Source,
    SourceBatch,
    SourceCheckpoint,
    WriteResult,
)
from connectors.testing import (
    CollectingSink,
    ConformanceError,
    ScriptedSource,
    check_sink,
    check_source,
    read_committed,
)
from engine.errors import ConfigError, ConnectorError, RetriesExhaustedError
from ring1.retry import RetryPolicy, call_with_retry


def scripted(script: list[Any], name: str = "s", **options: Any) -> ScriptedSource:
    src = ScriptedSource()
    src.open(ConnectorConfig(name, {"script": script, **options}))
    return src


def xs(src: Source, max_records: int = 100) -> list[int]:
    out: list[int] = []
    while (b := src.poll_batch(max_records)) is not None:
        out += b.batch.column("x").to_pylist()
    return out


# -- ScriptedSource -----------------------------------------------------------------------


def test_scripted_rows_and_record_batches_play_in_order_then_finish() -> None:
    src = scripted([[{"x": 1}, {"x": 2}], pa.record_batch({"x": [3]}), []])
    assert src.schema() == pa.schema([("x", pa.int64())])
    assert xs(src) == [1, 2, 3] and src.finished()


def test_scripted_end_marker_finishes_and_ignores_the_rest() -> None:
    src = scripted([[{"x": 1}], {"marker": "end"}, [{"x": 2}]])
    assert xs(src) == [1] and src.finished()
    assert src.poll_batch(10) is None


def test_scripted_batches_cut_to_max_records() -> None:
    src = scripted([[{"x": i} for i in range(5)]])
    assert [b.batch.num_rows for b in iter(lambda: src.poll_batch(2), None)] == [2, 2, 1]


def test_scripted_crash_fires_once_per_process_then_continues() -> None:
    script = [[{"x": 1}], {"marker": "crash", "message": "boom"}, [{"x": 2}]]
    src = scripted(script, name="crash-once")
    assert src.poll_batch(10) is not None
    with pytest.raises(ConnectorError, match=r"crash at script\[1\]: boom"):
        src.poll_batch(10)
    assert xs(src) == [2]
    again = scripted(script, name="crash-once")  # same process: already fired
    assert xs(again) == [1, 2]


def test_scripted_crash_always_fires_every_time() -> None:
    src = scripted([{"marker": "crash", "always": True}, [{"x": 1}]])
    for _ in range(3):
        with pytest.raises(ConnectorError, match="crash marker"):
            src.poll_batch(10)


def test_scripted_crash_with_flag_fires_once_across_processes(tmp_path: Path) -> None:
    flag = tmp_path / "crashed"
    script = [{"marker": "crash", "flag": str(flag)}, [{"x": 1}]]
    with pytest.raises(ConnectorError):
        scripted(script, name="a").poll_batch(10)
    assert flag.exists()
    assert xs(scripted(script, name="b")) == [1]  # another name (or process): the flag holds


def test_scripted_stall_returns_none_for_its_duration() -> None:
    src = scripted([[{"x": 1}], {"marker": "stall", "seconds": 0.2}, [{"x": 2}]])
    assert src.poll_batch(10) is not None
    started = time.monotonic()
    assert src.poll_batch(10) is None and not src.finished()
    assert src.data_ready(0.01) is False
    assert src.data_ready(5.0) is True
    got = src.poll_batch(10)
    assert got is not None and got.batch.column("x").to_pylist() == [2]
    assert time.monotonic() - started >= 0.2


def test_scripted_fail_raises_k_times_then_continues_under_retry() -> None:
    src = scripted([{"marker": "fail", "times": 2}, [{"x": 7}]])
    retries: list[int] = []
    got = call_with_retry(
        lambda: src.poll_batch(10),
        RetryPolicy(max_retries=3),
        what="poll",
        sleep=lambda s: None,
        on_retry=lambda n, e, d: retries.append(n),
    )
    assert got is not None and got.batch.column("x").to_pylist() == [7] and retries == [1, 2]


def test_scripted_fail_more_times_than_retries_exhausts() -> None:
    src = scripted([{"marker": "fail", "times": 5}, [{"x": 7}]])
    with pytest.raises(RetriesExhaustedError, match="transient failure 3 of 5"):
        call_with_retry(
            lambda: src.poll_batch(10), RetryPolicy(max_retries=2), what="poll", sleep=lambda s: 0
        )


def test_scripted_restore_replays_after_the_checkpoint() -> None:
    script = [[{"x": 1}, {"x": 2}, {"x": 3}], [{"x": 4}]]
    src = scripted(script)
    src.poll_batch(2)
    cp = src.checkpoint()
    assert cp.position == {"index": 0, "row": 2}
    fresh = scripted(script)
    fresh.restore(cp)
    assert xs(fresh) == [3, 4]


def test_scripted_script_from_a_toml_pipeline() -> None:
    doc = tomllib.loads(
        """
        [[sources]]
        name = "s"
        type = "scripted"
        schema = { x = "int32" }
        script = [
          [{x = 1}, {x = 2}],
          {marker = "crash", message = "from toml"},
          [{x = 3}],
          {marker = "end"},
        ]
        """
    )
    table = doc["sources"][0]
    src = scripted(table["script"], name="toml", schema=table["schema"])
    assert src.schema() == pa.schema([("x", pa.int32())])
    assert src.poll_batch(10) is not None
    with pytest.raises(ConnectorError, match="from toml"):
        src.poll_batch(10)
    assert xs(src) == [3] and src.finished()


def test_scripted_instances_share_batches_round_robin() -> None:
    script = [[{"x": i}] for i in range(5)]
    parts = []
    for j in range(2):
        src = ScriptedSource()
        src.open(ConnectorConfig("s", {"script": script}, instance=j, instances=2))
        parts.append(xs(src))
    assert parts == [[0, 2, 4], [1, 3]]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ([{"marker": "explode"}, [{"x": 1}]], r"script\[0\].*not a marker"),
        ([[{"x": 1}], [{"y": "a"}]], r"script\[1\] has columns \['y'\]"),
        ([[{"x": 1}], pa.record_batch({"x": ["a"]})], r"script\[1\] has schema"),
        ([{"marker": "end"}], "no batch and no schema"),
        ([3], r"script\[0\] must be a list of rows"),
    ],
)
def test_scripted_bad_scripts_rejected(script: list[Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        scripted(script)


def test_scripted_passes_source_conformance() -> None:
    script = [
        [{"x": i} for i in range(7)],
        {"marker": "stall", "seconds": 0.05},
        pa.record_batch({"x": list(range(7, 20))}),
        {"marker": "fail", "times": 0},
        [{"x": 20}],
    ]
    check_source(ScriptedSource, ConnectorConfig("s", {"script": script}), max_records=3)


# -- CollectingSink -----------------------------------------------------------------------


def batch(*values: int) -> pa.RecordBatch:
    return pa.record_batch({"x": pa.array(values, pa.int64())})


def collect(path: Path | None = None) -> CollectingSink:
    sink = CollectingSink()
    sink.open(ConnectorConfig("c", {} if path is None else {"path": str(path)}))
    return sink


def test_collect_in_memory_commits_epochs_and_drops_rolled_back_ones() -> None:
    sink = collect()
    sink.begin_epoch(1)
    sink.write_batch(batch(1, 2))
    assert sink.pre_commit(1) == {"rows": 2}
    sink.commit_epoch(1)
    sink.begin_epoch(2)
    sink.write_batch(batch(3))
    sink.pre_commit(2)
    sink.rollback_epoch(2)
    sink.commit_epoch(2)  # nothing staged any more: nothing to commit
    assert sink.table().column("x").to_pylist() == [1, 2]
    assert len(sink.written) == 2 and not sink.capabilities().exactly_once


def test_collect_file_rows_visible_only_after_commit(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = collect(path)
    assert sink.capabilities().exactly_once
    sink.begin_epoch(1)
    sink.write_batch(batch(1, 2))
    committable = sink.pre_commit(1)
    assert read_committed(path) == {}
    sink.commit_epoch(1, committable)
    sink.commit_epoch(1, committable)  # idempotent
    assert read_committed(path) == {1: [{"x": 1}, {"x": 2}]}
    assert path.read_text().count("\n") == 1


def test_collect_file_commit_in_a_later_process_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    first = collect(path)
    first.begin_epoch(4)
    first.write_batch(batch(9))
    committable = json.loads(json.dumps(first.pre_commit(4)))
    second = collect(path)  # the restart: re-drive commit(N), roll back N + 1
    second.commit_epoch(4, committable)
    second.rollback_epoch(5)
    third = collect(path)
    third.commit_epoch(4, committable)  # re-driven again after another restart: no duplicate
    assert read_committed(path) == {4: [{"x": 9}]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_collect_file_rollback_discards_this_and_later_staged_epochs(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = collect(path)
    for e in (1, 2, 3):
        sink.begin_epoch(e)
        sink.write_batch(batch(e))
        sink.pre_commit(e)
    sink.commit_epoch(1)
    sink.rollback_epoch(2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    with pytest.raises(ConnectorError, match="epoch 3 was never staged"):
        sink.commit_epoch(3)
    assert read_committed(path) == {1: [{"x": 1}]}


def test_collect_file_torn_last_line_ignored_and_cut_on_open(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"epoch": 1, "rows": [{"x": 1}]}\n{"epoch": 2, "rows": [{"x"')
    assert read_committed(path) == {1: [{"x": 1}]}
    sink = collect(path)
    sink.begin_epoch(2)
    sink.write_batch(batch(2))
    sink.commit_epoch(2, sink.pre_commit(2))
    assert read_committed(path) == {1: [{"x": 1}], 2: [{"x": 2}]}


def test_collect_unknown_option_rejected() -> None:
    sink = CollectingSink()
    with pytest.raises(ConfigError, match="unknown option 'pth'"):
        sink.open(ConnectorConfig("c", {"pth": "x"}))


def test_collect_passes_sink_conformance_in_memory() -> None:
    batches = [batch(1, 2), batch(3), batch(4, 5, 6)]
    check_sink(CollectingSink, ConnectorConfig("c"), batches, read_back=table_of)


def table_of(sink: Sink) -> pa.Table:
    assert isinstance(sink, CollectingSink)
    return sink.table()


def test_collect_passes_sink_conformance_with_a_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    batches = [batch(1, 2), batch(3), batch(4, 5, 6)]

    def committed(_: Sink) -> list[dict[str, Any]]:
        return [row for rows in read_committed(path).values() for row in rows]

    check_sink(
        CollectingSink, ConnectorConfig("c", {"path": str(path)}), batches, read_back=committed
    )


# -- conformance checks catch broken connectors -------------------------------------------


class CountingSource(Source):
    """Rows 0..n-1 of column x; subclasses break one rule each."""

    N = 50

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        self.next = 0

    def schema(self) -> pa.Schema:
        return pa.schema([("x", pa.int64())])

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        n = min(max_records, self.N - self.next)
        if n <= 0:
            return None
        out = pa.record_batch({"x": pa.array(range(self.next, self.next + n), pa.int64())})
        self.next += n
        return SourceBatch(out)

    def finished(self) -> bool:
        return self.next >= self.N

    def checkpoint(self) -> SourceCheckpoint:
        return SourceCheckpoint({"next": self.next})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        self.next = checkpoint.position["next"]

    def supports_replay(self) -> bool:
        return True


class OffByOneRestore(CountingSource):
    def restore(self, checkpoint: SourceCheckpoint) -> None:
        self.next = checkpoint.position["next"] + 1


class TooManyRows(CountingSource):
    def poll_batch(self, max_records: int) -> SourceBatch | None:
        return super().poll_batch(max_records + 1)


class WrongBatchSchema(CountingSource):
    def poll_batch(self, max_records: int) -> SourceBatch | None:
        got = super().poll_batch(max_records)
        return got and SourceBatch(got.batch.cast(pa.schema([("x", pa.int32())])))


class NotJsonCheckpoint(CountingSource):
    def checkpoint(self) -> SourceCheckpoint:
        return SourceCheckpoint({"next": self.next, "at": object()})


class RowsAfterFinished(CountingSource):
    def finished(self) -> bool:
        return self.next >= self.N - 10


def test_conformance_good_source_passes() -> None:
    check_source(CountingSource, ConnectorConfig("ok"), max_records=7)


@pytest.mark.parametrize(
    ("cls", "rule"),
    [
        (OffByOneRestore, "restore gives exactly the rows after the checkpoint"),
        (TooManyRows, "at most max_records rows"),
        (WrongBatchSchema, "every batch has schema()"),
        (NotJsonCheckpoint, "checkpoint position is JSON"),
        (RowsAfterFinished, "finished() is final"),
    ],
)
def test_conformance_broken_source_fails_naming_the_rule(cls: type[Source], rule: str) -> None:
    with pytest.raises(
        ConformanceError,
        match=f"{cls.__name__} 'bad': .*{re.escape(rule)}",
    ):
        check_source(cls, ConnectorConfig("bad"), max_records=7)


class DuplicatingSink(CollectingSink):
    def commit_epoch(self, epoch: int, committable: dict[str, Any] | None = None) -> None:
        staged = self._staged.get(epoch)
        super().commit_epoch(epoch, committable)
        if staged is None and epoch in self.committed:
            self.committed[epoch] = self.committed[epoch] * 2  # a second commit duplicates


class NoWriteResult(CollectingSink):
    def write_batch(self, batch: pa.RecordBatch) -> WriteResult:
        super().write_batch(batch)
        return None  # type: ignore[return-value]


def test_conformance_sink_that_duplicates_on_recommit_fails() -> None:
    with pytest.raises(ConformanceError, match="exactly the committed epochs are visible"):
        check_sink(
            DuplicatingSink, ConnectorConfig("dup"), [batch(1), batch(2)], read_back=table_of
        )


def test_conformance_sink_without_write_result_fails() -> None:
    with pytest.raises(ConformanceError, match=r"NoWriteResult 'w': write_batch returns"):
        check_sink(NoWriteResult, ConnectorConfig("w"), [batch(1)])


def test_conformance_error_is_a_connector_error() -> None:
    assert issubclass(ConformanceError, ConnectorError)
