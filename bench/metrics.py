"""What watching a run costs: the quickstart with metrics off, on, and on while scraped hard.

    python -m bench.metrics                 # a table
    python -m bench.metrics --json --out bench/results/metrics-2cpu.json

Three variants of ``examples/quickstart.toml`` with 1 worker, interleaved,
``--repeat`` rounds, median events/s as the engine reports them:

* ``off``: ``[metrics] enabled = false``;
* ``on``: the endpoint served, nobody scraping (the default);
* ``scraped``: a thread in this process scrapes ``/metrics`` every
  ``--scrape-every`` seconds (default 0.1 s: 150 times Prometheus' default
  rate) and counts the scrapes and their mean time.

The endpoint reads counters the processes keep anyway, so ``on`` and
``scraped`` should match ``off`` within the noise of the machine.
"""

from __future__ import annotations

import socket
import statistics
import sys
import threading
import time
import urllib.request

from bench import cli, engine_runs, machine
from bench.pipeline import QUICKSTART, topologies


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scraper(threading.Thread):
    def __init__(self, url: str, every_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.every_s = url, every_s
        self.stop = threading.Event()
        self.times: list[float] = []

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    r.read()
            except OSError:
                continue  # not up yet, or already gone
            self.times.append(time.perf_counter() - t0)


def run(variant: str, workers: list[int], events: int, every_s: float) -> dict[str, float]:
    env = {"RINGSTREAM_SOURCES__0__EVENTS": str(events)}
    if variant == "off":
        env["RINGSTREAM_METRICS__ENABLED"] = "false"
        return engine_runs.run_engine(QUICKSTART, workers, env)
    port = _free_port()
    env["RINGSTREAM_METRICS__PORT"] = str(port)
    if variant == "on":
        return engine_runs.run_engine(QUICKSTART, workers, env)
    scraper = Scraper(f"http://127.0.0.1:{port}/metrics", every_s)
    scraper.start()
    try:
        out = engine_runs.run_engine(QUICKSTART, workers, env)
    finally:
        scraper.stop.set()
        scraper.join()
    out["scrapes"] = len(scraper.times)
    out["scrape_ms"] = 1000 * statistics.mean(scraper.times) if scraper.times else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("bench.metrics", __doc__, events=40_000_000)
    ap.add_argument("--scrape-every", type=float, default=0.1)
    args = ap.parse_args(argv)
    workers = topologies()[1]
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": [], "scraped": []}
    for _ in range(args.repeat):  # interleaved: drift hits every variant alike
        for variant in runs:
            runs[variant].append(run(variant, workers, args.events, args.scrape_every))
        latest = {k: round(v[-1]["events_per_s"] / 1e6, 2) for k, v in runs.items()}
        print(f"round done (M events/s): {latest}", file=sys.stderr, flush=True)
    med = {k: statistics.median(r["events_per_s"] for r in v) for k, v in runs.items()}
    result = {
        "cpus": machine.describe({"worker": workers[0]}),
        "events": args.events,
        "events_per_s": {k: round(v) for k, v in med.items()},
        "runs_events_per_s": {k: [round(r["events_per_s"]) for r in v] for k, v in runs.items()},
        "scrapes_per_run": statistics.median(r["scrapes"] for r in runs["scraped"]),
        "scrape_ms_mean": round(statistics.mean(r["scrape_ms"] for r in runs["scraped"]), 2),
        "ratios": {"on_vs_off": round(med["on"] / med["off"], 3),
                   "scraped_vs_off": round(med["scraped"] / med["off"], 3)},  # fmt: skip
    }
    if not cli.emit(result, args):
        c = result["cpus"]
        print(f"machine: {c['count']} cpus ({c['model']}); pinning {c['pinning']}; "  # type: ignore[index]
              f"{args.events:,} events, 1 worker, median of {args.repeat}")  # fmt: skip
        for k, v in med.items():
            print(f"metrics {k:8}: {v / 1e6:6.2f} M events/s")
        print(f"scraped every {args.scrape_every} s: {result['scrapes_per_run']} scrapes per run, "
              f"{result['scrape_ms_mean']} ms each; ratios {result['ratios']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
