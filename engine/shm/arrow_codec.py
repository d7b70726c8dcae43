"""Arrow IPC straight into ring frames, and zero-copy back out.

Writing: one long-lived Arrow IPC *stream* writer per ring writes into a small
Python sink whose target is re-pointed at each claimed span before a batch is
written. Arrow hands body buffers to the sink as ``pa.Buffer`` objects (no
copy), so each column buffer is copied exactly once: into shared memory. The
stream writer emits the schema lazily before its first batch; the encoder
primes it with an empty batch into a discarding sink, so every later write is
exactly one record-batch message. The schema travels once, in a SCHEMA frame
(``schema.serialize()``).

Reading: ``pa.ipc.read_record_batch`` over a ``pa.py_buffer`` of the frame's
payload builds a RecordBatch whose buffers point into the segment (no copy,
~2 µs). The batch is valid until the reader releases its frame: after that the
producer may overwrite the bytes. ``copy_out(b, ...)`` copies batches into
memory of their own, to keep them longer. (``pa.concat_batches`` alone is not
enough: it copies only the 16-byte views of a ``string_view``/``binary_view``
column, whose characters stay in the frame; slices, ``select``, a string to
binary cast and ``Table.combine_chunks`` of one chunk copy nothing.)

Not supported: dictionary-encoded columns (a stream would interleave
dictionary messages with batches); a schema with one is refused.
"""

from __future__ import annotations

import pyarrow as pa

from engine.errors import SchemaMismatchError

# The IPC stream framing (continuation marker + length) is not part of
# get_record_batch_size(); claims add this much on top and commit what was written.
_FRAMING_SLACK = 64


class _Overflow(Exception):
    """The encoder wrote past its claimed span (never expected; handled by retrying)."""


class _SpanSink:
    """A write-only file whose writes land in ``target`` (or nowhere, if None)."""

    closed = False

    def __init__(self) -> None:
        self.target: memoryview | None = None
        self.pos = 0

    def write(self, data: object) -> int:
        if isinstance(data, pa.Buffer):
            n = data.size
            src: object = memoryview(data).cast("B")
        else:
            src = data
            n = len(data)  # type: ignore[arg-type]
        end = self.pos + n
        target = self.target
        if target is not None:
            if end > len(target):
                raise _Overflow(f"{end} > {len(target)}")
            target[self.pos : end] = src  # type: ignore[assignment]
        self.pos = end
        return n

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def check_schema(schema: pa.Schema) -> None:
    """Refuse schemas the ring cannot carry (dictionary-encoded columns)."""
    for field in schema:
        if _has_dictionary(field.type):
            raise SchemaMismatchError(
                f"column {field.name!r} has dictionary type {field.type}: dictionary-encoded "
                "columns cannot travel through a ring; decode them first "
                "(e.g. batch.column(i).dictionary_decode())"
            )


def _has_dictionary(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return True
    return any(_has_dictionary(t.field(i).type) for i in range(t.num_fields))


class BatchEncoder:
    """Serialises batches of one schema into caller-provided spans."""

    def __init__(self, schema: pa.Schema) -> None:
        check_schema(schema)
        self.schema = schema
        self.schema_message = schema.serialize()
        self._sink = _SpanSink()
        self._writer = pa.ipc.new_stream(self._sink, schema)
        empty = pa.record_batch([pa.array([], type=f.type) for f in schema], schema=schema)
        self._writer.write_batch(empty)  # emits the schema + an empty batch, discarded

    def check(self, batch: pa.RecordBatch) -> None:
        """Raise :class:`SchemaMismatchError` unless ``batch`` has this stream's schema."""
        if not batch.schema.equals(self.schema):
            raise SchemaMismatchError(
                f"batch schema does not match the stream's schema:\n"
                f"  stream: {self.schema.to_string(show_schema_metadata=False)}\n"
                f"  batch:  {batch.schema.to_string(show_schema_metadata=False)}"
            )

    @staticmethod
    def size_bound(batch: pa.RecordBatch) -> int:
        """An upper bound of the bytes :meth:`encode_into` writes for ``batch``."""
        return pa.ipc.get_record_batch_size(batch) + _FRAMING_SLACK

    def encode_into(self, batch: pa.RecordBatch, span: memoryview) -> int | None:
        """Write ``batch`` as one IPC message into ``span``; bytes written, or None if too small."""
        sink = self._sink
        sink.target = span
        sink.pos = 0
        try:
            self._writer.write_batch(batch)
        except (_Overflow, OSError, pa.ArrowException):
            # The stream writer is unusable after a failed write: start a new one.
            self.__init__(self.schema)  # type: ignore[misc]
            return None
        finally:
            sink.target = None
        return sink.pos

    def exact_size(self, batch: pa.RecordBatch) -> int:
        """The exact size of the message (slow path, used after a failed bound)."""
        self._sink.target = None
        self._sink.pos = 0
        self._writer.write_batch(batch)
        return self._sink.pos


def decode_schema(payload: memoryview) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(payload))


def decode_batch(payload: memoryview, schema: pa.Schema) -> pa.RecordBatch:
    """A RecordBatch whose buffers point into ``payload`` (no copy)."""
    return pa.ipc.read_record_batch(pa.py_buffer(payload), schema)


_VIEWS = (pa.string_view(), pa.binary_view())
_VIEW_IDS = frozenset(t.id for t in _VIEWS)


def copy_out(*batches: pa.RecordBatch) -> pa.RecordBatch:
    """``batches`` (one schema) as one batch sharing no buffer with them: what outlives
    the ring frames they are views of. A view column (string_view, binary_view, at any
    depth) is copied by value; every other column by ``pa.concat_batches``."""
    copied = pa.concat_batches(list(batches))
    if not any(_has_view(f.type) for f in copied.schema):
        return copied
    columns = [_own(c) if _has_view(c.type) else c for c in copied.columns]
    return pa.RecordBatch.from_arrays(columns, schema=copied.schema)


def _has_view(t: pa.DataType) -> bool:  # (type ids: a type's == costs a microsecond)
    n = t.num_fields
    return t.id in _VIEW_IDS or (n > 0 and any(_has_view(t.field(i).type) for i in range(n)))


def _own(column: pa.Array) -> pa.Array:
    if column.type in _VIEWS:  # through the plain type: new character data, new views
        plain = pa.string() if column.type == pa.string_view() else pa.binary()
        return column.cast(plain).cast(column.type)
    return pa.array(column.to_pylist(), column.type)  # nested: rare enough to go by value
