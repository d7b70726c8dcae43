"""Plan.build: every step checked against the schemas flowing into it, at validate time.

Each error names the key path of the offending step (``query.steps[0] (filter)``,
``query.join``, ``sinks.out.input``, ``pipeline.delivery``) and the offending value.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.base import Sink, Source, SourceBatch
from engine import pipeline
from engine.errors import (
    ConfigError,
    ConnectorNotFoundError,
    DeliveryGuaranteeError,
    TransientError,
)
from engine.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TS = pa.timestamp("ms")

WINDOW = {
    "op": "window",
    "key": "key",
    "window": {"type": "tumbling", "size_ms": 1000},
    "aggregates": ["count", "sum(value)"],
}
BASE: dict[str, Any] = {
    "pipeline": {"name": "t"},
    "checkpoint": {"dir": "/nonexistent/ringstream-test-checkpoints"},
    "sources": [
        {"name": "events", "type": "generator", "event_time": "ts", "events": 1000, "keys": 10}
    ],
    "query": {"steps": [WINDOW]},
    "sinks": [{"name": "out", "type": "files", "path": "/nonexistent/ringstream-test-out"}],
}


class OneShotSource(Source):
    """A source that cannot replay (as a push or socket source): rows once, then never again."""

    SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("value", pa.float64())])

    def schema(self) -> pa.Schema:
        return self.SCHEMA

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        return None


ONE_SHOT = f"{__name__}:OneShotSource"


class AwaySink(Sink):
    """A sink whose server is away (restarting): ``check_config`` cannot reach it."""

    checks = 0

    def check_config(self, config: Any) -> None:
        AwaySink.checks += 1
        raise TransientError(f"sinks.{config.name}: cannot connect: the server is starting up")


def raw_with(edit: Callable[[dict[str, Any]], object] | None = None) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    if edit is not None:
        edit(raw)
    return raw


def build(raw: dict[str, Any], workers: int = 1) -> Plan:
    return Plan.build(pipeline.parse(raw, "p.toml"), workers)


def build_error(raw: dict[str, Any], workers: int = 1, cls: type = ConfigError) -> str:
    with pytest.raises(cls) as info:
        build(raw, workers)
    return str(info.value)


def steps(*before: dict[str, Any], after: tuple[dict[str, Any], ...] = ()) -> Any:
    """An edit that puts ``before`` ahead of the window step and ``after`` behind it."""
    return lambda r: r["query"].update(steps=[*before, WINDOW, *after])


def two_nexmark_sources(r: dict[str, Any]) -> None:
    common = {"type": "nexmark", "event_time": "date_time", "events": 1000}
    r["sources"] = [
        {"name": "persons", "kind": "person", **common},
        {"name": "auctions", "kind": "auction", **common},
    ]
    r["query"] = {
        "join": {
            "type": "interval",
            "left": "persons",
            "right": "auctions",
            "left_key": "id",
            "right_key": "seller",
            "lower_ms": -1000,
            "upper_ms": 1000,
            "left_prefix": "p_",
            "right_prefix": "a_",
        }
    }


def load_example(relative: str) -> pipeline.Pipeline:
    return pipeline.load(EXAMPLES / relative, {})


# -- errors ---------------------------------------------------------------------------------


def test_plan_filter_unknown_column_names_step_and_column() -> None:
    text = build_error(raw_with(steps({"op": "filter", "where": "user > 1"})))
    assert text.startswith("query.steps[0] (filter): expression 'user > 1'")
    assert "unknown column 'user' (columns: ts, key, value)" in text


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ({"op": "filter", "where": "value > 'a'"}, "cannot compare double with string"),
        ({"op": "filter", "where": "value + 1"}, "a filter condition must be bool, got double"),
        (
            {"op": "project", "columns": ["ts", "key", "value + 'x' as v"]},
            "arithmetic '+' needs numbers, got double + string",
        ),
    ],
)
def test_plan_expression_type_mismatch_names_step_and_types(step: dict, reason: str) -> None:
    text = build_error(raw_with(steps(step)))
    assert text.startswith(f"query.steps[0] ({step['op']}): expression ")
    assert reason in text


def test_plan_unknown_aggregate_names_step_and_aggregate() -> None:
    raw = raw_with(lambda r: r["query"]["steps"][0].update(aggregates=["median(value)"]))
    text = build_error(raw)
    assert text.startswith("query.steps[0] (window): 'median(value)' is not an aggregate")


def test_plan_aggregate_of_unknown_column_names_it() -> None:
    raw = raw_with(lambda r: r["query"]["steps"][0].update(aggregates=["sum(nope)"]))
    assert "query.steps[0] (window): aggregate 'sum_nope': column 'nope'" in build_error(raw)


def test_plan_window_key_not_in_source_names_step_and_key() -> None:
    text = build_error(raw_with(lambda r: r["query"]["steps"][0].update(key="user")))
    assert text == (
        "query.steps[0] (window): column 'user' is not in the input (columns: ['ts', 'key', "
        "'value'])"
    )


def test_plan_window_without_event_time_names_the_time_key() -> None:
    text = build_error(raw_with(lambda r: r["sources"][0].pop("event_time")))
    assert text.startswith("query.steps[0] (window): time: no event-time column")


def test_plan_source_event_time_not_in_schema_names_it() -> None:
    text = build_error(raw_with(lambda r: r["sources"][0].update(event_time="when")))
    assert text.startswith("sources.events.event_time: column 'when' is not in its schema")


@pytest.mark.parametrize(
    "columns", [{"key": "key % 3", "ts": "ts", "value": "value"}, ["ts", "value", "key + 1 as key"]]
)
def test_plan_key_redefined_by_project_runs_in_the_source_and_partitions(columns: object) -> None:
    plan = build(raw_with(steps({"op": "project", "columns": columns})), workers=2)
    assert plan.source_steps == {"events": 1}  # the project runs in the source
    assert plan.partition_keys == {"events": ["key"]}  # by the key it computed
    assert "query.steps[0..0] in source 'events'; query.steps[1..1] in the workers" in (
        plan.describe()
    )


def test_plan_key_passed_through_by_project_is_accepted() -> None:
    plan = build(raw_with(steps({"op": "project", "columns": ["ts", "key", "value * 2 as value"]})))
    assert plan.partition_keys == {"events": ["key"]}


def test_plan_key_computed_by_project_partitions_with_several_workers() -> None:
    raw = raw_with(steps({"op": "project", "columns": ["ts", "value", "key % 3 as k"]}))
    raw["query"]["steps"][1] = {**WINDOW, "key": "k"}
    plan = build(raw, workers=4)
    assert plan.partition_keys == {"events": ["k"]}
    assert plan.ring_schema("events").names == ["ts", "value", "k"]


def test_plan_key_not_sent_by_the_source_names_what_it_sends() -> None:
    raw = raw_with(steps({"op": "project", "columns": ["ts", "value"]}))
    text = build_error(raw)
    assert text.startswith("query.steps[1] (window): column 'key' is not in the input")


@pytest.mark.parametrize(
    ("later", "key"),
    [
        ({"op": "group_by", "key": "window_start", "aggregates": ["count"]}, "['window_start']"),
        ({"op": "window", "window": {"type": "input"}, "aggregates": ["max(count) as m"]}, "[]"),
    ],
)
def test_plan_later_step_with_other_key_points_to_query_final(later: dict, key: str) -> None:
    text = build_error(raw_with(steps(after=(later,))))
    assert text.startswith(f"query.steps[1]: groups by {key} but rows are partitioned by ['key']")
    assert "[[query.final]]" in text


def test_plan_later_step_grouping_by_superset_of_partition_key_is_accepted() -> None:
    later = {"op": "group_by", "key": ["key", "window_start"], "aggregates": ["sum(count)"]}
    plan = build(raw_with(steps(after=(later,))), workers=2)
    assert plan.partition_keys == {"events": ["key"]}
    assert plan.output_schema.names == ["key", "window_start", "sum_count", "_change"]


def test_plan_same_step_in_query_final_is_accepted() -> None:
    final = [{"op": "window", "window": {"type": "input"}, "aggregates": ["max(count) as m"]}]
    plan = build(raw_with(lambda r: r["query"].update(final=final)), workers=2)
    assert plan.output_schema.names == ["window_start", "window_end", "key", "count", "sum_value"]
    assert plan.final_schema.names == ["window_start", "window_end", "m"]


def test_plan_final_step_errors_name_query_final() -> None:
    final = [{"op": "filter", "where": "nope > 1"}]
    text = build_error(raw_with(lambda r: r["query"].update(final=final)))
    assert text.startswith("query.final[0] (filter): expression 'nope > 1'")


def test_plan_string_key_partitions_with_any_number_of_workers() -> None:
    def by_name(r: dict[str, Any]) -> None:
        r["sources"] = [
            {"name": "p", "type": "nexmark", "kind": "person", "event_time": "date_time"}
        ]
        r["query"] = {"steps": [{"op": "group_by", "key": "name", "aggregates": ["count"]}]}

    for workers in (1, 2, 16):
        assert build(raw_with(by_name), workers=workers).partition_keys == {"p": ["name"]}


def test_plan_string_join_keys_partition_both_sides() -> None:
    def by_name(r: dict[str, Any]) -> None:
        two_nexmark_sources(r)
        r["query"]["join"].update(left_key="name", right_key="item_name")

    assert build(raw_with(by_name), workers=2).partition_keys == {
        "persons": ["name"],
        "auctions": ["item_name"],
    }


def test_plan_join_with_missing_source_names_it_and_the_known_ones() -> None:
    raw = raw_with(two_nexmark_sources)
    raw["query"]["join"]["right"] = "bids"
    assert build_error(raw) == (
        "query.join.right: no source named 'bids' (sources: ['persons', 'auctions'])"
    )


def test_plan_join_with_missing_source_names_the_key_path() -> None:
    raw = raw_with(two_nexmark_sources)
    raw["query"]["join"]["right"] = "bids"
    assert "query.join.right" in build_error(raw)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda r: r["query"]["join"].update(right="persons"),
            "query.join: joins exactly two different sources",
        ),
        (lambda r: r["query"].pop("join"), "query: 2 sources need a [query.join] (or use one)"),
        (
            lambda r: r["query"].update(left_steps=[{"op": "filter", "where": "id > 0"}]),
            None,  # accepted: left_steps belong to a join
        ),
        (
            lambda r: r["query"]["join"].update(left_key="nope"),
            "query.join: left key 'nope' is not in left columns ['id', 'name',",
        ),
    ],
)
def test_plan_join_shape_errors_name_the_key(edit, message: str | None) -> None:  # type: ignore[no-untyped-def]
    raw = raw_with(two_nexmark_sources)
    edit(raw)
    if message is None:
        assert build(raw).inputs == ["persons", "auctions"]
    else:
        assert build_error(raw).startswith(message)


@pytest.mark.parametrize(
    ("join", "message"),
    [
        ({"type": "inner", "lower_ms": 0, "upper_ms": 0}, None),  # the defaults: accepted
        ({"type": "inner", "upper_ms": 5}, 'query.join: type = "inner" has no time bounds'),
        ({"type": "inner", "tolerance_ms": 5}, 'query.join: type = "inner" has no time bounds'),
        ({"type": "interval", "upper_ms": 0, "left_until": "date_time"}, None),
        (
            {"type": "interval", "upper_ms": 5, "left_until": "date_time"},
            "query.join: upper_ms=5 and left_until='date_time': give one",
        ),
        (
            {"type": "interval", "upper_ms": 0, "left_until": "id"},
            "query.join: left_until column 'id' has type int64; it must have the type of "
            "the left time column 'date_time', timestamp[ms]",
        ),
        (
            {"type": "interval", "upper_ms": 0, "left_until": "nope"},
            "query.join: left_until column 'nope' is not in left columns",
        ),
        (
            {"type": "asof", "left_until": "date_time"},
            'query.join: left_until is a bound of type = "interval"',
        ),
    ],
)
def test_plan_inner_join_and_left_until_bounds_checked(join: dict, message: str | None) -> None:
    raw = raw_with(two_nexmark_sources)
    raw["query"]["join"].update({"lower_ms": 0, **join})
    if message is None:
        assert build(raw, workers=2).inputs == ["persons", "auctions"]
    else:
        assert build_error(raw).startswith(message), build_error(raw)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"key": "key", "rows": 3, "aggregates": ["avg(value) as a", "count"]}, None),
        ({"key": "key", "rows": 0, "aggregates": ["count"]}, "rows"),
        (
            {"key": "key", "rows": 3, "aggregates": ["count_distinct(value)"]},
            "query.steps[0] (over): count_distinct(value): an over step computes",
        ),
        (
            {"key": "key", "rows": 3, "aggregates": ["sum(value * 2) as v2"]},
            "query.steps[0] (over): sum(value * 2) as v2: 'value * 2' is not a column",
        ),
        (
            {"key": "key", "rows": 3, "aggregates": ["max(nope)"]},
            "query.steps[0] (over): max(nope): 'nope' is not a column",
        ),
        (
            {"key": "key", "rows": 3, "aggregates": ["sum(key) as value"]},
            "query.steps[0] (over): sum(key) as value: output column 'value' is already",
        ),
        (
            {"key": "key", "rows": 3, "order_by": ["nope"], "aggregates": ["count"]},
            "query.steps[0] (over): column 'nope' is not in the input",
        ),
    ],
)
def test_plan_over_step_errors_name_the_step_and_the_value(
    over: dict, message: str | None
) -> None:
    raw = raw_with(lambda r: r["query"].update(steps=[{"op": "over", **over}]))
    if message is None:
        plan = build(raw, workers=2)
        assert plan.final_schema.names == ["ts", "key", "value", "a", "count"]
    else:
        assert message in build_error(raw), build_error(raw)


def test_plan_over_step_without_key_in_the_workers_points_to_query_final() -> None:
    over = {"op": "over", "rows": 3, "aggregates": ["avg(value) as a"]}
    raw = raw_with(lambda r: r["query"].update(steps=[over]))
    assert "an over step without a key" in build_error(raw, workers=2)
    raw = raw_with(lambda r: r["query"].update(steps=[], final=[{**over, "time": "ts"}]))
    assert build(raw, workers=2).final_schema.names == ["ts", "key", "value", "a"]


def test_plan_left_steps_without_join_refused() -> None:
    raw = raw_with(lambda r: r["query"].update(left_steps=[{"op": "filter", "where": "key > 0"}]))
    assert build_error(raw) == "query.left_steps/right_steps: only with [query.join]"


def test_plan_join_followed_by_window_on_other_key_points_to_query_final() -> None:
    def windowed(r: dict[str, Any]) -> None:
        two_nexmark_sources(r)
        r["query"]["steps"] = [
            {
                "op": "window",
                "key": "a_category",
                "time": "a_date_time",
                "window": {"type": "tumbling", "size_ms": 1000},
                "aggregates": ["count"],
            }
        ]

    text = build_error(raw_with(windowed))
    assert text.startswith("query.steps: groups by ['a_category'] but rows are partitioned by")
    assert "[[query.final]]" in text


def test_plan_sink_input_naming_no_stream_is_refused() -> None:
    text = build_error(raw_with(lambda r: r["sinks"][0].update(input="late")))
    assert text == "sinks.out.input: 'late' is not a stream (streams: ['main'])"


def test_plan_late_output_is_a_stream_with_the_window_input_schema() -> None:
    def late(r: dict[str, Any]) -> None:
        r["query"]["steps"][0]["late_output"] = "late"
        r["sinks"].append({"name": "l", "type": "files", "path": "/nonexistent/l", "input": "late"})

    plan = build(raw_with(late))
    assert plan.late_schemas["late"].names == ["ts", "key", "value"]
    assert plan.sink_schema("late") == plan.late_schemas["late"]
    assert plan.sink_schema("main") == plan.final_schema


@pytest.mark.parametrize(("table", "index"), [("sources", 0), ("sinks", 0)])
def test_plan_unknown_connector_type_names_it_and_the_known_ones(table: str, index: int) -> None:
    raw = raw_with(lambda r: r[table][index].update(type="mqtt"))
    text = build_error(raw, cls=ConnectorNotFoundError)
    kind = table[:-1]
    name = "events" if kind == "source" else "out"
    assert text.startswith(f"{table}.{name}.type: unknown {kind} type 'mqtt'; known: ")
    assert ("generator" if kind == "source" else "files") in text


def test_plan_unknown_connector_type_names_the_key_path() -> None:
    raw = raw_with(lambda r: r["sources"][0].update(type="mqtt"))
    assert "sources.events.type" in build_error(raw, cls=ConnectorNotFoundError)


def test_plan_bad_sink_option_is_refused_at_validate_time() -> None:
    raw = raw_with(lambda r: r["sinks"][0].update(format="csv"))
    assert "format='csv'" in build_error(raw)


def test_plan_bad_connector_option_names_the_source() -> None:
    text = build_error(raw_with(lambda r: r["sources"][0].update(keys=0)))
    # one shape for every connector option error (connectors.options)
    assert text == "sources.events.keys=0 must be an integer >= 1"
    text = build_error(raw_with(lambda r: r["sources"][0].update(keyz=1)))
    assert text.startswith("sources.events: unknown option 'keyz' (did you mean 'keys'?)")


def test_plan_bad_udf_reference_names_step_and_function() -> None:
    text = build_error(raw_with(steps({"op": "udf", "function": "no_such_module:f"})))
    assert text.startswith("query.steps[0] (udf): user function 'no_such_module:f': cannot import")


def test_plan_builtin_sources_all_replay() -> None:
    from connectors import registry

    for name in ("generator", "nexmark", "files", "scripted"):
        assert registry.resolve_source(name)().supports_replay(), name


def test_plan_exactly_once_with_non_replayable_source_names_it() -> None:
    def one_shot(r: dict[str, Any]) -> None:
        r["pipeline"]["delivery"] = "exactly-once"
        r["sources"] = [{"name": "once", "type": ONE_SHOT, "event_time": "ts"}]

    text = build_error(raw_with(one_shot), cls=DeliveryGuaranteeError)
    assert text == (
        "pipeline.delivery: exactly-once needs replayable sources; source 'once' "
        f"({ONE_SHOT}) cannot replay from a checkpoint"
    )
    plan = build(raw_with(lambda r: (one_shot(r), r["pipeline"].update(delivery="at-least-once"))))
    assert plan.replayable == {"once": False}


def test_plan_exactly_once_with_console_sink_names_it() -> None:
    def console(r: dict[str, Any]) -> None:
        r["pipeline"]["delivery"] = "exactly-once"
        r["sinks"] = [{"name": "show", "type": "console"}]

    text = build_error(raw_with(console), cls=DeliveryGuaranteeError)
    assert text == (
        "pipeline.delivery: exactly-once needs exactly-once sinks; sink 'show' (console) is not"
    )


def test_plan_exactly_once_without_checkpoints_refused() -> None:
    def no_checkpoints(r: dict[str, Any]) -> None:
        r["pipeline"]["delivery"] = "exactly-once"
        r["checkpoint"]["interval_ms"] = 0

    text = build_error(raw_with(no_checkpoints), cls=DeliveryGuaranteeError)
    assert re.match(r"pipeline\.delivery: exactly-once needs checkpoints", text)


def test_plan_exactly_once_with_files_sink_and_generator_is_accepted() -> None:
    plan = build(raw_with(lambda r: r["pipeline"].update(delivery="exactly-once")))
    assert plan.replayable == {"events": True}


def test_plan_given_schemas_opens_no_source() -> None:
    # a child rebuilds the plan from the coordinator's schemas: the source is not opened again
    raw = raw_with(lambda r: r["sources"][0].update(keys=0))
    p = pipeline.parse(raw)
    plan = Plan.build(p, 2, schemas={"events": OneShotSource.SCHEMA})
    assert plan.partition_keys == {"events": ["key"]} and plan.replayable == {}


# -- good plans -----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_plan_quickstart_partitions_by_key_and_outputs_window_columns(workers: int) -> None:
    plan = Plan.build(load_example("quickstart.toml"), workers)
    assert plan.inputs == ["events"] and plan.partition_keys == {"events": ["key"]}
    expected = pa.schema(
        [
            ("window_start", pa.int64()),
            ("window_end", pa.int64()),
            ("key", pa.int64()),
            ("count", pa.int64()),
            ("sum_value", pa.float64()),
            ("avg_value", pa.float64()),
        ]
    )
    assert plan.output_schema.remove_metadata().equals(expected)
    assert plan.final_schema.remove_metadata().equals(expected)
    assert plan.replayable == {"events": True} and plan.late_schemas == {}
    text = plan.describe()
    assert text.startswith("pipeline 'quickstart' (exactly-once, checkpoints every 1000 ms")
    assert f"{workers} worker(s)" in text and "out (files <- main)" in text


def test_plan_nexmark_q5_partitions_by_auction_and_final_keeps_top_auction() -> None:
    plan = Plan.build(load_example("nexmark/q5.toml"), 2)
    assert plan.partition_keys == {"bids": ["auction"]}
    assert list(zip(plan.output_schema.names, plan.output_schema.types, strict=True)) == [
        ("window_start", TS),
        ("window_end", TS),
        ("auction", pa.int64()),
        ("count", pa.int64()),
    ]
    assert list(zip(plan.final_schema.names, plan.final_schema.types, strict=True)) == [
        ("window_start", TS),
        ("window_end", TS),
        ("max_count", pa.int64()),
        ("auction", pa.int64()),
    ]


def test_plan_nexmark_q7_global_window_partitions_by_batch() -> None:
    plan = Plan.build(load_example("nexmark/q7.toml"), 2)
    assert plan.partition_keys == {"bids": None}  # no key: round-robin batches
    names = ["window_start", "window_end", "price", "auction", "bidder"]
    assert plan.output_schema.names == names and plan.final_schema.names == names
    assert plan.final_schema.field("price").type == pa.int64()
    assert "partitioned by batch" in plan.describe()


def test_plan_nexmark_q8_join_partitions_each_side_by_its_join_key() -> None:
    plan = Plan.build(load_example("nexmark/q8.toml"), 2)
    assert plan.inputs == ["persons", "auctions"]
    assert plan.partition_keys == {"persons": ["id"], "auctions": ["seller"]}
    assert list(zip(plan.final_schema.names, plan.final_schema.types, strict=True)) == [
        ("p_id", pa.int64()),
        ("p_name", pa.string()),
        ("a_id", pa.int64()),
        ("a_reserve", pa.int64()),
        ("window_start", TS),
    ]
    assert plan.output_schema.equals(plan.final_schema)
    assert plan.replayable == {"persons": True, "auctions": True}


def test_plan_rows_without_a_keyed_step_go_by_partition_by_a_changelog_to_one_worker() -> None:
    """No keyed step: round-robin by batch (None); a changelog (``_change``): one worker,
    in order ([]); ``partition_by``: by those columns; a keyed step: its key, and a
    different ``partition_by`` beside it is refused."""

    def query(steps: list[dict[str, Any]], **source: Any) -> Any:
        def edit(r: dict[str, Any]) -> None:
            r["query"] = {"steps": steps}
            r["sources"][0].update(source)

        return edit

    change = {"op": "project", "columns": ["ts", "key", "value", "1 as _change"]}
    assert build(raw_with(query([])), 2).partition_keys == {"events": None}
    assert build(raw_with(query([change])), 2).partition_keys == {"events": []}
    by_key = query([change], partition_by=["key"])
    assert build(raw_with(by_key), 2).partition_keys == {"events": ["key"]}
    assert "sources.events.partition_by: key column 'nope'" in build_error(
        raw_with(query([change], partition_by=["nope"])), 2)  # fmt: skip
    keyed = query([{"op": "group_by", "key": "key", "aggregates": ["count"]}],
                  partition_by=["value"])  # fmt: skip
    assert "already partitions the rows by ['key']" in build_error(raw_with(keyed), 2)
    # only stateless steps: no worker sees the rows; each source instance's go in order
    described = build(raw_with(query([change])), 2).describe()
    assert "(generator x1, in order, to the sinks)" in described


def test_sink_server_checked_by_the_coordinator_only_not_in_each_child() -> None:
    """A child (or a restart) must not fail as misconfigured because a sink's server is
    restarting: only the coordinator's build, before any child starts, reaches it."""
    raw = raw_with(lambda r: r["sinks"][0].update(type=f"{__name__}:AwaySink", path=None))
    del raw["sinks"][0]["path"]
    AwaySink.checks = 0
    with pytest.raises(TransientError, match="sinks.out: cannot connect"):
        build(raw)
    assert AwaySink.checks == 1
    p = pipeline.parse(raw, "p.toml")
    schemas = {"events": pa.schema([("ts", TS), ("key", pa.int64()), ("value", pa.float64())])}
    plan = Plan.build(p, 1, schemas=schemas)  # as engine/child.py builds it
    assert AwaySink.checks == 1 and plan.pipeline.sinks[0].name == "out"


def test_plan_with_no_ring0_work_sends_rows_from_the_sources_straight_to_the_sinks() -> None:
    """Every step stateless (they run in the source), no join, no final stage: ``direct``;
    the wiring then gives each "main" sink one ring per source instance and the workers
    none; a stateful step or a final stage keeps the workers on the rows' path."""
    from engine.wiring import Wiring

    def only(*steps_: dict[str, Any]) -> Callable[[dict[str, Any]], object]:
        return lambda r: r["query"].update(steps=list(steps_))

    filt = {"op": "filter", "where": "key > 2"}
    proj = {"op": "project", "columns": ["ts", "key"]}
    for edit in (only(), only(filt), only(filt, proj)):
        plan = build(raw_with(edit), workers=2)
        assert plan.direct and "straight to the sinks" in plan.describe()
    assert not build(raw_with(only(filt, WINDOW)), workers=2).direct
    final = {"op": "filter", "where": "key > 3"}
    assert not build(raw_with(lambda r: r["query"].update(steps=[filt], final=[final]))).direct

    raw = raw_with(only(filt))
    raw["sources"][0]["parallelism"] = 2
    plan = build(raw, workers=2)
    p = pipeline.parse(raw, "p.toml")
    w = Wiring.create(p, plan.inputs, 2, 1 << 20, plan.direct)
    try:
        assert w.to_sink["out"] == [w.direct[("events", 0)][0], w.direct[("events", 1)][0]]
        assert w.worker_outputs(p, 0) == ([], []) and len(w.to_worker[("events", 0)]) == 2
    finally:
        w.close()


def test_plan_stateless_steps_in_the_workers_when_asked() -> None:
    """``query.stateless_in = "workers"``: no step runs in a source, so a stateless query
    is no longer direct (the workers run its steps); a keyed one partitions by a column
    of the source, and a key its steps compute is refused, naming the option."""
    filt = {"op": "filter", "where": "key > 2"}

    def workers(*steps_: dict[str, Any]) -> Callable[[dict[str, Any]], object]:
        return lambda r: r["query"].update(steps=list(steps_), stateless_in="workers")

    plan = build(raw_with(workers(filt)), workers=2)
    assert plan.source_steps == {"events": 0} and not plan.direct
    assert plan.ring_schema("events") == plan.source_schemas["events"]
    assert plan.partition_keys == {"events": None}  # round-robin by batch
    assert "query.steps[0..0] in the workers" in plan.describe()
    assert "in source" not in plan.describe()

    plan = build(raw_with(workers(filt, WINDOW)), workers=2)
    assert plan.source_steps == {"events": 0} and plan.partition_keys == {"events": ["key"]}

    computed = {"op": "project", "columns": ["ts", "value", "key % 3 as k"]}
    text = build_error(raw_with(workers(computed, {**WINDOW, "key": "k"})), workers=2)
    assert "key column 'k' is not among the columns source 'events' sends" in text
    assert 'stateless_in = "workers"' in text


def lowered_keys(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A udf that rewrites the key column (a test's user function)."""
    import pyarrow.compute as pc

    return batch.set_column(1, "key", pc.bit_wise_and(batch.column("key"), 3))


def with_change(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A udf that makes its input a changelog (a test's user function)."""
    return batch.append_column("_change", pa.array(["+"] * batch.num_rows))


def test_stateless_steps_in_the_workers_never_split_by_a_key_a_udf_may_rewrite() -> None:
    """In the workers, a udf runs after the split: a key column it outputs may no longer
    be the one the rows were split by, so it is refused; in the sources it runs first."""
    udf = {"op": "udf", "function": f"{__name__}:lowered_keys"}
    edit = lambda r: r["query"].update(steps=[udf, WINDOW], stateless_in="workers")  # noqa: E731
    text = build_error(raw_with(edit), 2)
    assert "key column 'key' may be rewritten by a udf the workers run before it" in text
    assert 'stateless_in = "sources"' in text
    plan = build(raw_with(lambda r: r["query"].update(steps=[udf, WINDOW])), workers=2)
    assert plan.source_steps == {"events": 1} and plan.partition_keys == {"events": ["key"]}


def test_a_changelog_made_in_the_workers_goes_to_one_worker_in_order() -> None:
    """A stateless query whose output is a changelog keeps every row on one worker (a
    key's retraction and insertion stay in order) wherever its steps run."""
    udf = {"op": "udf", "function": f"{__name__}:with_change"}
    for where in ("sources", "workers"):
        plan = build(raw_with(lambda r, w=where: r["query"].update(steps=[udf], stateless_in=w)),
                     workers=2)  # fmt: skip
        assert plan.partition_keys == {"events": []}, where


def test_pipeline_hash_ignores_where_stateless_steps_run() -> None:
    """They keep no state and a checkpoint holds no row in flight: a run may resume with
    ``stateless_in`` changed, so the hash (checked on recovery) does not cover it."""
    a = pipeline.parse(raw_with(), "p.toml")
    b = pipeline.parse(raw_with(lambda r: r["query"].update(stateless_in="workers")), "p.toml")
    c = pipeline.parse(raw_with(lambda r: r["query"].update(steps=[])), "p.toml")
    assert a.hash() == b.hash() != c.hash()
    assert b.query.stateless_in == "workers" and a.query.stateless_in == "sources"
    with pytest.raises(ConfigError, match="stateless_in"):
        pipeline.parse(raw_with(lambda r: r["query"].update(stateless_in="sinks")), "p.toml")
