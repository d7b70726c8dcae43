"""Ring 0 operators: vectorised over Arrow batches, never a Python loop per row."""
