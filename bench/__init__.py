"""Benchmarks: each prints our figure and a baseline measured in the same run."""
