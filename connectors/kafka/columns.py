"""A list of Kafka messages as the Kafka source's own columns, no Python code run per message.

``MessageColumns(topics, key_format, headers)`` reads each field of a list of
confluent-kafka messages for the whole list at once (the message type's method
mapped over it) into ``Read``: the topics, partitions (int32) and offsets (int64)
as arrays, the values (for the decoder) and the metadata columns ``_topic``,
``_partition``, ``_offset``, ``_timestamp``, ``_key`` and (``headers``)
``_headers``, in that order (``connectors.kafka.source`` gives their types).
``topics``: the topics the source names; with one (and no pattern) every message is
of it, and its column is a slice of one array made once (``pa.repeat`` cost 11 ns a
record). ``Read.without(rows)`` drops rows from the metadata columns (the records the
decoder refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

HEADERS = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
STAMP = pa.timestamp("ms", "UTC")
_SECOND = itemgetter(1)  # of Message.timestamp(): (type, ms)


@dataclass
class Read:
    topics: list[str]
    one_topic: bool  # every message is of topics[0]
    parts: np.ndarray
    offsets: np.ndarray
    values: list[bytes | None]
    meta: list[pa.Array]

    def without(self, rows: list[int]) -> list[pa.Array]:
        keep = np.ones(len(self.parts), dtype=bool)
        keep[rows] = False
        mask = pa.array(keep)
        return [c.filter(mask) for c in self.meta]


class MessageColumns:
    """See the module docstring."""

    def __init__(self, topics: list[str] | None, key_format: str, headers: bool) -> None:
        self.topic = topics[0] if topics is not None and len(topics) == 1 else None
        self.text_keys = key_format == "text"
        self.headers = headers
        self.repeated: dict[str, pa.Array] = {}

    def read(self, good: list[Any]) -> Read:
        from confluent_kafka import Message

        n = len(good)
        topics = [self.topic] * n if self.topic is not None else list(map(Message.topic, good))
        one_topic = self.topic is not None or topics.count(topics[0]) == n
        parts = np.fromiter(map(Message.partition, good), np.int32, count=n)
        offsets = np.fromiter(map(Message.offset, good), np.int64, count=n)
        stamps = np.fromiter(map(_SECOND, map(Message.timestamp, good)), np.int64, count=n)
        keys = list(map(Message.key, good))
        meta = [
            self._repeat(topics[0], n) if one_topic else pa.array(topics, pa.string()),
            pa.array(parts),
            pa.array(offsets),
            pa.array(stamps, STAMP),
            pa.nulls(n, pa.binary()) if keys.count(None) == n else pa.array(keys, pa.binary()),
        ]
        if self.text_keys:
            meta[4] = meta[4].cast(pa.string())
        if self.headers:
            meta.append(pa.array([[{"key": k, "value": v} for k, v in (m.headers() or [])]
                                  for m in good], HEADERS))  # fmt: skip
        return Read(topics, one_topic, parts, offsets, list(map(Message.value, good)), meta)

    def _repeat(self, topic: str, n: int) -> pa.Array:
        made = self.repeated.get(topic)
        if made is None or len(made) < n:
            made = self.repeated[topic] = pa.repeat(topic, max(n, 65_536))
        return made.slice(0, n)
