"""Connector contracts and one package per external system (see DESIGN.md §6)."""
