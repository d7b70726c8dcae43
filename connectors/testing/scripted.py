"""The scripted source: a script of batches and in-band markers, for tests (type ``"scripted"``).

``ScriptedSource`` (built-in type ``"scripted"``) plays ``options["script"]``,
a list whose items are batches — a list of row dicts or a ``pa.RecordBatch``
— or in-band markers (plain dicts, so a TOML pipeline can hold them)::

    {"marker": "end"}                      finished() from here on
    {"marker": "crash", "message": "boom"} raise ConnectorError once per process (not
                                           retried in place: the run restarts)
        "always": true                     ... every time it is reached
        "flag": "/tmp/run/crashed"         ... once across processes: only if it
                                           can create this file (O_EXCL)
    {"marker": "stall", "seconds": 0.5}    poll_batch returns None for that long
    {"marker": "fail", "times": 2}         raise TransientError 2 times
                                           per instance, then go on: for retries

The schema is ``options["schema"]`` (type names, as for files) or that of the
first batch. Position: ``{"index": i, "row": r}`` (row ``r`` of script item
``i``); replayable. A crash marker that fired stays where it is: the rerun
after a restore reaches it again, which is why ``flag`` exists. With
``instances`` > 1 batch items are dealt round-robin; markers apply to all.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pyarrow as pa

from connectors.base import (
    ConnectorConfig,
    Source,
    SourceBatch,
    SourceCheckpoint,
)
from connectors.options import Options
from engine.errors import CheckpointError, ConfigError, ConnectorError, TransientError
from engine.typenames import parse_schema

MARKERS = ("end", "crash", "stall", "fail")
_CRASHED: set[tuple[str, int, int]] = set()  # (source name, instance, script index) that fired


class ScriptedOptions(Options, frozen=True):
    script: list[Any]  # batches (lists of row tables, or RecordBatches) and markers
    schema: Any = None  # {column = "type"} or a pa.Schema; default: the first batch's


class ScriptedSource(Source):
    """Plays a script of batches and markers; see the module docstring."""

    options_type = ScriptedOptions

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        script = self.options.script
        where = f"sources.{config.name}.schema"
        schema = parse_schema(self.options.schema, where) if self.options.schema else None
        self.items: list[pa.RecordBatch | dict[str, Any]] = []
        dealt = 0
        self._mine: list[bool] = []
        for i, item in enumerate(script):
            where = f"scripted source {config.name!r}: script[{i}]"
            if isinstance(item, dict):
                if item.get("marker") not in MARKERS:
                    raise ConfigError(f"{where}={item!r} is not a marker {MARKERS}")
                self.items.append(item)
                self._mine.append(True)
                continue
            if isinstance(item, list):
                extra = {k for row in item for k in row} - set(schema.names if schema else ())
                if schema is not None and extra:
                    raise ConfigError(f"{where} has columns {sorted(extra)} not in {schema}")
                item = pa.RecordBatch.from_pylist(item, schema=schema)
            if not isinstance(item, pa.RecordBatch):
                raise ConfigError(f"{where} must be a list of rows, a RecordBatch or a marker")
            schema = schema or item.schema
            if not item.schema.equals(schema):
                raise ConfigError(f"{where} has schema {item.schema}, expected {schema}")
            self.items.append(item)
            self._mine.append(dealt % config.instances == config.instance)
            dealt += 1
        if schema is None:
            raise ConfigError(f"scripted source {config.name!r}: no batch and no schema option")
        self._schema = schema
        self.index, self.row = 0, 0
        self._stall_until: float | None = None
        self._fails: dict[int, int] = {}

    def schema(self) -> pa.Schema:
        return self._schema

    def poll_batch(self, max_records: int) -> SourceBatch | None:
        while self.index < len(self.items):
            item, i = self.items[self.index], self.index
            if isinstance(item, pa.RecordBatch):
                if not self._mine[i]:
                    self.index, self.row = i + 1, 0
                    continue
                out = item.slice(self.row, max(1, max_records))
                self.row += out.num_rows
                if self.row >= item.num_rows:
                    self.index, self.row = i + 1, 0
                if out.num_rows:
                    return SourceBatch(out, offset=i)
                continue
            kind = item["marker"]
            if kind == "end":
                return None
            if kind == "stall":
                now = time.monotonic()
                if self._stall_until is None:
                    self._stall_until = now + float(item.get("seconds", 0))
                if now < self._stall_until:
                    return None
                self._stall_until = None
            elif kind == "crash" and self._fire(i, item):
                raise ConnectorError(
                    f"scripted source {self.config.name!r}: crash at script[{i}]: "
                    f"{item.get('message', 'crash marker')}"
                )
            elif kind == "fail" and self._fails.get(i, 0) < int(item.get("times", 1)):
                self._fails[i] = self._fails.get(i, 0) + 1
                raise TransientError(
                    f"scripted source {self.config.name!r}: transient failure "
                    f"{self._fails[i]} of {item.get('times', 1)} at script[{i}]"
                )
            self.index = i + 1
        return None

    def _fire(self, i: int, marker: dict[str, Any]) -> bool:
        """Whether crash marker ``i`` fires now (see the module docstring)."""
        if marker.get("always"):
            return True
        if "flag" in marker:
            try:
                os.close(os.open(marker["flag"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return False
            return True
        key = (self.config.name, self.config.instance, i)
        if key in _CRASHED:
            return False
        _CRASHED.add(key)
        return True

    def finished(self) -> bool:
        if self.index >= len(self.items):
            return True
        item = self.items[self.index]
        return isinstance(item, dict) and item["marker"] == "end"

    def data_ready(self, timeout_s: float) -> bool:
        if self._stall_until is None:
            return True
        left = self._stall_until - time.monotonic()
        time.sleep(max(0.0, min(left, timeout_s)))
        return left <= timeout_s

    def checkpoint(self) -> SourceCheckpoint:
        return SourceCheckpoint({"index": self.index, "row": self.row})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        pos = checkpoint.position
        index, row = pos.get("index"), pos.get("row", 0)
        if (
            not isinstance(index, int)
            or not isinstance(row, int)
            or not (0 <= index <= len(self.items) and row >= 0)
        ):
            raise CheckpointError(f"scripted source {self.config.name!r}: bad position {pos!r}")
        self.index, self.row, self._stall_until = index, row, None

    def supports_replay(self) -> bool:
        return True


