"""Console sink: aligned tables, truncated per batch, every row counted."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.base import ConnectorConfig, SinkCapabilities
from connectors.console import ConsoleSink
from connectors.testing import check_sink
from engine.errors import ConfigError


def sink(**options: object) -> ConsoleSink:
    s = ConsoleSink()
    s.open(ConnectorConfig("out", dict(options)))
    return s


def test_console_prints_aligned_table_numbers_right_text_left(
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = sink()
    s.begin_epoch(3)
    s.write_batch(pa.record_batch({"key": [7, 1234], "name": ["a", None], "avg": [0.5, 12.25]}))
    assert capsys.readouterr().out.splitlines() == [
        "[out] epoch 3: 2 rows",
        " key  name    avg",
        "----  ----  -----",
        "   7  a       0.5",
        "1234  null  12.25",
    ]


def test_console_truncates_to_max_rows_but_counts_every_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = sink(max_rows=2)
    s.write_batch(pa.record_batch({"x": list(range(10))}))
    s.write_batch(pa.record_batch({"x": [1]}))
    lines = capsys.readouterr().out.splitlines()
    assert lines[:6] == ["[out]: 10 rows", "x", "-", "0", "1", "... 8 more rows"]
    assert lines[6] == "[out]: 1 row"
    assert s.metrics()["records"] == 11 and s.metrics()["batches"] == 2


def test_console_empty_batch_prints_only_the_heading(capsys: pytest.CaptureFixture[str]) -> None:
    sink().write_batch(pa.record_batch({"x": pa.array([], pa.int64())}))
    assert capsys.readouterr().out == "[out]: 0 rows\n"


def test_console_stream_stderr_writes_there(capsys: pytest.CaptureFixture[str]) -> None:
    sink(stream="stderr").write_batch(pa.record_batch({"x": [1]}))
    captured = capsys.readouterr()
    assert captured.out == "" and "[out]: 1 row" in captured.err


def test_console_capabilities_are_the_default() -> None:
    assert sink().capabilities() == SinkCapabilities()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_row": 3}, "unknown option 'max_row'"),
        ({"max_rows": -1}, "max_rows=-1"),
        ({"stream": "stdlog"}, "stream='stdlog'"),
    ],
)
def test_console_bad_options_rejected_naming_them(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sink(**options)


def test_console_passes_sink_conformance(capsys: pytest.CaptureFixture[str]) -> None:
    batches = [pa.record_batch({"x": [1, 2]}), pa.record_batch({"x": [3]})]
    check_sink(ConsoleSink, ConnectorConfig("out", {"max_rows": 5}), batches)
    assert "[out] epoch 3: 1 row" in capsys.readouterr().out
