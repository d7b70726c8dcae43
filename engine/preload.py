"""What the fork server imports before it forks a child (``engine.supervisor.PRELOAD``).

Everything here is imported once, in the fork server, while the coordinator
plans; each child then starts with it already in memory (shared with the
server until written). Without this, each child imports it after the fork,
several children at once, on the clock of ``python -m engine run``.

In: the child's entry point and the three runners, every Ring 0 operator
(about 20 ms in all), and the files connector (the one most pipelines read
and write, with pyarrow's CSV, JSON and Parquet readers). Out: the other
connectors, because some pull in client libraries (psycopg2, confluent-kafka)
that a pipeline without them should not pay for; each child imports its own.
"""

from __future__ import annotations

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

for _name in MODULES:
    importlib.import_module(_name)
for _module in pkgutil.walk_packages(
    importlib.import_module("ring0.operators").__path__, "ring0.operators."
):
    importlib.import_module(_module.name)
