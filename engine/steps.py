"""Query steps to operators: one ``[[query.*]]`` table becomes one operator, checked.

``build_step(step, schema, default_time, where)`` builds the operator a step names
against the schema flowing into it, so a wrong column, type or expression is a
``ConfigError`` naming ``where`` (``query.steps[2] (window)``) at validate time;
``build_chain`` builds a list of steps in order, each against the previous
one's output, and remembers which steps send late rows where.
"""

from __future__ import annotations

import pyarrow as pa

from engine.errors import ConfigError
from engine.pipeline import (
    FilterStep,
    GroupByStep,
    OverStep,
    ProjectStep,
    Step,
    UdfStep,
    WindowStep,
)
from engine.typenames import parse_schema
from ring0.graph import Chain
from ring0.operators.base import Operator


def keys_of(k: str | list[str]) -> list[str]:
    return [k] if isinstance(k, str) else list(k)


def build_step(step: Step, schema: pa.Schema, default_time: str | None, where: str) -> Operator:
    """One operator for one ``[[query.*]]`` step, checked against its input schema."""
    try:
        if isinstance(step, FilterStep):
            from ring0.operators.filter import Filter

            return Filter(step.where, schema)
        if isinstance(step, ProjectStep):
            from ring0.operators.project import Project

            if isinstance(step.columns, list):
                return Project.from_list(step.columns, schema)
            return Project(step.columns, schema)
        if isinstance(step, UdfStep):
            from ring0.operators.udf import UserFunction

            out = None
            if step.output_schema is not None:
                out = parse_schema(step.output_schema, f"{where}.output_schema")
            return UserFunction(step.function, schema, out)
        from ring0.operators.aggregate_spec import parse_aggregate

        aggs = [parse_aggregate(a) for a in step.aggregates]
        if isinstance(step, GroupByStep):
            from ring0.operators.groupby import GroupByAggregate

            return GroupByAggregate(keys_of(step.key), aggs, schema, emit=step.emit)
        if isinstance(step, OverStep):
            from ring0.operators.over import RowsOver

            return RowsOver(keys_of(step.key), _time(step.time or default_time), step.order_by,
                            step.rows, aggs, schema)  # fmt: skip
        assert isinstance(step, WindowStep)
        from ring0.operators.window import WindowAggregate, WindowSpec

        w = step.window
        time = step.time or ("window_end" if w.type == "input" else default_time)
        return WindowAggregate(
            keys_of(step.key),
            _time(time),
            WindowSpec(w.type, size_ms=w.size_ms, slide_ms=w.slide_ms, gap_ms=w.gap_ms),
            aggs,
            schema,
            emit=step.emit,
            allowed_lateness_ms=step.allowed_lateness_ms,
            keep_late=step.late_output is not None,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _time(column: str | None) -> str:
    """A step's event-time column: its own ``time``, else the default it was given."""
    if column is None:
        raise ConfigError("time: no event-time column (set time here or event_time on the source)")
    return column


def build_chain(
    steps: list[Step], schema: pa.Schema, default_time: str | None, where: str
) -> Chain:
    ops, late, input_schema = [], [], schema
    for i, step in enumerate(steps):
        op = build_step(step, schema, default_time, f"{where}[{i}] ({_op_name(step)})")
        ops.append(op)
        late.append(step.late_output if isinstance(step, WindowStep) else None)
        schema = op.output_schema
    return Chain(ops, late, schema, input_schema)


def _op_name(step: Step) -> str:
    return type(step).__struct_config__.tag  # type: ignore[attr-defined, no-any-return]
