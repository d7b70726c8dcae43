"""Running a pipeline file for a benchmark: through the engine, and in one process (baseline).

``run_engine`` starts ``python -m engine run`` as a user would, with a
topology file that pins the workers it is given, every sink path and the
checkpoint directory moved under a fresh temporary directory (so no run sees
another's output or resumes another's checkpoint), and parses the summary
line: events/s is the engine's own figure (children ready → last child
done). ``run_local`` runs the same pipeline file with ``engine.local`` — the
same sources, operators and sinks one after the other in one process, pinned
to one core, no rings: the no-IPC baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import machine

ROOT = Path(__file__).resolve().parents[1]


def _summary(stdout: str) -> dict[str, Any] | None:
    """The ``summary`` event of ``run --log-format json`` (its last stdout line)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == "summary":
            return doc
    return None


def _overrides(pipeline: Path, tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    from engine import pipeline as pipeline_mod

    p = pipeline_mod.load(pipeline, {})
    env = {"RINGSTREAM_CHECKPOINT__DIR": str(tmp / "checkpoints")}
    for i, k in enumerate(p.sinks):
        if "path" in k.options:
            env[f"RINGSTREAM_SINKS__{i}__PATH"] = str(tmp / f"sink-{i}")
    env.update(extra)
    return env


def run_engine(
    pipeline: Path,
    workers: list[int],
    extra_env: dict[str, str] | None = None,
    inspect: Callable[[Path], dict[str, Any]] | None = None,
    connectors: list[int] | None = None,
) -> dict[str, Any]:
    """One engine run; ``inspect(tmp)`` may read its checkpoints before they are deleted.

    The coordinator runs on the first available CPU; connector processes (sinks first,
    then each source instance) take ``connectors`` in turn (default: the first CPU)."""
    cpus = machine.available_cpus()
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as d:
        tmp = Path(d)
        topo = tmp / "topology.toml"
        topo.write_text(
            f"[topology]\ncoordinator = {cpus[0]}\nconnectors = {connectors or [cpus[0]]}\n"
            f"workers = {workers}\n"
        )
        env = {**os.environ, **_overrides(pipeline, tmp, extra_env or {})}
        done = subprocess.run(
            [sys.executable, "-m", "engine", "run", str(pipeline), "--topology", str(topo),
             "--quiet", "--log-format", "json"],
            capture_output=True, text=True, env=env, cwd=ROOT, check=False,
        )  # fmt: skip
        summary = _summary(done.stdout)
        if done.returncode or summary is None:
            raise RuntimeError(f"engine run of {pipeline} failed:\n{done.stdout}\n{done.stderr}")
        n, seconds = int(summary["events"]), float(summary["elapsed_s"])
        out: dict[str, Any] = {
            "events_per_s": n / seconds, "elapsed_s": seconds, "events": n,
            "cpu_s": summary.get("cpu_s", {}), "worker_rows": summary.get("worker_rows", []),
            "max_rss_bytes": summary.get("max_rss_bytes", {}),
        }  # fmt: skip
        if inspect is not None:
            out.update(inspect(tmp))
    return out


_LOCAL = """
import json, os, sys
os.sched_setaffinity(0, {{{cpu}}})
import pyarrow as pa
pa.set_cpu_count(1)
from engine import pipeline
from engine.local import run_local
r = run_local(pipeline.load({path!r}))
print(json.dumps([r.events, r.elapsed_s]))
"""


def run_local(pipeline: Path, extra_env: dict[str, str] | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as d:
        env = {**os.environ, **_overrides(pipeline, Path(d), extra_env or {})}
        code = _LOCAL.format(cpu=machine.available_cpus()[-1], path=str(pipeline))
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
            check=False,
        )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"single-process run of {pipeline} failed:\n{done.stderr}")
    n, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    return {"events_per_s": n / seconds, "elapsed_s": seconds, "events": n}
