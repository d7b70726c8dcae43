"""The operator graph a Ring 0 worker runs: chains of operators, optionally around a join.

``Chain`` is operators in sequence. A batch goes through each in turn; a
watermark goes to the first operator, whatever it emits flows through the
rest, then the second operator gets the watermark, and so on, so a window's
output reaches a downstream window before that window sees the watermark
that closed it. Late rows of a window step with a late output are collected
per output name.

``WorkerGraph`` is one chain per input (port 0, or ports 0/1 for a join),
the join, and a chain after it. Snapshots are the operators' own tables under
``"<path>/<table>"`` names (``pre0.2/windows``, ``join/left``, ``post.0/...``),
so a restore hands each operator back exactly its tables.

Output size: a batch the graph returns may be of any size (a window closing
hundreds of thousands of groups at once, a join that fans out); the worker
writes it with ``RingWriter.write_batches``, which cuts it to fit its rings.

Counters, summed over the operators: ``late_rows`` (behind the watermark),
``null_time_rows`` (a null event time, or a null join key), and
``out_of_range_rows`` (an event time the engine cannot compute with,
``engine.timeunits``). Each is a count of rows dropped, shown in the summary.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from engine.errors import StateError
from ring0.operators.base import Operator

DROPPED = ("late_rows", "null_time_rows", "out_of_range_rows")  # counters of dropped rows

Batches = list[pa.RecordBatch]

class Chain:
    def __init__(
        self,
        ops: list[Operator],
        late: list[str | None],
        schema: pa.Schema,
        input_schema: pa.Schema,
    ) -> None:
        self.ops = ops
        self.input_schema = input_schema
        self.late = late  # per op: the late-output name, or None
        self.output_schema = schema
        self.late_out: dict[str, Batches] = {}

    def process(self, batch: pa.RecordBatch, start: int = 0) -> Batches:
        out = [batch]
        for i in range(start, len(self.ops)):
            op = self.ops[i]
            nxt: Batches = []
            for b in out:
                if b.num_rows:
                    nxt.extend(op.process(b))
            self._collect_late(i)
            out = nxt
            if not out:
                break
        return out

    def _feed(self, batches: Iterable[pa.RecordBatch], start: int) -> Batches:
        out: Batches = []
        for b in batches:
            out.extend(self.process(b, start) if start < len(self.ops) else [b])
        return out

    def on_watermark(self, watermark: int) -> Batches:
        out: Batches = []
        for i, op in enumerate(self.ops):
            emitted = op.on_watermark(watermark)
            out.extend(self._feed(emitted, i + 1))
        return out

    def finish(self) -> Batches:
        out: Batches = []
        for i, op in enumerate(self.ops):
            out.extend(self._feed(op.finish(), i + 1))
        return out

    def _collect_late(self, i: int) -> None:
        name = self.late[i]
        if name is not None:
            late = self.ops[i].take_late()
            if late:
                self.late_out.setdefault(name, []).extend(late)

    def take_late(self) -> dict[str, Batches]:
        out, self.late_out = self.late_out, {}
        return out

    @property
    def late_rows(self) -> int:
        return sum(op.late_rows for op in self.ops)

    @property
    def null_time_rows(self) -> int:
        return sum(op.null_time_rows + op.null_rows for op in self.ops)

    @property
    def out_of_range_rows(self) -> int:
        return sum(op.out_of_range_rows for op in self.ops)

    def late_schemas(self) -> dict[str, pa.Schema]:
        schemas = {}
        for i, name in enumerate(self.late):
            if name is not None:
                # late rows have the step's input schema
                schemas[name] = self.ops[i - 1].output_schema if i else self.input_schema
        return schemas

    def snapshot(self, prefix: str) -> dict[str, pa.Table]:
        out = {}
        for i, op in enumerate(self.ops):
            for name, table in op.snapshot().items():
                out[f"{prefix}.{i}/{name}"] = table
        return out

    def restore(self, prefix: str, state: dict[str, pa.Table]) -> None:
        for i, op in enumerate(self.ops):
            mine = _take(state, f"{prefix}.{i}/")
            if mine:
                op.restore(mine)


def _take(state: dict[str, pa.Table], prefix: str) -> dict[str, pa.Table]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class WorkerGraph:
    def __init__(
        self,
        pre: list[Chain],
        join: Operator | None,
        post: Chain | None,
        skip: list[int] | None = None,
    ) -> None:
        self.pre = pre
        self.join = join
        self.post = post
        # per input: how many leading (stateless) steps its source already ran: batches enter
        # the chain after them (the operators stay, so indices and snapshots do not move)
        self.skip = skip or [0] * len(pre)

    @property
    def output_schema(self) -> pa.Schema:
        return self.post.output_schema if self.post is not None else self.pre[0].output_schema

    @property
    def stateful(self) -> bool:
        """Whether there is anything to snapshot (an empty final stage has not)."""
        return self.join is not None or any(c.ops for c in self._chains())

    def _chains(self) -> list[Chain]:
        return [*self.pre, *([self.post] if self.post is not None else [])]

    def late_schemas(self) -> dict[str, pa.Schema]:
        out: dict[str, pa.Schema] = {}
        for c in self._chains():
            out.update(c.late_schemas())
        return out

    def process(self, batch: pa.RecordBatch, port: int) -> Batches:
        out = self.pre[port].process(batch, self.skip[port])
        if self.join is None:
            return out
        joined: Batches = []
        for b in out:
            joined.extend(self.join.process(b, port))
        return self._post(joined)

    def _post(self, batches: Batches) -> Batches:
        assert self.post is not None
        out: Batches = []
        for b in batches:
            out.extend(self.post.process(b))
        return out

    def on_watermark(self, watermark: int) -> Batches:
        if self.join is None:
            return self.pre[0].on_watermark(watermark)
        joined: Batches = []
        for port, chain in enumerate(self.pre):
            for b in chain.on_watermark(watermark):
                joined.extend(self.join.process(b, port))
        joined.extend(self.join.on_watermark(watermark))
        out = self._post(joined)
        assert self.post is not None
        out.extend(self.post.on_watermark(watermark))
        return out

    def finish(self) -> Batches:
        if self.join is None:
            return self.pre[0].finish()
        joined: Batches = []
        for port, chain in enumerate(self.pre):
            for b in chain.finish():
                joined.extend(self.join.process(b, port))
        joined.extend(self.join.finish())
        out = self._post(joined)
        assert self.post is not None
        out.extend(self.post.finish())
        return out

    def take_late(self) -> dict[str, Batches]:
        out: dict[str, Batches] = {}
        for c in self._chains():
            for name, batches in c.take_late().items():
                out.setdefault(name, []).extend(batches)
        return out

    def _count(self, name: str) -> int:
        total = sum(getattr(c, name) for c in self._chains())
        if self.join is not None:
            total += getattr(self.join, name)
            if name == "null_time_rows":
                total += self.join.null_rows
        return total

    @property
    def late_rows(self) -> int:
        return self._count("late_rows")

    @property
    def null_time_rows(self) -> int:
        return self._count("null_time_rows")

    @property
    def out_of_range_rows(self) -> int:
        return self._count("out_of_range_rows")

    def dropped(self) -> dict[str, int]:
        """The three counts of dropped rows, by their counter names (a worker publishes
        its graph's, a sink its final stage's)."""
        return {name: self._count(name) for name in DROPPED}

    def snapshot(self) -> dict[str, pa.Table]:
        out: dict[str, pa.Table] = {}
        for port, chain in enumerate(self.pre):
            out.update(chain.snapshot(f"pre{port}"))
        if self.join is not None:
            out.update({f"join/{k}": v for k, v in self.join.snapshot().items()})
        if self.post is not None:
            out.update(self.post.snapshot("post"))
        return out

    def restore(self, state: dict[str, pa.Table]) -> None:
        known = ("pre", "join/", "post.")
        stray = [k for k in state if not k.startswith(known)]
        if stray:
            raise StateError(f"state tables {stray} belong to no operator of this query")
        for port, chain in enumerate(self.pre):
            chain.restore(f"pre{port}", state)
        if self.join is not None:
            mine = _take(state, "join/")
            if mine:
                self.join.restore(mine)
        if self.post is not None:
            self.post.restore("post", state)
