"""Ring 1: the connector runtime around sources and sinks (see DESIGN.md §6)."""
