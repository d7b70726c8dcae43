"""The files source never skips input silently: every bad record is named or dead-lettered.

Each case was seen losing rows without a word (exit 0, "done"): a value that does
not fit its column, a later file whose types or columns differ, garbage, a field
over a block, bytes that are not UTF-8, a poll retried after a failure.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from connectors.base import ConnectorConfig, SourceCheckpoint
from connectors.files.source import FilesSource
from connectors.testing import check_source
from engine.errors import BadRecordError, ConfigError


def open_source(path: Path, on_error: str = "fail", **options: object) -> FilesSource:
    src = FilesSource()
    src.open(ConnectorConfig("files", {"path": str(path), **options}, on_error=on_error))
    return src


def drain(src: FilesSource, max_records: int = 10_000) -> tuple[pa.Table, list]:
    batches, bad = [], []
    while (b := src.poll_batch(max_records)) is not None:
        batches.append(b.batch)
        bad.extend(b.bad)
    return pa.Table.from_batches(batches, schema=src.schema()), bad


def csv_rows(path: Path, n: int, start: int = 0, bad_at: dict[int, str] | None = None) -> Path:
    lines = ["id,name,amount"]
    for i in range(start, start + n):
        amount = (bad_at or {}).get(i, str(i * 10))
        lines.append(f"{i},n{i},{amount}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_value_fails_naming_file_line_column_and_value(tmp_path: Path) -> None:
    csv_rows(tmp_path / "a.csv", 300_000, bad_at={150_001: "abc"})
    src = open_source(tmp_path, schema={"id": "int64", "name": "string", "amount": "int64"})
    rows = 0
    with pytest.raises(BadRecordError) as info:
        while (b := src.poll_batch(65_536)) is not None:
            rows += b.batch.num_rows
    text = str(info.value)
    assert "a.csv line 150003 column 'amount': value 'abc'" in text, text
    assert "not a valid int64" in text
    assert rows == 150_001  # every good row before it came out, none after
    assert src.checkpoint().position["row"] == 150_001  # the position did not move past it


def test_bad_value_dead_lettered_and_every_other_row_kept(tmp_path: Path) -> None:
    csv_rows(tmp_path / "a.csv", 300_000, bad_at={150_001: "abc", 7: "1e", 299_999: ""})
    src = open_source(
        tmp_path, "dead_letter", schema={"id": "int64", "name": "string", "amount": "int64"}
    )
    good, bad = drain(src, 65_536)
    assert good.num_rows + len(bad) == 300_000
    assert [(b.line, b.column, b.value) for b in bad] == [(9, "amount", "1e"),
                                                          (150_003, "amount", "abc")]
    assert bad[1].raw == b"150001,n150001,abc\n"
    assert 150_001 not in good.column("id").to_pylist() and good.column("id")[-1].as_py() == 299_999
    assert good.column("amount")[-1].as_py() is None  # an empty field is null, not bad


def test_later_file_with_a_value_the_first_did_not_have_is_named(tmp_path: Path) -> None:
    csv_rows(tmp_path / "a.csv", 100)
    csv_rows(tmp_path / "b.csv", 100, start=100, bad_at={150: "100.5"})  # a inferred int64
    src = open_source(tmp_path)
    with pytest.raises(BadRecordError, match=r"b\.csv line 52 column 'amount': value '100\.5'"):
        drain(src)
    good, bad = drain(open_source(tmp_path, "dead_letter"))
    assert good.num_rows == 199 and [b.value for b in bad] == ["100.5"]


def test_reordered_columns_are_read_by_name_extra_ones_are_refused(tmp_path: Path) -> None:
    csv_rows(tmp_path / "a.csv", 10)
    (tmp_path / "b.csv").write_text("amount,id,name\n5,10,x\n")
    (tmp_path / "c.csv").write_text("id,name,amount,extra\n11,y,6,z\n")
    src = open_source(tmp_path)
    with pytest.raises(BadRecordError, match=r"c\.csv line 2: the file's columns \(id, name"):
        drain(src)
    good, bad = drain(open_source(tmp_path, "dead_letter"))
    assert good.column("id").to_pylist() == [*range(10), 10]
    assert good.column("amount").to_pylist()[-1] == 5
    assert len(bad) == 1 and bad[0].raw == b"11,y,6,z\n"


def test_garbage_file_every_line_is_a_bad_record(tmp_path: Path) -> None:
    csv_rows(tmp_path / "a.csv", 10)
    (tmp_path / "b.csv").write_bytes(b"\x00\x9f\xff garbage\nmore,garbage\n\x01\x02\n")
    with pytest.raises(BadRecordError, match=r"b\.csv line"):
        drain(open_source(tmp_path))
    good, bad = drain(open_source(tmp_path, "dead_letter"))
    assert good.num_rows == 10 and len(bad) == 2  # the first line is the (garbage) header


def test_field_over_a_block_is_read_whole_with_the_next_row(tmp_path: Path) -> None:
    big = "x" * (3 << 20)
    (tmp_path / "a.csv").write_text(f"id,name,amount\n1,a,1\n2,{big},2\n3,c,3\n")
    good, bad = drain(open_source(tmp_path))
    assert bad == [] and good.column("id").to_pylist() == [1, 2, 3]
    assert good.column("name")[1].as_py() == big


def test_non_utf8_bytes_in_a_string_column_are_bad_not_binary(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"id,name\n1,ok\n2,caf\xe9\n3,fine\n")
    src = open_source(tmp_path)
    assert src.schema().field("name").type == pa.string()  # inferred as text, not binary
    with pytest.raises(BadRecordError, match=r"a\.csv line 3 column 'name': value 'caf\\\\xe9'"):
        drain(src)
    good, bad = drain(open_source(tmp_path, "dead_letter"))
    assert good.column("name").to_pylist() == ["ok", "fine"] and bad[0].line == 3


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('{"id": 1}\n{"id": "x"}\n', r"line 2 column 'id': value '\"x\"'"),
        ('{"id": 1}\n{"id": 2, "zz": 3}\n', r"line 2 column 'zz'.*unexpected field"),
        ('{"id": 1}\n[1, 2]\n', "line 2: not a JSON object"),
        ('{"id": 1}\n{"id": \n', "line 2: not valid JSON"),
    ],
)
def test_jsonl_bad_lines_are_named(tmp_path: Path, lines: str, message: str) -> None:
    (tmp_path / "a.jsonl").write_text(lines)
    with pytest.raises(BadRecordError, match=message):
        drain(open_source(tmp_path, schema={"id": "int64"}))
    good, bad = drain(open_source(tmp_path, "dead_letter", schema={"id": "int64"}))
    assert good.column("id").to_pylist() == [1] and len(bad) == 1


def test_empty_first_file_is_skipped_for_inference(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("")
    csv_rows(tmp_path / "b.csv", 3)
    src = open_source(tmp_path)
    assert src.schema().names == ["id", "name", "amount"]
    assert drain(src)[0].num_rows == 3


def test_malformed_first_file_is_a_clear_error_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,a\n2,b,c,d\n")
    with pytest.raises(ConfigError, match=r"cannot infer a schema from .*a\.csv line 3"):
        open_source(tmp_path)
    (tmp_path / "a.csv").write_text("")
    with pytest.raises(ConfigError, match="every file that matches it is empty"):
        open_source(tmp_path)


def test_poll_that_raises_never_moves_the_position_files_conformance(tmp_path: Path) -> None:
    for k in range(3):
        csv_rows(tmp_path / f"part-{k}.csv", 250, start=k * 250)
    good = (tmp_path / "part-2.csv").read_bytes()

    def damage() -> None:  # row 101 of the third file stops parsing
        csv_rows(tmp_path / "part-2.csv", 250, start=500, bad_at={600: "oops"})

    def repair() -> None:
        (tmp_path / "part-2.csv").write_bytes(good)

    config = ConnectorConfig("files", {"path": str(tmp_path), "batch_rows": 64})
    check_source(FilesSource, config, max_records=50, fault=(damage, repair), fault_after_rows=300)


def test_transient_read_error_is_retried_from_the_same_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_rows(tmp_path / "a.csv", 1000)
    src = open_source(tmp_path, batch_rows=100)
    first = src.poll_batch(100)
    assert first is not None and first.batch.num_rows == 100
    src._drop_reader()  # the next poll opens the file again, at row 100
    real = FilesSource._open

    def flaky(self, name, skip):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(FilesSource, "_open", real)
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(FilesSource, "_open", flaky)
    with pytest.raises(OSError):
        src.poll_batch(100)
    assert src.checkpoint().position["row"] == 100
    rest, _ = drain(src, 100)
    assert rest.column("id").to_pylist() == list(range(100, 1000))


def test_dead_letter_position_counts_bad_records_and_restores_exactly(tmp_path: Path) -> None:
    csv_rows(tmp_path / "a.csv", 1000, bad_at={10: "x", 500: "y"})
    src = open_source(tmp_path, "dead_letter", batch_rows=64)
    seen, cps, bad = [], [], []
    while (b := src.poll_batch(64)) is not None:
        seen.append(b.batch)
        bad.extend(b.bad)
        cps.append(src.checkpoint())
    total = sum(b.num_rows for b in seen) + len(bad)
    assert total == 1000 and cps[-1].position == {"file": "a.csv", "row": 1000, "done": []}
    assert src.checkpoint().position == {"file": None, "row": 0, "done": ["a.csv"]}
    mid = cps[len(cps) // 2]
    again = open_source(tmp_path, "dead_letter", batch_rows=64)
    again.restore(SourceCheckpoint(mid.position))
    rest, rest_bad = drain(again, 64)
    ids = pa.concat_tables([pa.Table.from_batches(seen)]).column("id").to_pylist()
    done_rows = mid.position["row"]
    assert rest.num_rows + len(rest_bad) == 1000 - done_rows
    assert rest.column("id").to_pylist() == [i for i in ids if i >= done_rows]


def test_parquet_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    pacsv.write_csv(pa.table({"a": [1]}), tmp_path / "x.csv")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 not really")
    src = open_source(tmp_path, format="parquet", schema={"a": "int64"})
    with pytest.raises(BadRecordError, match="b.parquet: cannot read it as Parquet"):
        drain(src)
