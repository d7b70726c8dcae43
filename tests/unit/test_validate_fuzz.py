"""``validate`` on damaged pipeline files: a clean answer every time, never a traceback or a hang.

The shipped pipeline files are mutated — keys deleted, values replaced by values of
other types (tables, lists, huge or negative numbers, odd strings), bytes flipped,
inserted or deleted — and ``python -m engine validate`` (its ``main``, in this
process) must exit 0 or 2 with a one-line ``error:`` naming the file, for each of
1,200 cases. The cases are derived from fixed seeds, so every run checks the same ones.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import signal
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(
    p for p in [*ROOT.glob("examples/*.toml"), *ROOT.glob("examples/*/*.toml")]
    if p.name != "topology.toml"
)  # fmt: skip
VALUES: list[Any] = [
    0, -1, 1, 2**63, -(2**63) - 5, 2**64 + 1, 1.5, float("inf"), float("nan"), "", "x", "a b",
    "🙂", True, False, [], [1, "a"], {}, {"a": 1}, {"type": "tumbling"}, "timestamp", "int64",
    "count(*)", "sum(", "x > ", "0" * 300, "../../etc", "\x00",
]  # fmt: skip


def _paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*path, k)
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*path, i)
            yield from _paths(v, (*path, i))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value == float("inf") else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def mutate(rng: random.Random, text: str) -> bytes:
    """One damaged variant of a pipeline file's text."""
    if rng.random() < 0.3:  # byte damage
        data = bytearray(text.encode())
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(len(data))
            op = rng.random()
            if op < 1 / 3:
                del data[at]
            elif op < 2 / 3:
                data.insert(at, rng.randrange(256))
            else:
                data[at] = rng.randrange(256)
        return bytes(data)
    doc = tomllib.loads(text)
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(doc))
        path = rng.choice(paths)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if rng.random() < 0.35:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
    return "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in doc.items()).encode()


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "topology.toml"
    path.write_text("[topology]\ncoordinator = 0\nconnectors = [0]\nworkers = [1]\n")
    return path


def _hang(_sig: int, _frame: object) -> None:
    raise TimeoutError("validate hung for 20 s")


@settings(max_examples=1200, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, len(FILES) - 1))
def test_validate_damaged_pipeline_exits_0_or_2_never_a_traceback(
    seed: int, which: int, topology: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    original = FILES[which]
    data = mutate(random.Random(seed), original.read_text())
    path = tmp_path_factory.getbasetemp() / "damaged.toml"
    path.write_bytes(data)
    err = io.StringIO()
    old = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(20)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(["validate", str(path), "--topology", str(topology)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    said = err.getvalue()
    assert code in (0, 2), f"{original.name} damaged ({data[:300]!r}) exited {code}: {said}"
    if code == 2:
        assert said.startswith(f"error: {path}") or said.startswith("error: "), said
        assert "Traceback" not in said and said.count("\n") <= 2, said
