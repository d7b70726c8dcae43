"""Attach your own process to a running engine (a thin facade over ``engine.attach``).

::

    from engine import connect

    with connect(".ringstream/run").source("trades") as src:   # a [[sources]] type "push"
        src.push_arrow(batch)                                    # or push_pylist(rows)

    for batch in connect(".ringstream/run").subscribe("alerts"):  # a [[sinks]] type "subscribe"
        ...

The client is ``engine.attach.client``; the wire protocol ``engine.attach.protocol``.
"""

from __future__ import annotations

from engine.attach.client import Engine, connect
from engine.attach.protocol import (
    DEFAULT_DIR,
    LineBuffer,
    encode,
    read_line,
    schema_from_text,
    schema_to_text,
    socket_path,
)
from engine.attach.push_client import PushClient
from engine.attach.subscription import Subscription
from engine.shm.writer import split_to_fit

__all__ = [
    "DEFAULT_DIR",
    "Engine",
    "LineBuffer",
    "PushClient",
    "Subscription",
    "connect",
    "encode",
    "read_line",
    "schema_from_text",
    "schema_to_text",
    "socket_path",
    "split_to_fit",
]
