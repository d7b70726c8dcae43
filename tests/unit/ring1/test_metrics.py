"""Connector metrics: counters, and poll latency quantiles from power-of-two buckets."""

from __future__ import annotations

from ring1.metrics import BUCKETS, ConnectorMetrics, bucket


def test_metrics_polls_count_records_bytes_and_empty_polls() -> None:
    m = ConnectorMetrics()
    m.record_poll(0.001, rows=10, nbytes=80, offset=7)
    m.record_poll(0.001)
    m.record_error()
    m.record_retry()
    d = m.as_dict()
    assert (d["records"], d["bytes"], d["polls"], d["empty_polls"]) == (10, 80, 2, 1)
    assert (d["errors"], d["retries"], d["last_offset"]) == (1, 1, 7)


def test_metrics_without_offset_leave_it_out() -> None:
    assert "last_offset" not in ConnectorMetrics().as_dict()


def test_metrics_latency_quantiles_are_bucket_upper_bounds() -> None:
    m = ConnectorMetrics()
    for _ in range(98):
        m.record_poll(0.000_100)  # 100 µs → bucket (64, 128] µs
    m.record_poll(0.5)
    m.record_poll(0.5)  # 500 ms → bucket (262144, 524288] µs
    assert m.latency_quantile(0.5) == 128e-6
    assert m.latency_quantile(0.99) == 524_288e-6
    assert m.as_dict()["poll_latency_p50_s"] == 128e-6


def test_metrics_no_polls_gives_zero_latency() -> None:
    assert ConnectorMetrics().latency_quantile(0.99) == 0.0


def test_metrics_bucket_edges_and_clipping() -> None:
    assert bucket(0.0) == 0 and bucket(1e-6) == 0
    assert bucket(2e-6) == 1 and bucket(3e-6) == 2
    assert bucket(1e6) == BUCKETS - 1
