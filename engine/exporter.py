"""The Prometheus endpoint: ``GET /metrics`` on a loopback port, served by the coordinator.

``Exporter(telemetry, bind, port)`` registers a ``TelemetryCollector`` in a
registry of its own and serves it from a daemon thread (``http.server``; the
text is made by ``prometheus_client.generate_latest``). Only ``/metrics``
answers (any other path is 404, any method but GET/HEAD 405): the endpoint
exposes the metrics and nothing else. It binds ``127.0.0.1`` unless the
pipeline's ``[metrics] bind`` says otherwise; when the configured port is
taken (another pipeline on this machine), it takes a free one and says which —
``python -m engine status`` finds it in the run file either way.

Why ``prometheus-client``: it is the reference Python client; its text format,
escaping and histogram conventions are exactly what Prometheus and Grafana
read, and its parser lets the tests read what a scraper reads.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from engine.errors import ConfigError
from engine.telemetry import Telemetry, TelemetryCollector


class Exporter:
    def __init__(self, telemetry: Telemetry, bind: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(TelemetryCollector(telemetry))  # type: ignore[arg-type]
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET  # noqa: N815

            def do_POST(self) -> None:  # noqa: N802
                self.send_error(405, "the metrics endpoint is read-only")

            do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes are not log lines

        self.fallback = False
        try:
            try:
                self.server = ThreadingHTTPServer((bind, port), Handler)
            except OSError as exc:
                if port == 0 or exc.errno != errno.EADDRINUSE:
                    raise
                self.server = ThreadingHTTPServer((bind, 0), Handler)
                self.fallback = True
        except OSError as exc:  # an address this machine does not have, a privileged port
            raise ConfigError(
                f"metrics.bind = {bind!r}, metrics.port = {port}: cannot serve metrics there: "
                f"{exc.strerror or exc} (set [metrics] bind/port, or enabled = false)"
            ) from None
        self.server.daemon_threads = True
        self.bind, self.port = bind, int(self.server.server_address[1])
        self.url = f"http://{bind if ':' not in bind else f'[{bind}]'}:{self.port}/metrics"
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.02,), name="metrics endpoint", daemon=True
        )
        self._thread.start()

    def text(self) -> bytes:
        """The exposition text, as a scrape would get it (the final snapshot of a run)."""
        return generate_latest(self.registry)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown()
            self.server.server_close()
