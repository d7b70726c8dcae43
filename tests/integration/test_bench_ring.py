"""The README's benchmark command runs and prints every documented key (figures not judged)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_ring_quick_json_has_every_documented_key() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.ring", "--json", "--quick", "--sizes", "1K,64K"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    result = json.loads(out.stdout)
    assert {"ring", "baselines", "memcpy_gbps", "small_frames", "latency_us", "cpus"} <= set(result)
    assert set(result["baselines"]) == {"mp_queue", "pipe_ipc", "zmq_ipc"}
    for label in ("1K", "64K"):
        assert result["ring"][label]["rows_per_s"] > 0
        for baseline in result["baselines"].values():
            assert baseline[label]["rows_per_s"] > 0
    assert result["cpus"]["pinning"]["producer"] is not None
    assert result["small_frames"]["ring_frames_per_s"] > 0
    assert result["latency_us"]["ring_park"]["p99"] > 0
