"""Connectors: the contract (``base``), the kit (``options``, ``registry``), and the built-ins.

Sources: ``generator``, ``nexmark/``, ``files/`` (CSV, JSON lines, Parquet), ``push``.
Sinks: ``files/`` (exactly-once), ``console``, ``subscribe``. Testing helpers and the
conformance checks every connector passes: ``testing/``. The contract and the
runtime around it are described in docs/architecture.md §5.
"""
