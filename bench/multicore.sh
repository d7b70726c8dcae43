#!/usr/bin/env bash
# The multicore benchmarks in one go, for a many-core machine lent for a few minutes.
#
#   bench/multicore.sh OUTDIR      # writes OUTDIR/<bench>-<N>cpu.json and OUTDIR/log
#
# Runs, each under its own time limit so that one slow step leaves the others' results:
# bench.scaling (W1 and Nexmark q5, 1, 2, 4, … workers with as many source instances),
# bench.nexmark (1 and 2 workers against the one-process baseline), bench.ring and
# bench.latency. Needs the engine's packages importable (pip install -e ., or PYTHONPATH).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/multicore.sh OUTDIR}
mkdir -p "$out"
n=$(python3 -c 'import os; print(len(os.sched_getaffinity(0)))')
export PYTHONUNBUFFERED=1
{
  echo "cpus available: $n; $(python3 -c 'from bench import machine; print(machine.cpu_model())')"
  python3 -c 'import sys, pyarrow, numpy; print(sys.version.split()[0], "pyarrow", pyarrow.__version__, "numpy", numpy.__version__)'
  timeout 280 python3 -m bench.scaling --events 10000000 --repeat 3 --out "$out/scaling-${n}cpu.json"
  timeout 180 python3 -m bench.nexmark --events 1000000 --repeat 2 --out "$out/nexmark-${n}cpu.json"
  timeout 50 python3 -m bench.ring --quick --out "$out/ring-${n}cpu.json"
  timeout 40 python3 -m bench.latency --out "$out/latency-${n}cpu.json"
} 2>&1 | tee "$out/log"
