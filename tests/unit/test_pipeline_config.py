"""Pipeline files: defaults, environment overrides, and errors naming file, key and reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine import pipeline
from engine.errors import ConfigError
from ring1.partition import partition_ids, split

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.toml"


def test_pipeline_quickstart_loads_with_its_documented_values() -> None:
    p = pipeline.load(QUICKSTART, {})
    assert (p.source.events, p.source.keys, p.query.window.size_ms) == (20_000_000, 10_000, 1000)
    assert [a.name for a in p.query.parsed_aggregates()] == ["count", "sum_value", "avg_value"]
    assert p.sink.path == "out/quickstart.parquet"


def test_pipeline_env_overrides_numbers_strings_and_nested_keys() -> None:
    p = pipeline.load(
        QUICKSTART,
        {
            "RINGSTREAM_SOURCES__0__EVENTS": "1000",
            "RINGSTREAM_SINKS__0__PATH": "/tmp/elsewhere.parquet",
            "RINGSTREAM_QUERY__WINDOW__SIZE_MS": "250",
            "RINGSTREAM_PIPELINE__NAME": '"renamed"',
            "UNRELATED": "x",
        },
    )
    assert p.source.events == 1000 and p.query.window.size_ms == 250
    assert p.sink.path == "/tmp/elsewhere.parquet" and p.pipeline.name == "renamed"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RINGSTREAM_SOURCES__3__EVENTS": "1"}, "RINGSTREAM_SOURCES__3__EVENTS: sources.3 is not"),
        ({"RINGSTREAM_SOURCES__0__EVENTS": "many"}, "sources[0].events: Expected `int`"),
        ({"RINGSTREAM_QUERY__WINDOW__SIZE_MS": "0"}, "query.window.size_ms: Expected `int` >= 1"),
        ({"RINGSTREAM_SOURCES____X": "1"}, "empty key part"),
    ],
)
def test_pipeline_bad_env_override_names_variable_or_key(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pipeline.load(QUICKSTART, env)


def test_pipeline_missing_file_and_two_sinks_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read pipeline file"):
        pipeline.load(tmp_path / "nope.toml", {})
    two = tmp_path / "two.toml"
    text = QUICKSTART.read_text()
    two.write_text(text + text[text.index("[[sinks]]") :].replace('"out"', '"out2"'))
    with pytest.raises(ConfigError, match="sinks: this version runs exactly one sink, got 2"):
        pipeline.load(two, {})


def test_partition_same_key_same_worker_and_every_row_kept() -> None:
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 1000, 50_000)
    batch = pa.record_batch({"key": keys, "row": np.arange(len(keys))})
    parts = split(batch, "key", 3)
    assert sum(p.num_rows for p in parts) == len(keys)
    owner = {}
    for i, part in enumerate(parts):
        for k in set(part.column("key").to_pylist()):
            assert owner.setdefault(k, i) == i
        rows = part.column("row").to_numpy()
        assert (np.diff(rows) > 0).all()  # order within a part is preserved
    counts = np.bincount(partition_ids(np.arange(10_000), 4), minlength=4)
    assert counts.min() > 2000  # consecutive keys spread evenly
