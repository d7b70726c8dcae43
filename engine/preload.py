"""What the fork server imports before it forks a child (``engine.supervisor.PRELOAD``).

Everything here is imported once, in the fork server, while the coordinator
plans; each child then starts with it already in memory (shared with the
server until written). Without this, each child imports it after the fork,
several children at once, on the clock of ``python -m engine run``.

In: the child's entry point and the three runners, every Ring 0 operator
(about 20 ms in all), and the files connector (the one most pipelines read
and write, with pyarrow's CSV, JSON and Parquet readers). Out: the other
connectors, because some pull in client libraries (psycopg2, confluent-kafka)
that a pipeline without them should not pay for; each child imports its own. A
module that fails to import is skipped here (the child that needs it reports the
error); the fork server must not die of it.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

MODULES = (
    "pyarrow.csv",
    "pyarrow.json",
    "pyarrow.parquet",
    "engine.child",
    "engine.plan",
    "ring0.worker",
    "ring1.source_runner",
    "ring1.sink_runner",
    "connectors.files.source",
    "connectors.files.sink",
)


def _load(name: str) -> None:
    # A module that fails here fails again in the child that needs it, which reports it
    # with its traceback (``Failed``); here it would kill the fork server instead.
    with contextlib.suppress(Exception):
        importlib.import_module(name)


for _name in MODULES:
    _load(_name)
with contextlib.suppress(Exception):
    for _module in pkgutil.walk_packages(
        importlib.import_module("ring0.operators").__path__, "ring0.operators."
    ):
        _load(_module.name)
