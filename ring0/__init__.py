"""Ring 0: worker processes that run streaming operators (see DESIGN.md §4)."""
