"""``copy_out``: batches read from a ring, copied into memory of their own, so that they
stay right after the frame is released and written over — string_view and binary_view
columns included, whose characters ``pa.concat_batches`` leaves where they were."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.shm.arrow_codec import copy_out

TEXT = ["a string longer than twelve bytes", "short", None, "another long string here"]


def in_frame(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray]:
    """``batch`` as the ring's reader sees it: IPC read back from a frame's bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    frame = np.frombuffer(bytearray(sink.getvalue().to_pybytes()), np.uint8)
    (view,) = pa.ipc.open_stream(pa.py_buffer(frame)).read_all().to_batches()
    return view, frame


def test_every_column_outlives_its_frame() -> None:
    batch = pa.record_batch({
        "n": pa.array([1, 2, None, 4]),
        "s": pa.array(TEXT),
        "sv": pa.array(TEXT, pa.string_view()),
        "bv": pa.array([t.encode() if t else None for t in TEXT], pa.binary_view()),
        "lv": pa.array([[t] if t else None for t in TEXT], pa.list_(pa.string_view())),
    })  # fmt: skip
    want = batch.to_pylist()
    view, frame = in_frame(batch)
    plain = pa.concat_batches([view])
    got = copy_out(view)
    frame[:] = ord("Z")  # the frame is released and written over
    assert got.to_pylist() == want and got.schema == batch.schema
    assert plain.column("sv").to_pylist() != want_column(want, "sv")  # why copy_out exists


def want_column(rows: list[dict], name: str) -> list:  # type: ignore[type-arg]
    return [r[name] for r in rows]


def test_several_batches_become_one() -> None:
    a, fa = in_frame(pa.record_batch({"x": pa.array([1, 2]), "s": pa.array(["p", "q"])}))
    b, fb = in_frame(pa.record_batch({"x": pa.array([3]), "s": pa.array(["r"])}))
    got = copy_out(a, b)
    fa[:] = 0
    fb[:] = 0
    assert got.to_pydict() == {"x": [1, 2, 3], "s": ["p", "q", "r"]}
