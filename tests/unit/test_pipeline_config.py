"""Pipeline files: defaults, environment overrides, and errors naming file, key and reason."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from engine import pipeline
from engine.errors import ConfigError
from ring1.partition import partition_ids, split

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.toml"
Q8 = ROOT / "examples" / "nexmark" / "q8.toml"


def raw_quickstart() -> dict[str, Any]:
    return tomllib.loads(QUICKSTART.read_text())


def parse_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        pipeline.parse(raw, "p.toml")
    return str(info.value)


def test_pipeline_quickstart_loads_with_its_documented_values() -> None:
    p = pipeline.load(QUICKSTART, {})
    src = p.sources[0]
    assert (src.name, src.type, src.event_time, src.parallelism) == ("events", "generator", "ts", 1)
    assert src.options["events"] == 20_000_000 and src.options["keys"] == 10_000
    (step,) = p.query.steps
    assert isinstance(step, pipeline.WindowStep)
    assert (step.key, step.window.type, step.window.size_ms) == (["key"], "tumbling", 1000)
    assert step.aggregates == ["count", "sum(value)", "avg(value)"] and step.emit == "close"
    (sink,) = p.sinks
    assert (sink.name, sink.type, sink.input) == ("out", "files", "main")
    assert sink.options == {"path": "out/quickstart", "format": "parquet"}
    assert (p.pipeline.name, p.pipeline.delivery) == ("quickstart", "exactly-once")
    assert p.checkpointing and p.checkpoint.interval_ms == 1000


def test_pipeline_connector_options_split_from_runtime_keys() -> None:
    p = pipeline.load(QUICKSTART, {})
    src = p.sources[0]
    assert set(src.options) == {"events", "keys", "batch_rows", "seed", "events_per_second"}
    assert not set(src.options) & pipeline.SOURCE_RUNTIME_KEYS
    assert src.max_out_of_orderness_ms == 0 and src.batch_max_rows == 65_536  # runtime defaults
    assert not set(p.sinks[0].options) & pipeline.SINK_RUNTIME_KEYS
    raw = raw_quickstart()
    raw["sources"][0].update(parallelism=2, retry={"max_retries": 1}, health_failures=7, kind="x")
    src = pipeline.parse(raw).sources[0]
    assert (src.parallelism, src.retry.max_retries, src.retry.base_ms) == (2, 1, 50)
    assert src.health_failures == 7 and src.options["kind"] == "x"


def test_pipeline_explicit_options_table_is_taken_as_is_and_other_keys_are_unknown() -> None:
    raw = raw_quickstart()
    raw["sources"][0] = {"name": "events", "type": "generator", "options": {"events": 5}}
    assert pipeline.parse(raw).sources[0].options == {"events": 5}
    raw["sources"][0]["keys"] = 3
    assert parse_error(raw) == "p.toml: sources[0].keys: unknown key"


def test_pipeline_nexmark_q8_loads_two_sources_and_a_join() -> None:
    p = pipeline.load(Q8, {})
    assert [s.name for s in p.sources] == ["persons", "auctions"]
    assert [s.options["kind"] for s in p.sources] == ["person", "auction"]
    j = p.query.join
    assert j is not None and (j.type, j.left, j.right) == ("interval", "persons", "auctions")
    assert (j.left_key, j.right_key, j.lower_ms, j.upper_ms) == ("id", "seller", -10_000, 10_000)
    assert [type(s) for s in p.query.steps] == [pipeline.FilterStep, pipeline.ProjectStep]
    assert p.source_named("auctions") is p.sources[1]
    with pytest.raises(ConfigError, match=r"no source named 'bids' \(sources: \['persons'"):
        p.source_named("bids")


def test_pipeline_checkpoint_defaults_to_cwd_relative_dir_named_after_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    p = pipeline.load(QUICKSTART, {})
    assert p.checkpoint_dir == tmp_path / ".ringstream" / "checkpoints" / "quickstart"
    assert (p.checkpoint.keep, p.checkpoint.max_restarts) == (3, 3)
    p = pipeline.load(QUICKSTART, {"RINGSTREAM_CHECKPOINT__DIR": '"ck"'})
    assert p.checkpoint_dir == tmp_path / "ck" and p.checkpoint_dir.is_absolute()


def test_pipeline_env_overrides_numbers_strings_and_nested_keys() -> None:
    p = pipeline.load(
        QUICKSTART,
        {
            "RINGSTREAM_SOURCES__0__EVENTS": "1000",
            "RINGSTREAM_SINKS__0__PATH": "/tmp/elsewhere",
            "RINGSTREAM_QUERY__STEPS__0__WINDOW__SIZE_MS": "250",
            "RINGSTREAM_PIPELINE__NAME": '"renamed"',
            "RINGSTREAM_CHECKPOINT__INTERVAL_MS": "0",
            "UNRELATED": "x",
        },
    )
    step = p.query.steps[0]
    assert isinstance(step, pipeline.WindowStep)
    assert p.sources[0].options["events"] == 1000 and step.window.size_ms == 250
    assert p.sinks[0].options["path"] == "/tmp/elsewhere" and p.pipeline.name == "renamed"
    assert p.checkpoint.interval_ms == 0 and not p.checkpointing


def test_pipeline_env_fault_variables_are_not_config_keys() -> None:
    p = pipeline.load(QUICKSTART, {"RINGSTREAM_FAULT": "worker.after_snapshot@2"})
    assert p == pipeline.load(QUICKSTART, {})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RINGSTREAM_SOURCES__3__EVENTS": "1"}, "RINGSTREAM_SOURCES__3__EVENTS: sources.3 is not"),
        ({"RINGSTREAM_SOURCES__0__PARALLELISM": "many"}, "sources[0].parallelism: Expected `int`"),
        (
            {"RINGSTREAM_QUERY__STEPS__0__WINDOW__SIZE_MS": "-1"},
            "query.steps[0].window.size_ms: Expected `int` >= 0",
        ),
        ({"RINGSTREAM_CHECKPOINT__KEEP": "0"}, "checkpoint.keep: Expected `int` >= 1"),
        ({"RINGSTREAM_PIPELINE__DELIVERY": "maybe"}, "pipeline.delivery: Invalid enum value"),
        ({"RINGSTREAM_SOURCES____X": "1"}, "empty key part"),
    ],
)
def test_pipeline_bad_env_override_names_variable_or_key(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        pipeline.load(QUICKSTART, env)


def test_pipeline_env_connector_option_is_not_typed_here() -> None:
    # connector options are the connector's to check (at Plan.build), not the file format's
    p = pipeline.load(QUICKSTART, {"RINGSTREAM_SOURCES__0__EVENTS": "many"})
    assert p.sources[0].options["events"] == "many"


def test_pipeline_missing_file_and_bad_toml_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml: cannot read pipeline file"):
        pipeline.load(tmp_path / "nope.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text(QUICKSTART.read_text() + "\n[[")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        pipeline.load(bad, {})


def test_pipeline_two_sinks_with_distinct_names_load(tmp_path: Path) -> None:
    two = tmp_path / "two.toml"
    text = QUICKSTART.read_text()
    two.write_text(text + text[text.index("[[sinks]]") :].replace('"out"', '"out2"'))
    assert [s.name for s in pipeline.load(two, {}).sinks] == ["out", "out2"]


@pytest.mark.parametrize("key", ["sources", "sinks"])
def test_pipeline_duplicate_names_are_refused_naming_them(key: str) -> None:
    raw = raw_quickstart()
    raw[key].append(copy.deepcopy(raw[key][0]))
    name = raw[key][0]["name"]
    assert parse_error(raw) == f"p.toml: {key}: duplicate name(s) ['{name}']"


@pytest.mark.parametrize("key", ["sources", "sinks"])
def test_pipeline_empty_sources_or_sinks_refused(key: str) -> None:
    raw = raw_quickstart()
    raw[key] = []
    assert parse_error(raw) == f"p.toml: {key}: at least one is needed"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["query"]["steps"][0].update(op="sort"), "query.steps[0].op: Invalid value"),
        (lambda r: r["query"]["steps"][0].update(colour=1), "query.steps[0].colour: unknown key"),
        (lambda r: r["query"]["steps"][0].pop("op"), "query.steps[0]: Object missing required"),
        (
            lambda r: r["query"]["steps"].append({"op": "filter"}),
            "query.steps[1]: Object missing required field `where`",
        ),
        (
            lambda r: r["query"]["steps"][0]["window"].update(type="sliding"),
            "query.steps[0].window.type: Invalid enum value 'sliding'",
        ),
        (
            lambda r: r["query"]["steps"][0].update(emit="sometimes"),
            "query.steps[0].emit: Invalid enum value 'sometimes'",
        ),
        (
            lambda r: r["query"].update(final=[{"op": "window", "aggregates": []}]),
            "query.final[0]: Object missing required field `window`",
        ),
        (lambda r: r["query"].update(colour=1), "query.colour: unknown key"),
        (
            lambda r: r["query"].update(join={"type": "hash"}),
            "query.join.type: Invalid enum value 'hash'",
        ),
        (lambda r: r["checkpoint"].update(every=1), "checkpoint.every: unknown key"),
        (lambda r: r["sources"][0].update(retry={"x": 1}), "sources[0].retry.x: unknown key"),
        (lambda r: r["sources"][0].update(name="a b"), "sources[0].name: Expected `str` matching"),
        (lambda r: r.update(sinkz=[]), "sinkz: unknown key"),
    ],
)
def test_pipeline_step_and_table_errors_name_the_key_path(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    raw = raw_quickstart()
    edit(raw)
    text = parse_error(raw)
    assert text.startswith("p.toml: ") and message in text


def test_pipeline_hash_covers_query_not_checkpoint_tuning() -> None:
    base = pipeline.load(QUICKSTART, {})
    tuned = pipeline.load(QUICKSTART, {"RINGSTREAM_CHECKPOINT__INTERVAL_MS": "50"})
    other = pipeline.load(QUICKSTART, {"RINGSTREAM_QUERY__STEPS__0__WINDOW__SIZE_MS": "500"})
    assert base.hash() == tuned.hash() != other.hash()


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


def test_pipeline_file_not_utf8_is_a_clean_error_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[pipeline]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: line 2: not UTF-8 \(byte 0xe9"):
        pipeline.load(bad, {})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda r: r["sources"].__setitem__(
                0, {"name": "e", "type": "generator", "options": {}, "event_tme": "ts"}
            ),
            "sources[0].event_tme: unknown key (did you mean `event_time`?)",
        ),
        (
            lambda r: r["checkpoint"].update(intervall_ms=5),
            "checkpoint.intervall_ms: unknown key (did you mean `interval_ms`?)",
        ),
        (
            lambda r: r["pipeline"].update(delivery="once"),
            "pipeline.delivery: Invalid enum value 'once' (valid: 'at-least-once', 'exactly-once')",
        ),
        (
            lambda r: r["query"]["steps"][0].update(op="sort"),
            "query.steps[0].op: Invalid value 'sort' (valid: 'filter', 'project', 'udf', "
            "'window', 'group_by', 'over')",
        ),
    ],
)
def test_pipeline_errors_say_what_would_be_right(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    raw = raw_quickstart()
    edit(raw)
    assert message in parse_error(raw)
