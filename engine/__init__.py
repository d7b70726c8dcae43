"""ringstream: a streaming engine that uses every core of one machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.attach.client import connect

__version__ = "0.1.0"
__all__ = ["__version__", "connect"]


def __getattr__(name: str) -> Any:
    """``from engine import connect``, imported on first use (keeps ``import engine`` light)."""
    if name == "connect":
        from engine.attach.client import connect

        return connect
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
