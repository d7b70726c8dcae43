"""ringstream: a streaming engine that uses every core of one machine."""

__version__ = "0.1.0"
