"""Where rows go and where steps run: the partition key of each input, the steps a source runs.

``partitioning(plan, graph)``: the partition key of each input source — the
join keys of each side, else the key of the first keyed stateful step (None:
round-robin by batch for a global one), else (no keyed step) the source's
``partition_by``, or ``[]`` (every row to one worker, in order) for a changelog
stream, or None — checked against what the source
sends to the workers (its columns after its own steps) and against every
later keyed step, which must group by a superset of it.
``stateless_prefix(steps)``: how many leading steps are stateless (filter,
project, udf) and so run in the source processes (unless ``query.stateless_in``
is "workers"). ``placement(plan)``: one
phrase per group of steps saying where it runs (``validate`` prints it).
"""

from __future__ import annotations

from typing import Any, Protocol

import pyarrow as pa

from engine.errors import ConfigError
from engine.pipeline import FilterStep, ProjectStep, UdfStep
from engine.steps import keys_of
from ring0.graph import WorkerGraph
from ring0.operators.base import Operator
from ring1.partition import check_key_type


class Plan(Protocol):
    """What these functions read of ``engine.plan.Plan`` (which calls them)."""

    pipeline: Any
    inputs: list[str]
    source_steps: dict[str, int]

    def ring_schema(self, source: str) -> pa.Schema: ...

    def steps_of(self, port: int) -> list[Any]: ...


def partitioning(plan: Plan, graph: WorkerGraph) -> dict[str, list[str] | None]:
    q = plan.pipeline.query
    if q.join is not None:
        keys = {q.join.left: keys_of(q.join.left_key), q.join.right: keys_of(q.join.right_key)}
        stateful = [op for op in graph.post.ops if _keyed(op) is not None] if graph.post else []
        for port, (name, k) in enumerate(keys.items()):
            ops = graph.pre[port].ops[graph.skip[port] :]
            _check_partition_key(plan, name, k, "query.join", ops)
        j = q.join
        for op in stateful:
            left = [j.left_prefix + k for k in keys[j.left]]
            right = [j.right_prefix + k for k in keys[j.right]]
            if not set(left) <= set(_keyed(op) or []):
                _require_superset(op, right, "query.steps")
        return keys  # type: ignore[return-value]
    name = plan.inputs[0]
    ops = graph.pre[0].ops
    part: list[str] | None = None
    for i, op in enumerate(ops):
        k = _keyed(op)
        if k is None:
            continue
        if part is None:
            if not k and op.needs_every_row:
                raise ConfigError(
                    f"query.steps[{i}]: an over step without a key orders every row in one "
                    "sequence; each worker would see only its share: put it in "
                    "[[query.final]] (the sink process sees every worker's rows)"
                )
            if not k:  # a global aggregate: batches round-robin
                return {name: None}
            _check_partition_key(plan, name, k, f"query.steps[{i}]", ops[graph.skip[0] : i])
            part = k
        else:
            _require_superset(op, part, f"query.steps[{i}]")
    if part is None:
        return {name: _stateless_partition(plan, name, ops[graph.skip[0] :])}
    given = plan.pipeline.source_named(name).partition_by
    if given is not None and given != part:
        raise ConfigError(
            f"sources.{name}.partition_by = {given}: the query's keyed step already "
            f"partitions the rows by {part}; leave partition_by out"
        )
    return {name: part}


def _stateless_partition(plan: Plan, source: str, ops: list[Operator]) -> list[str] | None:
    """Where rows of a query without a keyed step go: by ``partition_by`` when the source
    says; all to one worker when they are a changelog (a ``_change`` column: a key's
    retraction and insertion must stay in order, and batches sent round-robin to several
    workers reach the sinks in any order); else round-robin by batch (None)."""
    given = plan.pipeline.source_named(source).partition_by
    if given is not None:
        if not given:
            raise ConfigError(f"sources.{source}.partition_by: name at least one column")
        _check_partition_key(plan, source, given, f"sources.{source}.partition_by", ops)
        return list(given)
    out = ops[-1].output_schema if ops else plan.ring_schema(source)  # (what the workers emit)
    if out.get_field_index("_change") >= 0:
        return []
    return None


def _check_partition_key(
    plan: Plan, source: str, key: list[str], where: str, before: list[Operator]
) -> None:
    """``key`` must be in what ``source`` writes to the rings (its own columns, or ones its
    steps computed), unchanged by the worker steps ``before`` the keyed one, and of a key
    type."""
    schema = plan.ring_schema(source)
    for col in key:
        if schema.get_field_index(col) < 0:
            hint = (
                "; query.stateless_in = \"workers\" keeps the steps that compute it out of "
                "the source: set \"sources\""
                if plan.pipeline.query.stateless_in == "workers" else ""
            )  # fmt: skip
            raise ConfigError(
                f"{where}: key column {col!r} is not among the columns source {source!r} "
                f"sends to the workers ({schema.names}){hint}"
            )
        for op in before:
            from ring0.operators.project import Project
            from ring0.operators.udf import UserFunction

            expr = op.exprs.get(col) if isinstance(op, Project) else None
            rewritten = isinstance(op, UserFunction) and col in op.output_schema.names
            if (expr is not None and expr.column_ref != col) or rewritten:
                how = "may be rewritten by a udf" if rewritten else "is redefined by a step"
                raise ConfigError(
                    f"{where}: key column {col!r} {how} the workers run before it; rows are "
                    "partitioned by the column the source sends (query.stateless_in = "
                    '"sources" runs the stateless steps before the split)'
                )
        check_key_type(schema.field(col).type, f"{where}: key column {col!r}")


def placement(plan: Plan) -> list[str]:
    """Where each step runs, one phrase per group (``validate`` prints them)."""
    q, out = plan.pipeline.query, []
    groups = [("query.steps", None)] if q.join is None else [
        ("query.left_steps", q.join.left), ("query.right_steps", q.join.right)]  # fmt: skip
    for port, (where, _) in enumerate(groups):
        name, steps = plan.inputs[port], plan.steps_of(port)
        n = plan.source_steps.get(name, 0)
        if n:
            out.append(f"{where}[0..{n - 1}] in source {name!r}")
        if len(steps) > n:
            out.append(f"{where}[{n}..{len(steps) - 1}] in the workers")
    if q.join is not None:
        out.append("the join" + (f" and query.steps[0..{len(q.steps) - 1}]" if q.steps
                                 else "") + " in the workers")  # fmt: skip
    if q.final:
        out.append(f"query.final[0..{len(q.final) - 1}] in the sinks")
    if plan.direct:
        out.append("rows from the sources straight to the sinks (no Ring 0 work)")
    return out


def stateless_prefix(steps: list) -> int:  # type: ignore[type-arg]
    """How many of ``steps`` from the first are stateless (filter, project, udf)."""
    n = 0
    while n < len(steps) and isinstance(steps[n], FilterStep | ProjectStep | UdfStep):
        n += 1
    return n


def _keyed(op: Operator) -> list[str] | None:
    """The grouping key of a stateful keyed operator, [] for a global one, None if stateless."""
    key = getattr(op, "key", None)
    if key is None:
        return None
    return list(key)


def _require_superset(op: Operator, part: list[str], where: str) -> None:
    key = _keyed(op) or []
    if not set(part) <= set(key):
        raise ConfigError(
            f"{where}: groups by {key} but rows are partitioned by {part}; a result that "
            "combines partitions belongs in [[query.final]]"
        )
