"""A package installed from outside ringstream is found by the name its entry point gives.

The demo package (tests/thirdparty/ringstream_thirdparty_demo) is copied to a temporary
directory (so no build files land in the checkout) and pip-installed with ``--target`` into
another one, offline (``--no-index``; its in-tree build backend needs nothing). A child
interpreter with that directory on ``PYTHONPATH`` then resolves the demo connectors by name.
Nothing is installed into this interpreter: removing the temporary directory is the uninstall.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connectors import registry
from engine.errors import ConnectorNotFoundError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "thirdparty" / "ringstream_thirdparty_demo"

CHILD = """
import json
from connectors import registry
from connectors.base import ConnectorConfig
from connectors.testing import check_source, check_sink
from engine.errors import ConfigError

src = registry.resolve_source("demo_counter")
sink = registry.resolve_sink("demo_memory")
check_source(src, ConnectorConfig("c", {"rows": 25}), max_records=4)
s = src()
s.open(ConnectorConfig("c", {"rows": 3}))
check_sink(sink, ConnectorConfig("m"), [s.poll_batch(10).batch])
try:
    registry.resolve_sink("demo_counter")
    wrong_kind = None
except ConfigError as exc:
    wrong_kind = str(exc)
listed = registry.available()
print(json.dumps({
    "source": f"{src.__module__}:{src.__name__}",
    "sink": f"{sink.__module__}:{sink.__name__}",
    "listed": [listed.get("demo_counter"), listed.get("demo_memory")],
    "wrong_kind": wrong_kind,
}))
"""


def test_entry_point_installed_package_resolves_by_name(tmp_path: Path) -> None:
    src = tmp_path / "demo"
    target = tmp_path / "site"
    shutil.copytree(DEMO, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    pip += ["--no-index", "--no-cache-dir", "--disable-pip-version-check", "--quiet"]
    installed = subprocess.run(
        [*pip, "--target", str(target), str(src)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    try:
        assert list(target.glob("ringstream_thirdparty_demo-*.dist-info/entry_points.txt"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
        child = subprocess.run(
            [sys.executable, "-c", CHILD],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert child.returncode == 0, child.stderr
        got = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(target, ignore_errors=True)
    assert got["source"] == "ringstream_thirdparty_demo:CounterSource"
    assert got["sink"] == "ringstream_thirdparty_demo:MemorySink"
    assert got["listed"] == [
        "ringstream_thirdparty_demo:CounterSource",
        "ringstream_thirdparty_demo:MemorySink",
    ]
    assert "not a subclass of connectors.base.Sink" in got["wrong_kind"]


def test_entry_point_not_installed_here_is_not_found() -> None:
    with pytest.raises(ConnectorNotFoundError, match="unknown source type 'demo_counter'"):
        registry.resolve_source("demo_counter")
